"""content_ids numbers equal rows alike, in the order np.unique over the rows as void scalars gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dicesim.sim.engine.groupcomm import content_ids


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
