"""What an owner's PlanCache keeps for the engine (compiled skeletons, window searches) changes no
result: runs that share a cache equal runs without one, number for number."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicesim.plan import PlanCache
from dicesim.plan.expert import buffers
from dicesim.sim.api import prepare, simulate
from dicesim.sim.costs.profile import get_profile
from dicesim.sim.engine.program import HostTable, _Blocks, compile_program
from dicesim.sim.engine.reuse import find_windows
from dicesim.sim.engine.skeleton import Skeleton, windows_of

TABLES = ("per_step", "per_rank", "lags", "token_lags", "buffers", "links")
#: configurations that share plans but not costs (another model, GPU, batch): the cache must not mix them up
RUNS = [dict(model=m, topology=t, batch=b, strategy=s, steps=12)
        for m, t in (("XL/2", "dgx-h100"), ("G/2", "8x-rtx4090-pcie"), ("XL/2", "2x-dgx-h100-ib"))
        for b in (8, 32) for s in ("sync", "dice", "displaced", "interweaved-deep", "sp", "distrifusion", "ulysses",
                                        "ring")]


def _exact(a, b) -> None:
    assert a.totals.keys() == b.totals.keys()
    for k, v in a.totals.items():
        w = b.totals[k]
        if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool):
            assert np.array_equal(np.asarray(v), np.asarray(w), equal_nan=True), (k, v, w)
        else:
            assert v == w, k
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True, obj=name)


def test_shared_cache_runs_equal_uncached_runs():
    plans = PlanCache()
    for kw in RUNS + RUNS[::-1]:  # the second pass reads everything from the cache
        _exact(simulate(**kw, plans=plans), simulate(**kw))
    assert plans.hits > 0 and len(plans._derived) > 0


def test_sampled_routing_and_strided_placement_equal_uncached():
    plans = PlanCache()
    for kw in (dict(model="G/2", topology="dgx-h100", strategy="dice", steps=6, sampling="multinomial"),
               dict(model="XL/2", topology="2x-dgx-h100-ib", world_size=16, strategy="displaced", steps=6,
                    placement="strided")):
        for _ in range(2):
            _exact(simulate(**kw, plans=plans), simulate(**kw))


@pytest.mark.parametrize("strategy", ["sync", "dice", "interweaved", "sp", "distrifusion", "ulysses", "ring"])
@pytest.mark.parametrize("host_op_s", [None, 2e-4])
def test_priced_skeleton_is_the_compiled_program(strategy, host_op_s):
    kw = {} if host_op_s is None else dict(profile=get_profile("h100-sxm").with_updates(host_op_s=host_op_s))
    spec = prepare(model="XL/2", topology="dgx-h100", strategy=strategy, steps=8, **kw).spec
    skel = Skeleton(spec.plan, spec.layout)
    host = HostTable(spec.cost)
    priced = skel.price(spec.cost, host)
    full = compile_program(spec.plan, spec.cost, spec.layout, host=host)
    if host_op_s is None:
        assert priced is not None
    if priced is not None:  # a slow host splits runs into blocks: the skeleton declines, the engine compiles
        assert priced.program == full
    else:
        assert sum(len(s) for s in full) > sum(len(s) for s in skel.steps)


def test_cached_window_search_equals_the_search():
    plans = PlanCache()
    for batch in (8, 16, 32):  # other costs, one plan: the second and third searches are hits
        spec = prepare(model="XL/2", topology="dgx-h100", strategy="dice", steps=8, batch=batch,
                       plans=plans).spec
        skel = Skeleton(spec.plan, spec.layout)
        priced = skel.price(spec.cost, HostTable(spec.cost))
        flat = [ins for step in priced.program for ins in step]
        mid = tuple(np.zeros((spec.plan.num_layers, spec.plan.num_steps), dtype=np.int64) + i for i in range(2))
        got, want = windows_of(plans, spec.plan, spec.layout, priced.pattern, flat, mid), find_windows(flat, mid)
        for field in ("cut_pc", "cut_step", "src", "run_end"):
            assert np.array_equal(getattr(got, field), getattr(want, field)), field
        assert got.cut_pending == want.cut_pending
        assert all(np.array_equal(x, y) for x, y in zip(got.steps, want.steps))
    assert len(plans._derived) == 1


def test_block_pattern_names_equal_blocks():
    spec = prepare(model="G/2", topology="dgx-h100", strategy="interweaved", steps=4).spec
    skel = Skeleton(spec.plan, spec.layout)
    priced = skel.price(spec.cost, HostTable(spec.cost))
    runs = _Blocks(spec.cost, host=HostTable(spec.cost), merge=True)
    figures = [runs._split(kinds)[0][2].key for kinds in skel.kinds]
    for i, j in enumerate(priced.pattern):
        assert j <= i and figures[j] == figures[i]
        assert all(figures[k] != figures[i] for k in range(j))


@pytest.mark.parametrize("sampling", ["expected", "multinomial"])
def test_buffer_bytes_summed_at_once_equal_one_buffer_at_a_time(sampling):
    for strategy in ("displaced", "dice", "interweaved-deep"):
        spec = prepare(model="G/2", topology="dgx-h100", strategy=strategy, steps=10, sampling=sampling).spec
        recv = [spec.routing.recv_rows_LTW(False), spec.routing.recv_rows_LTW(True)]
        fast = buffers.buffer_nbytes_TW(spec.plan, spec.routing, spec.row_nbytes)
        each = buffers._buffer_nbytes_each(spec.plan, spec.routing, spec.row_nbytes, recv)
        assert fast.dtype == each.dtype and np.array_equal(fast, each)
        assert fast.any()  # the strategy holds buffers: the comparison means something


def test_one_skeleton_priced_for_other_costs_is_their_compiled_program():
    plans = PlanCache()
    specs = [prepare(model="XL/2", topology=t, strategy="dice", steps=4, batch=b, plans=plans).spec
             for t, b in (("dgx-h100", 8), ("dgx-h100", 32), ("8x-rtx4090-pcie", 16))]
    assert specs[0].plan is specs[1].plan is specs[2].plan  # one plan, three cost models
    skel = Skeleton(specs[0].plan, specs[0].layout)
    for spec in specs:
        priced = skel.price(spec.cost, HostTable(spec.cost))
        assert priced.program == compile_program(spec.plan, spec.cost, spec.layout, host=HostTable(spec.cost))
