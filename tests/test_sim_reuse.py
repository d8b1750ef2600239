"""Window reuse (steady state) is exact: every reused run equals the fully simulated one."""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st
from sim_equal import assert_reuse_skips_work, assert_same_run, h100_profile, reuse_pair

from dicesim.plan import PlanRefused
from dicesim.sim.api import prepare, simulate
from dicesim.sim.engine.engine import run_engine
from dicesim.sim.engine.reuse import find_windows
from dicesim.strategy import make_strategy
from dicesim.topology import add_gpu, add_link, fully_connected, new_topology
from dicesim.topology.graph import LinkSpec

TINY = dict(model="tiny", world_size=4, batch=1, image_size=64)


_profile, _pair = h100_profile, reuse_pair


@pytest.mark.parametrize("strategy", ["sync", "displaced", "interweaved", "interweaved-deep", "dice"])
@pytest.mark.parametrize("topology", ["tiny-ring4", "8x-rtx4090-pcie"])
def test_reuse_equals_full_run(strategy, topology):
    assert_reuse_skips_work(dict(TINY, world_size=4, topology=topology, strategy=strategy, steps=8))


STRATEGIES = st.fixed_dictionaries({
    "name": st.sampled_from(["sync", "displaced", "interweaved", "dice"]),
    "sync_layers": st.sampled_from(["none", "deep", "shallow", "alternate", (0, 3)]),
    "cond_interval": st.integers(1, 3),
    "cond_policy": st.sampled_from(["low", "high", "random"]),
    "warmup_steps": st.integers(0, 2),
    "cooldown_steps": st.integers(0, 2),
    "sync_every": st.sampled_from([0, 3]),
    "async_work": st.sampled_from(["consumed_only", "every_step"]),  # every_step: discard, kept rows, drain
    "cond_scope": st.sampled_from(["async", "all"]),
})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STRATEGIES, st.integers(2, 9), st.sampled_from([0.0, 0.3]), st.sampled_from([0.0, 5e-6, 5e-5]),
       st.sampled_from([0.0, 0.4]), st.sampled_from([1e7, 1e9]), st.sampled_from(["uniform", "zipf"]))
@example({"name": "dice", "sync_layers": "deep", "cond_interval": 2, "cond_policy": "low", "warmup_steps": 1,
          "cooldown_steps": 1, "sync_every": 3, "async_work": "every_step", "cond_scope": "all"}, 9, 0.3, 5e-6, 0.4,
         1e7, "zipf")
def test_reuse_is_exact_for_any_strategy_and_profile(strat, steps, interference, host_op_s, comm_interf, bw, load):
    from dicesim.scenario import RoutingConfig

    name = strat.pop("name")
    strategy = make_strategy(name, **strat)
    prof = _profile(interference=interference, host_op_s=host_op_s, host_collective_s=2 * host_op_s,
                    comm_interference=comm_interf)
    kw = dict(TINY, strategy=strategy, steps=steps, profile=prof, graph=fully_connected(4, bw, 1e-6),
              routing=RoutingConfig(kind=load, alpha=1.2))
    try:
        full, fast = _pair(kw)
    except PlanRefused:  # the reference's skip-cache gate fails for this interval (the plan says so)
        reject()
    assert_same_run(full, fast)


@pytest.mark.parametrize("scheme", ["displaced", "interweaved"])
def test_reference_ops_are_keyed_and_reused_exactly(scheme):
    """The reference semantics add discard (a sync step drops what is in flight), kept rows (a sync
    step's dispatch re-run at the next step) and a final drain: every one of them has a window key,
    windows around them repeat, and the reused run is the full one."""
    strategy = make_strategy(scheme, sync_layers="deep", cond_interval=2, sync_every=3, async_work="every_step")
    kw = dict(TINY, topology="tiny-ring4", strategy=strategy, steps=11,
              profile=_profile(interference=0.2, host_op_s=3e-6))
    prep = prepare(**kw)
    from dicesim.sim.engine.engine import Engine
    from dicesim.sim.engine.program import FORGET, ISSUE, WAIT_ALL, WAIT_KEEP

    eng = Engine(dataclasses.replace(prep.spec, reuse=True))
    ops = {ins[0] for ins in eng.flat}
    assert {FORGET, WAIT_ALL} <= ops and any(ins[0] == ISSUE and ins[4] == WAIT_KEEP for ins in eng.flat)  # kept rows
    win = find_windows(eng.flat, eng.gc[0].matrix_id)
    assert win.src[-1] == -1  # the window with the drain is the run's own
    full, fast = _pair(kw)
    assert_same_run(full, fast)
    assert fast.meta["reuse"]["reused_windows"] > 0


def test_reuse_reports_why_it_does_not_apply():
    kw = dict(TINY, topology="tiny-ring4", steps=4, profile="h100-sxm")
    sep = simulate(**kw, strategy=make_strategy("dice", count_comm="separate"))
    assert not sep.meta["reuse"]["applied"] and "separate communicator" in sep.meta["reuse"]["reason"]
    rec = simulate(**kw, strategy="dice", record=True)
    assert not rec.meta["reuse"]["applied"] and "recorded" in rec.meta["reuse"]["reason"]
    off = simulate(**kw, strategy="dice", reuse=False)
    assert off.meta["reuse"] == {"applied": False, "windows": 0, "reused_windows": 0, "reason": "turned off"}
    dp = simulate(**kw, strategy="data_parallel")
    assert not dp.meta["reuse"]["applied"] and dp.meta["reuse"]["reason"] == "no count exchange to cut at"
    assert_same_run(simulate(**kw, strategy="dice"), rec)


def test_multinomial_routing_has_no_repeats_and_stays_exact():
    kw = dict(TINY, topology="tiny-ring4", strategy="dice", steps=5, profile="h100-sxm", sampling="multinomial")
    full, fast = _pair(kw)
    assert_same_run(full, fast)
    assert fast.meta["reuse"]["reused_windows"] <= 1  # every all-to-all carries its own sampled rows


def test_window_keys_follow_the_plan():
    """Sync, 3 steps, 4 layers: 12 cuts. Inside a step the three layer-to-layer windows are equal;
    the windows across a step boundary are equal to each other; the last one (to the end) is unique."""
    prep = prepare(**TINY, topology="tiny-ring4", strategy="sync", steps=3, profile="h100-sxm")
    from dicesim.sim.engine.engine import Engine

    eng = Engine(dataclasses.replace(prep.spec, reuse=True))
    win = find_windows(eng.flat, eng.gc[0].matrix_id)
    assert win.n_windows == 12
    src = win.src.tolist()
    assert src == [-1, 0, 0, -1, 0, 0, 0, 3, 0, 0, 0, -1]
    assert [s.tolist() for s in win.steps] == [[], [], [], [0], [], [], [], [1], [], [], [], [2]]
    assert win.run_end.tolist()[:3] == [-1, 2, -1] and win.run_end[4] == 10


def test_a_different_matrix_breaks_the_repeat():
    prep = prepare(**TINY, topology="tiny-ring4", strategy="sync", steps=3, profile="h100-sxm")
    from dicesim.sim.engine.engine import Engine

    eng = Engine(dataclasses.replace(prep.spec, reuse=True))
    mid = [m.copy() for m in eng.gc[0].matrix_id]
    mid[False][2, 1] = 99  # layer 2 of step 1 carries another matrix
    win = find_windows(eng.flat, mid)
    assert win.src[6] == -1 and win.src[2] == 0  # its window (cut of layer 2, step 1) is simulated


def _port_coupled_graph():
    """Group A = ranks 0, 2 whose route crosses GPU 1; group B = ranks 1, 3 on a link of their own.
    No link is used by both groups' flows, but rank 1's compute slows A's links (its endpoint)."""
    G = new_topology(name="port-coupled", p2p=True, gpu="h100-sxm", gpus_per_node=4,
                     sources={"generic": "test graph"})
    g = [add_gpu(G, f"n0.gpu{i}", rank=i, server=0) for i in range(4)]
    spec = LinkSpec(bw_Bps=1e8, latency_s=1e-6, link="generic", source="generic")
    add_link(G, g[0], g[1], spec)
    add_link(G, g[1], g[2], spec)
    add_link(G, g[1], g[3], spec)
    return G


def test_endpoint_slowdown_couples_groups_so_reuse_stays_off():
    kw = dict(model="tiny", num_experts=2, world_size=4, batch=1, image_size=64, placement="strided",
              strategy="dice", steps=6, graph=_port_coupled_graph(),
              profile=_profile(comm_interference=0.5, interference=0.0))
    assert nx.has_path(kw["graph"], "n0.gpu0", "n0.gpu2")
    full, fast = _pair(kw)
    assert_same_run(full, fast)
    assert fast.meta["reuse"]["reason"] == "its links are shared with another group"
    # without the endpoint slow-down the groups are independent and reuse applies
    quiet = simulate(**{**kw, "profile": _profile(comm_interference=0.0)})
    assert quiet.meta["reuse"]["applied"]


def test_engine_reuse_flag_alone_matches_run_engine():
    prep = prepare(**TINY, topology="tiny-ring4", strategy="dice", steps=6, profile="h100-sxm")
    a = run_engine(prep.spec)
    b = run_engine(dataclasses.replace(prep.spec, reuse=True))
    assert b.windows_reused > 0 and a.windows_reused == 0
    assert np.allclose(a.step_end_WT, b.step_end_WT, rtol=1e-12)
    assert np.allclose(a.counters_WTK, b.counters_WTK, rtol=1e-12, atol=1e-18)
    assert a.collectives == b.collectives
