"""busy_union_us against a brute-force grid, per_step_table golden values, align_clocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicesim.trace import align_clocks, busy_union_us, per_step_table, validate_events
from trace_cases import golden

_intervals = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20)).map(lambda t: (t[0], t[0] + t[1])),
                      max_size=30)


@settings(max_examples=200, deadline=None)
@given(_intervals)
def test_busy_union_matches_unit_grid(ivs):
    grid = np.zeros(100, dtype=bool)
    for s, e in ivs:
        grid[s:e] = True
    assert busy_union_us(ivs) == grid.sum()
    if ivs:
        starts, ends = zip(*ivs)
        assert busy_union_us(np.array(starts), np.array(ends)) == grid.sum()


def test_busy_union_edge_cases():
    assert busy_union_us([]) == 0.0
    assert busy_union_us([[0.0, 5.0], [1.0, 2.0], [5.0, 7.5]]) == 7.5  # nested + touching
    with pytest.raises(ValueError, match="ends before it starts"):
        busy_union_us([[2.0, 1.0]])


def test_per_step_table_golden():
    t = per_step_table(golden())
    assert t[["rank", "step"]].values.tolist() == [[0, 0], [1, 0]]  # link row (rank -1) ignored
    r0, r1 = t.iloc[0], t.iloc[1]
    # rank 0: compute [0,12] u [20,25] = 17; comm [12,30] = 18; union 30 -> 13 exposed
    assert (r0.start_us, r0.end_us, r0.duration_us) == (0.0, 30.0, 30.0)
    assert (r0.compute_busy_us, r0.comm_busy_us, r0.comm_exposed_us, r0.n_events) == (17.0, 18.0, 13.0, 5)
    assert (r1.duration_us, r1.compute_busy_us, r1.comm_busy_us, r1.n_events) == (10.0, 10.0, 0.0, 2)
    assert str(t["rank"].dtype) == "int32"
    assert len(per_step_table(golden().assign(step=-1))) == 0


def test_per_step_table_separates_steps_and_ranks():
    df = golden()
    df.loc[df.index[:2], "step"] = 1  # attention + gate of rank 0 now belong to step 1
    t = per_step_table(df).set_index(["rank", "step"])
    assert t.loc[(0, 1), "compute_busy_us"] == 12.0
    assert t.loc[(0, 0), "compute_busy_us"] == 5.0
    assert t.loc[(0, 0), "comm_exposed_us"] == 13.0  # [12,20] and [25,30] are not covered by experts


def test_align_clocks_shifts_per_rank_and_rezeroes():
    df = golden()
    out = align_clocks(df, {0: 100.0, 1: 50.0}, rezero=False)
    assert out.loc[0, "start_us"] == 100.0 and out.loc[5, "start_us"] == 51.0
    assert out.loc[7, "start_us"] == 12.5  # link rows (rank -1) default to offset 0
    z = align_clocks(df, {0: 0.0, 1: -1.0})
    assert z["start_us"].min() == 0.0 and z.loc[0, "start_us"] == 0.0 and z.loc[5, "start_us"] == 0.0
    validate_events(z)
    assert df.loc[0, "start_us"] == 0.0  # input untouched
    with pytest.raises(ValueError, match=r"no clock offset for rank\(s\) \[1\]"):
        align_clocks(df, {0: 0.0})
