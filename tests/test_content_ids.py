"""content_ids numbers equal rows alike, in the order np.unique over the rows as void scalars gives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dicesim.placement import make_placement
from dicesim.scenario import RoutingConfig
from dicesim.sim.costs.routing import build_routing
from dicesim.sim.engine.groupcomm import content_ids, matrix_ids


def _unique_ids(rows: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(rows)
    void = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
    return np.unique(void, return_inverse=True)[1].ravel()


@settings(max_examples=200, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 40), st.integers(1, 6)),
              elements=st.sampled_from([0, 1, 2, 255, 256, -1, 2**40, -(2**40)])))
def test_content_ids_match_numpy_unique(rows):
    ids = content_ids(np.ascontiguousarray(rows))
    assert ids.dtype == np.intp
    assert np.array_equal(ids, _unique_ids(rows))


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 5)),
              elements=st.sampled_from([0.0, -0.0, 0.5, 1.0, 3.25, 1e-300, 7e10])))
def test_content_ids_of_floats_match_numpy_unique(rows):
    assert np.array_equal(content_ids(np.ascontiguousarray(rows)), _unique_ids(rows))


@pytest.mark.parametrize("kind,layout", [("zipf", "contiguous"), ("uniform", "strided"), ("zipf", "strided")])
def test_matrix_ids_of_expected_routing_equal_the_full_search(kind, layout):
    """Expected counts repeat one table over steps: matrix_ids ranks step 0's rows only, and must give
    the ids the search over every (layer, step) row gives."""
    placement = make_placement(16, 8, group_layout=layout)
    routing = build_routing(RoutingConfig(kind=kind), placement, num_layers=6, num_steps=7, tokens_per_rank=37,
                            top_k=2, seed=3)
    for skip in (False, True):
        send = routing.send_rows_LTWS(skip)
        assert send.strides[1] == 0  # the shortcut's case
        for members in placement.groups():
            full = np.ascontiguousarray(send[:, :, list(members), :])
            want = content_ids(full.reshape(6 * 7, -1)).reshape(6, 7)
            got = matrix_ids(routing, members, skip)
            assert got.dtype == want.dtype and np.array_equal(got, want)
