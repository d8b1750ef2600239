"""The eager host model (dicesim/sim/costs/host.py) in the engine: closed forms, exactness of the
shortcuts with it, validation, and the separation of host from device in the calibrated profiles."""

from __future__ import annotations

import math

import pytest

from dicesim.errors import ConfigError
from dicesim.sim.api import prepare, simulate
from dicesim.sim.costs.host import HOST_OP_KINDS, HostModel
from dicesim.sim.costs.profile import get_profile, load_profile, profile_from_dict, save_profile
from dicesim.topology import fully_connected

REL = 1e-9
ONE = dict(model="tiny", world_size=1, batch=1, image_size=64, topology="tiny-ring4", steps=3)
#: the ops of one data-parallel step on one rank: embed, per layer 5 ops, final
DP_OPS = ("attention", "gate", "local_moe", "shared_expert", "local_combine")


def _profile(host: HostModel | None, **kw):
    return get_profile("h100-sxm").with_updates(host=host, interference=0.0, comm_interference=0.0, **kw)


def _host(issue_s: float, *, syncs: dict | None = None, sync_s: float = 0.0, expert_s: float = 0.0) -> HostModel:
    return HostModel(code="test", op_s={k: issue_s for k in HOST_OP_KINDS}, syncs=syncs or {}, sync_s=sync_s,
                     expert_s=expert_s)


def _device_times(prep) -> list[float]:
    cm = prep.spec.cost
    L = prep.plan.num_layers
    return [cm.action_time_s("embed")] + [cm.action_time_s(a) for _ in range(L) for a in DP_OPS] + [
        cm.action_time_s("final")]


def test_host_bound_step_is_the_hosts_time():
    # every op costs the host more than the device: the stream runs at the host's pace
    H = 5e-3
    prof = _profile(_host(H))
    prep = prepare(**ONE, strategy="data_parallel", profile=prof)
    D = _device_times(prep)
    assert max(D) < H
    E = prep.spec.cost.workload.model.num_experts  # data parallel: every expert is local
    res = simulate(**ONE, strategy="data_parallel", profile=prof)
    L = prep.plan.num_layers
    # local_moe: the handler's own work, then the experts op (its fixed cost, one per local expert;
    # expert_s = 0 here): two host ops' worth per layer
    assert math.isclose(res.summary()["step_latency_s"], (len(D) + L) * H, rel_tol=REL)
    per = res.per_step
    assert math.isclose(per["host_gap_s"].iloc[1], (len(D) + L) * H - sum(D), rel_tol=1e-6)
    # with a per-expert cost the experts op grows by E of them per layer
    res2 = simulate(**ONE, strategy="data_parallel", profile=_profile(_host(H, expert_s=1e-3)))
    assert math.isclose(res2.summary()["step_latency_s"], (len(D) + L) * H + L * E * 1e-3, rel_tol=REL)


def test_device_bound_step_is_the_devices_time():
    # the host issues faster than the device runs: it never holds the stream back (after the first op)
    prof = _profile(_host(1e-9))
    prep = prepare(**ONE, strategy="data_parallel", profile=prof)
    res = simulate(**ONE, strategy="data_parallel", profile=prof)
    assert math.isclose(res.summary()["step_latency_s"], sum(_device_times(prep)), rel_tol=1e-6)


def test_syncs_drain_the_queue_before_each_op():
    # the host syncs before every op: each op starts from an empty queue, one sync_s later
    sync_s = 2e-5
    syncs = {k: 1 for k in HOST_OP_KINDS}
    prof = _profile(_host(0.0, syncs=syncs, sync_s=sync_s))
    prep = prepare(**ONE, strategy="data_parallel", profile=prof)
    D = _device_times(prep)
    res = simulate(**ONE, strategy="data_parallel", profile=prof)
    L = prep.plan.num_layers  # local_moe makes its own sync and the experts op's: two per layer
    assert math.isclose(res.summary()["step_latency_s"], sum(D) + (len(D) + L) * sync_s, rel_tol=1e-6)
    # two syncs per op cost two sync_s (the second finds the queue empty already)
    prof2 = _profile(_host(0.0, syncs={k: 2 for k in HOST_OP_KINDS}, sync_s=sync_s))
    res2 = simulate(**ONE, strategy="data_parallel", profile=prof2)
    assert math.isclose(res2.summary()["step_latency_s"], sum(D) + 2 * (len(D) + L) * sync_s, rel_tol=1e-6)


def test_without_a_host_model_the_launch_cost_is_paid_before_each_op():
    hop = 3e-3  # larger than any op: every op waits for its launch
    prof = _profile(None, host_op_s=hop, host_collective_s=0.0)
    prep = prepare(**ONE, strategy="data_parallel", profile=prof)
    D = _device_times(prep)
    res = simulate(**ONE, strategy="data_parallel", profile=prof)
    # the old host: launch, then the op; the host is ahead again only after an op longer than hop
    t = host = 0.0
    for d in D:
        host += hop
        t = max(t, host) + d
    steady = res.per_step["latency_s"].iloc[-1]
    assert math.isclose(res.per_step["latency_s"].iloc[0], t, rel_tol=REL)
    assert steady <= t + 1e-12


@pytest.mark.parametrize("strategy", ["sync", "displaced", "dice"])
def test_merging_and_window_reuse_stay_exact_with_a_host_model(strategy):
    host = HostModel(code="test", op_s={k: 4e-5 * (i + 1) for i, k in enumerate(HOST_OP_KINDS)},
                     syncs={"gate": 1, "experts": 2, "count_exchange": 1, "combine": 1}, sync_s=1e-5, expert_s=2e-5)
    prof = get_profile("h100-sxm").with_updates(host=host, interference=0.3)
    kw = dict(model="tiny", world_size=4, batch=1, image_size=64, steps=6, strategy=strategy, profile=prof,
              graph=fully_connected(4, 1e9, 1e-6))
    fast = simulate(**kw)  # merged blocks, window reuse
    full = simulate(**kw, reuse=False, merge_compute=False)
    assert math.isclose(fast.summary()["total_latency_s"], full.summary()["total_latency_s"], rel_tol=1e-9)
    assert math.isclose(fast.summary()["exposed_comm_s"], full.summary()["exposed_comm_s"], rel_tol=1e-7,
                        abs_tol=1e-12)
    rec = simulate(**kw, record=True)  # recording never merges: one instruction per op
    assert math.isclose(rec.summary()["total_latency_s"], full.summary()["total_latency_s"], rel_tol=1e-9)


def test_host_model_is_validated_and_round_trips(tmp_path):
    prof = get_profile("h200-calibrated")
    assert prof.host is not None and prof.basis == "measured" and "eager host model" in prof.describe()
    path = save_profile(prof, tmp_path / "p.toml")
    assert load_profile(path) == prof
    assert get_profile("h100-sxm").host is None and get_profile("h100-sxm").basis == "datasheet"
    data = prof.model_dump(mode="json")
    bad = {**data, "host": {**data["host"], "op_s": {k: v for k, v in data["host"]["op_s"].items() if k != "gate"}}}
    with pytest.raises(ConfigError, match="host"):
        profile_from_dict(bad)
    bad = {**data, "host": {**data["host"], "sync_s": -1.0}}
    with pytest.raises(ConfigError, match="host.sync_s"):
        profile_from_dict(bad)
    bad = {**data, "host": {**data["host"], "syncs": {"gate": 1000}}}
    with pytest.raises(ConfigError, match="host"):
        profile_from_dict(bad)


@pytest.mark.parametrize("image_size", [256, 512])
def test_eager_profile_is_never_faster_than_its_device_time(image_size):
    # issue 21: the eager profile (device + host) predicted faster than the device-only one, because
    # the eager fit absorbed the host into its rates; now both share the device fit
    kw = dict(model="XL/2", topology="dgx-h100", world_size=8, batch=8, image_size=image_size, steps=4,
              strategy="sync")
    eager = simulate(**kw, profile="h100-calibrated").summary()["step_latency_s"]
    graph = simulate(**kw, profile="h100-calibrated-graph").summary()["step_latency_s"]
    assert eager > graph
    assert get_profile("h100-calibrated").ops == get_profile("h100-calibrated-graph").ops


@pytest.mark.parametrize("name, traces, base", [("h200-calibrated", "traces/gpu/h200", "h200"),
                                                ("h100-calibrated", "traces/gpu/h100", "h100-sxm")])
def test_committed_eager_profiles_come_from_the_op_timings_and_cpu_host_costs_alone(name, traces, base,
                                                                                      monkeypatch):
    """The calibrated eager profiles are what `dicesim calibrate --host-costs` fits from the op-level
    traces and the CPU host costs (docs/calibration.md): nothing in them was set by hand, and the
    whole-step executor run (traces/gpu/h200-executor) stays held out."""
    from pathlib import Path

    from dicesim.calibrate.api import calibrate_runs
    from dicesim.calibrate.runs import load_runs

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the profiles cite repository-relative paths
    runs = load_runs([traces])
    assert not any("executor" in str(r.stem) for r in runs)
    cal = calibrate_runs(runs, base=base, name=name, host_costs="traces/host/cpu-executor.toml")
    committed = get_profile(name)
    assert cal.profile.model_dump(exclude={"date"}) == committed.model_dump(exclude={"date"})


@pytest.mark.parametrize("strategy, measured_ms, predicted_ms", [("sync", 177.5, 131.1), ("data_parallel", 121.5, 97.8)])
def test_held_out_h200_step_is_the_figure_the_docs_state(strategy, measured_ms, predicted_ms):
    """The one whole-step GPU measurement (traces/gpu/h200-executor, held out: no profile is fitted on
    it) against the prediction of the calibrated eager profile, as docs/calibration.md ("Known
    limits") and the README state them: re-derived here, so the page moves with the model."""
    import json
    from pathlib import Path

    import numpy as np

    root = Path(__file__).resolve().parents[1] / "traces/gpu/h200-executor"
    summ = json.loads((root / f"{strategy}.summary.json").read_text())
    steady_s = float(np.median(summ["step_latency_s"][3:]))  # steps 0-2 include CUDA warm-up
    pred_s = simulate(model="XL/2", topology="hgx-h200", world_size=1, batch=summ["batch_per_rank"],
                      image_size=summ["image_size_px"], steps=summ["steps"], strategy=strategy,
                      profile="h200-calibrated").summary()["step_latency_s"]
    assert round(steady_s * 1e3, 1) == measured_ms
    assert round(pred_s * 1e3, 1) == predicted_ms
    assert abs(pred_s / steady_s - 1) > 0.15  # the 15% target is not met (docs say so)
