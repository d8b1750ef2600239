"""Engine closed forms: a sync step is the sum of its parts; accounting identities; determinism."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dicesim.errors import ConfigError
from dicesim.plan import lag_table
from dicesim.sim.api import prepare, simulate
from dicesim.sim.engine.engine import run_engine
from dicesim.sim.engine.runspec import COUNTERS
from dicesim.sim.costs.profile import get_profile
from dicesim.topology import fully_connected, get_topology

REL = 1e-9
BW = 1e8  # slow links so communication matters
LAT = 1e-6
TINY = dict(model="tiny", world_size=4, batch=1, image_size=64, topology="tiny-ring4")


def quiet_profile(**kw):
    """The H100 profile without host overhead or interference (closed forms stay simple)."""
    return get_profile("h100-sxm").with_updates(**{"host_op_s": 0.0, "host_collective_s": 0.0,
                                                   "interference": 0.0, **kw})


def fc_graph(n=4, bw=BW):
    return fully_connected(n, bw, LAT)


def test_sync_step_is_sum_of_parts():
    prof = quiet_profile()
    prep = prepare(**TINY, strategy="sync", steps=3, profile=prof, graph=fc_graph())
    res = simulate(**TINY, strategy="sync", steps=3, profile=prof, graph=fc_graph())
    cm, L = prep.spec.cost, prep.plan.num_layers
    N, k, E = 32, 2, 4  # 16 tokens/image x 2 (CFG); top-2; 4 experts on 4 ranks
    assert cm.workload.tokens == N
    pair_nbytes = (N * k // E) * cm.workload.row_nbytes()  # uniform: every pair carries copies/E rows
    a2a = LAT + prof.collective_base_s["all_to_all"] + pair_nbytes / BW  # one direct link per pair
    counts = prof.collective_base_s["count_exchange"] + LAT
    per_layer = (sum(cm.action_time_s(a) for a in ("attention", "gate", "shared_expert", "local_combine"))
                 + counts + 2 * a2a + cm.expert_time_s(N * k))
    step = cm.action_time_s("embed") + cm.action_time_s("final") + L * per_layer
    assert math.isclose(res.summary()["step_latency_s"], step, rel_tol=REL)
    assert np.allclose(res.per_step["latency_s"], step, rtol=REL)
    assert math.isclose(res.summary()["total_latency_s"], 3 * step, rel_tol=REL)
    # nothing overlaps in sync: all communication is exposed
    s = res.summary()
    assert s["overlap_frac"] == 0.0
    assert math.isclose(s["exposed_comm_s"], 3 * L * (counts + 2 * a2a), rel_tol=REL)
    assert math.isclose(s["comm_busy_s"], s["exposed_comm_s"], rel_tol=REL)


def test_uniform_all_to_all_formula_in_trace():
    prof = quiet_profile()
    res = simulate(**TINY, strategy="sync", steps=1, profile=prof, graph=fc_graph(), record=True)
    ev = res.events
    disp = ev[(ev["kind"] == "collective") & (ev["name"] == "dispatch")]
    assert len(disp) == 4 * 4  # 4 layers x 4 ranks
    pair_nbytes = 16 * 64  # 32 tokens x 2 copies / 4 experts = 16 rows of 64 B to each peer
    dur_us = (disp["end_us"] - disp["start_us"]).to_numpy()
    expect_us = (LAT + prof.collective_base_s["all_to_all"] + pair_nbytes / BW) * 1e6
    assert np.allclose(dur_us, expect_us, rtol=REL)
    assert (disp["nbytes"] == 3 * pair_nbytes).all() and (disp["rows"] == 48).all()


def test_profile_link_class_terms():
    """Per-class bandwidth efficiency and extra latency reach every all-to-all."""
    prof = quiet_profile(link_bw_eff={"default": 1.0, "generic": 0.5},
                         link_latency_s={"default": 0.0, "generic": 3e-6})
    res = simulate(**TINY, strategy="sync", steps=1, profile=prof, graph=fc_graph(), record=True)
    ev = res.events
    disp = ev[(ev["kind"] == "collective") & (ev["name"] == "dispatch")]
    expect_us = (LAT + prof.collective_base_s["all_to_all"] + 3e-6 + 16 * 64 / (0.5 * BW)) * 1e6
    assert np.allclose(disp["end_us"] - disp["start_us"], expect_us, rtol=REL)
    cnt = ev[(ev["kind"] == "collective") & (ev["name"] == "counts")]
    expect_us = (LAT + prof.collective_base_s["count_exchange"] + 3e-6) * 1e6
    assert np.allclose(cnt["end_us"] - cnt["start_us"], expect_us, rtol=REL)


def test_scenario_with_overrides():
    from dicesim.scenario import make_scenario

    sc = make_scenario(**TINY, strategy="sync", steps=2)
    a = simulate(sc, strategy="displaced", steps=3, profile="h100-sxm")
    b = simulate(**TINY, strategy="displaced", steps=3, profile="h100-sxm")
    assert a.summary() == b.summary() and a.meta["scenario"]["strategy"]["scheme"] == "displaced"


def test_data_parallel_has_no_communication():
    prof = quiet_profile()
    prep = prepare(**TINY, strategy="data_parallel", steps=2, profile=prof, graph=fc_graph())
    res = simulate(**TINY, strategy="data_parallel", steps=2, profile=prof, graph=fc_graph())
    cm = prep.spec.cost
    step = cm.action_time_s("embed") + cm.action_time_s("final") + 4 * sum(
        cm.action_time_s(a) for a in ("attention", "gate", "local_moe", "shared_expert", "local_combine"))
    assert math.isclose(res.summary()["step_latency_s"], step, rel_tol=REL)
    assert res.summary()["comm_busy_s"] == 0 and res.summary()["collectives"] == 0


def test_host_overhead_delays_only_after_host_sync():
    base = simulate(**TINY, strategy="sync", steps=2, profile=quiet_profile(), graph=fc_graph())
    slow_host = simulate(**TINY, strategy="sync", steps=2, graph=fc_graph(),
                         profile=quiet_profile(host_op_s=1e-6, host_collective_s=2e-6))
    gap = slow_host.per_rank["host_gap_s"].to_numpy()
    assert (gap > 0).all()
    assert slow_host.summary()["total_latency_s"] > base.summary()["total_latency_s"]


def _nominal_compute_W(prep) -> np.ndarray:
    """Sum of every compute op's nominal duration per rank, straight from the plan."""
    cm, rt = prep.spec.cost, prep.spec.routing
    W = rt.placement.world_size
    recv = [rt.recv_rows_LTW(False), rt.recv_rows_LTW(True)]
    out = np.zeros(W)
    for _t, actions in prep.plan:
        for a in actions:
            if a.kind in ("sync_moe", "run_experts"):
                out += cm.expert_times_s(recv[a.skip][a.layer, a.tok_step])
            elif a.kind not in ("issue_dispatch", "wait_combine", "discard", "drain"):
                out += cm.action_time_s(a.kind)
    return out


SCENARIOS = st.fixed_dictionaries({
    "strategy": st.sampled_from(["sync", "displaced", "interweaved", "dice", "interweaved-deep"]),
    "steps": st.integers(2, 6),
    "seed": st.integers(0, 3),
    "interference": st.sampled_from([0.0, 0.1, 0.5]),
    "host_op_s": st.sampled_from([0.0, 2e-6, 4e-5]),
    "count_comm": st.sampled_from(["shared", "separate"]),
    "bw": st.sampled_from([1e7, 1e9, 1e11]),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCENARIOS)
@example({"strategy": "displaced", "steps": 5, "seed": 1, "interference": 0.5, "host_op_s": 0.0,
          "count_comm": "shared", "bw": 1e9})
@example({"strategy": "dice", "steps": 6, "seed": 2, "interference": 0.1, "host_op_s": 2e-6,
          "count_comm": "separate", "bw": 1e7})
def test_accounting_identities(p):
    from dicesim.strategy import make_strategy

    prof = get_profile("h100-sxm").with_updates(interference=p["interference"], host_op_s=p["host_op_s"])
    strat = make_strategy(p["strategy"], count_comm=p["count_comm"])
    prep = prepare(**TINY, strategy=strat, steps=p["steps"], seed=p["seed"], profile=prof,
                   graph=fc_graph(bw=p["bw"]), sampling="multinomial")
    raw = run_engine(prep.spec)
    k = {n: i for i, n in enumerate(COUNTERS)}
    cum = raw.counters_WTK
    per = np.diff(np.concatenate([np.zeros((4, 1, len(COUNTERS))), cum], axis=1), axis=1)
    dur = np.diff(np.concatenate([np.zeros((4, 1)), raw.step_end_WT], axis=1), axis=1)
    # the stream is always computing, waiting on a collective, or waiting on the host
    stream = per[..., k["compute_busy_s"]] + per[..., k["exposed_comm_s"]] + per[..., k["host_gap_s"]]
    assert np.allclose(stream, dur, rtol=1e-9, atol=1e-12)
    for name in ("compute_busy_s", "comm_busy_s", "overlap_s"):
        assert (per[..., k[name]] <= dur + 1e-12).all()
    assert (per[..., k["overlap_s"]] <= per[..., k["comm_busy_s"]] + 1e-12).all()
    # interference re-timing is exact: overlapped compute ran (1 + f) times slower
    f = p["interference"]
    tot = cum[:, -1]
    nominal = tot[:, k["compute_busy_s"]] - tot[:, k["overlap_s"]] * f / (1 + f)
    assert np.allclose(nominal, _nominal_compute_W(prep), rtol=1e-9)


def test_lags_match_plan():
    for name in ("displaced", "interweaved", "dice"):
        prep = prepare(**TINY, strategy=name, steps=6, profile=quiet_profile())
        res = simulate(**TINY, strategy=name, steps=6, profile=quiet_profile())
        lt = lag_table(prep.plan)
        lags = res.lags.sort_values(["step", "layer"])
        assert np.array_equal(lags["lag_kept"].to_numpy().reshape(6, 4), lt.kept)
        assert np.array_equal(lags["lag_dropped"].to_numpy().reshape(6, 4), lt.dropped)
        assert math.isclose(res.summary()["max_lag"], lt.max_lag)


def test_weighted_lag_uses_top1_share_and_policy():
    from dicesim.scenario import RoutingConfig
    from dicesim.strategy import make_strategy

    strat = make_strategy("interweaved", cond_interval=2)
    res = {pol: simulate(**TINY, steps=6, profile=quiet_profile(), strategy=strat.model_copy(update={"cond_policy": pol}),
                         routing=RoutingConfig(top1_share=0.7)) for pol in ("low", "high")}
    lt = res["low"].lags
    expect_low = (0.7 * lt["lag_kept"] + 0.3 * lt["lag_dropped"]).mean()
    expect_high = (0.3 * lt["lag_kept"] + 0.7 * lt["lag_dropped"]).mean()
    assert math.isclose(res["low"].summary()["weighted_lag"], expect_low)
    assert math.isclose(res["high"].summary()["weighted_lag"], expect_high)
    assert expect_low < expect_high  # keeping the top-1 copy fresh weighs staleness less
    tl = res["low"].token_lags
    assert np.allclose(tl.groupby("layer")["copy_frac"].sum(), 1.0)


def test_deterministic_for_seed():
    kw = dict(**TINY, strategy="dice", steps=5, seed=7, sampling="multinomial", profile="h100-sxm")
    kw["graph"] = fc_graph(bw=1e7)  # bandwidth-bound, so the sampled row counts show in the latency
    a, b = simulate(**kw), simulate(**kw)
    assert a.summary() == b.summary()
    pd.testing.assert_frame_equal(a.per_step, b.per_step)
    pd.testing.assert_frame_equal(a.links, b.links)
    c = simulate(**{**kw, "seed": 8})
    assert c.summary()["total_latency_s"] != a.summary()["total_latency_s"]


def test_recorded_trace_is_valid_and_matches_unrecorded_run():
    from dicesim.trace import validate_events

    kw = dict(**TINY, strategy="dice", steps=4, profile="h100-sxm")
    rec, plain = simulate(**kw, record=True), simulate(**kw)
    validate_events(rec.events)
    assert plain.events is None
    assert math.isclose(rec.summary()["total_latency_s"], plain.summary()["total_latency_s"], rel_tol=1e-12)
    ev = rec.events
    assert set(ev["kind"]) == {"compute", "collective", "wait", "marker", "link"}
    steps = ev[ev["kind"] == "marker"]
    assert len(steps) == 4 * 4 and steps["end_us"].max() == pytest.approx(rec.summary()["total_latency_s"] * 1e6)


def test_world_size_beyond_topology_is_a_config_error():
    with pytest.raises(ConfigError, match="world_size"):
        simulate(model="tiny", world_size=8, batch=1, image_size=64, topology="tiny-ring4", steps=1)


def test_groups_placement_decides_network_traffic():
    kw = dict(model="tiny", num_experts=2, world_size=4, batch=1, image_size=64, topology="tiny-2x2-ib",
              strategy="sync", steps=2)
    G = get_topology("tiny-2x2-ib")
    res = {pl: simulate(**kw, placement=pl) for pl in ("contiguous", "strided")}
    ib = {pl: r.links[r.links["link_class"] == "ib_ndr"]["nbytes"].sum() for pl, r in res.items()}
    assert ib["contiguous"] == 0 and ib["strided"] > 0
    assert res["strided"].summary()["step_latency_s"] > res["contiguous"].summary()["step_latency_s"]
    assert len(res["strided"].links) == G.number_of_edges()
