"""Window reuse at stream cuts (sequence parallelism) is exact: every reused run equals the full one,
including where the host holds the streams back (then only windows the hosts allow are reused)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_equal import assert_reuse_skips_work, assert_same_run, h100_profile, reuse_pair

from dicesim.plan import CollectiveKind
from dicesim.sim.api import prepare, simulate
from dicesim.sim.engine.engine import Engine
from dicesim.sim.engine.program import ISSUE, WAIT_CUT
from dicesim.strategy import SequenceParallelStrategy

SEQ = dict(model="tiny", batch=1, image_size=64)


_profile, _pair = h100_profile, reuse_pair


@pytest.mark.parametrize("strategy", ["sp", "distrifusion",
                                      SequenceParallelStrategy(name="df-warm", kv_async=True, warmup_steps=2)])
@pytest.mark.parametrize("topology", ["tiny-ring4", "8x-rtx4090-pcie"])
def test_stream_cut_reuse_equals_full_run(strategy, topology):
    assert_reuse_skips_work(dict(SEQ, world_size=4, topology=topology, strategy=strategy, steps=10))


@pytest.mark.parametrize("model, world_size", [("tiny", 2), ("small", 4)])  # Ulysses: heads split over the GPUs
def test_stream_cut_reuse_equals_full_run_under_ulysses(model, world_size):
    assert_reuse_skips_work(dict(SEQ, model=model, world_size=world_size, topology="tiny-ring4", strategy="ulysses",
                                 steps=10))


@pytest.mark.parametrize("world_size", [2, 4])  # ring attention: one kv_ring of W-1 passes per layer
def test_stream_cut_reuse_equals_full_run_under_ring(world_size):
    assert_reuse_skips_work(dict(SEQ, model="small", world_size=world_size, topology="tiny-ring4", strategy="ring",
                                 steps=10))


def test_host_bound_windows_are_simulated():
    """A host far slower than the GPU holds every stream back: no window has a source the hosts
    allow, so nothing is reused, and the result is the full run's."""
    kw = dict(SEQ, world_size=4, topology="tiny-ring4", strategy="sp", steps=6,
              profile=_profile(host_op_s=5e-2, host_collective_s=5e-2))
    full, fast = _pair(kw)
    assert_same_run(full, fast)
    assert fast.meta["reuse"]["reused_windows"] == 0
    assert full.totals["step_latency_s"] > 0.1  # host-bound indeed: tens of launches at 50 ms


def test_scatter_is_the_stream_cut():
    """The compiled sequence program marks each step's scatter (and nothing else) as a stream cut."""
    prep = prepare(**SEQ, world_size=4, topology="tiny-ring4", strategy="distrifusion", steps=5, profile=_profile())
    flat = [ins for step in Engine(prep.spec).program for ins in step]
    cuts = [ins for ins in flat if ins[0] == ISSUE and ins[4] == WAIT_CUT]
    assert len(cuts) == 5 and {ins[2].kind for ins in cuts} == {int(CollectiveKind.SCATTER)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kv_async=st.booleans(), warmup=st.integers(0, 3), steps=st.integers(1, 9),
       host_op_s=st.sampled_from([0.0, 3e-6, 2e-4, 2e-3]), host_coll_s=st.sampled_from([0.0, 1e-5, 1e-3]),
       interference=st.sampled_from([0.0, 0.3]), comm_interference=st.sampled_from([0.0, 0.5]),
       world=st.sampled_from([2, 4]), topology=st.sampled_from(["tiny-ring4", "8x-rtx4090-pcie"]))
def test_stream_cut_reuse_is_exact(kv_async, warmup, steps, host_op_s, host_coll_s, interference,
                                   comm_interference, world, topology):
    strategy = SequenceParallelStrategy(name="seq", kv_async=kv_async, warmup_steps=warmup if kv_async else 0)
    kw = dict(SEQ, world_size=world, topology=topology, strategy=strategy, steps=steps,
              profile=_profile(host_op_s=host_op_s, host_collective_s=host_coll_s, interference=interference,
                               comm_interference=comm_interference))
    full, fast = _pair(kw)
    assert_same_run(full, fast)


@pytest.mark.parametrize("topology, warmup, host_op_s, host_coll_s", [
    ("8x-rtx4090-pcie", 6, 4.38e-4, 1.69e-5), ("tiny-ring4", 1, 3.76e-5, 4.85e-6)])
def test_host_lead_that_shrinks_stops_the_run(topology, warmup, host_op_s, host_coll_s):
    """Warm-up steps (blocking gathers) let the hosts run far ahead; later steps launch more than
    the streams run, so the lead shrinks until the hosts hold the streams: a window whose lead is
    shorter than its source's must be simulated (a reuse that ignored the lead gets these wrong)."""
    kw = dict(model="XL/2", batch=1, image_size=256, world_size=4, topology=topology, steps=14,
              strategy=SequenceParallelStrategy(name="df", kv_async=True, warmup_steps=warmup),
              profile=_profile(host_op_s=host_op_s, host_collective_s=host_coll_s))
    full, fast = _pair(kw)
    assert_same_run(full, fast)
