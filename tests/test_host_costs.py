"""The host model's inputs and fit: the CPU host-cost probe (validate/hostcost.py) and
dicesim.calibrate.fit_host on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicesim.calibrate.fit_host import EVENT_LAUNCHES, HostCosts, fit_host, load_host_costs
from dicesim.errors import ConfigError
from dicesim.sim.costs.host import HOST_OP_KINDS


def test_committed_host_costs_have_the_counts_the_executor_makes_now():
    # launches, syncs and trace marks are counted, not timed: a changed executor must refresh the file
    from validate.hostcost import executor_counts

    committed = load_host_costs()
    fresh = executor_counts()
    assert set(fresh) == set(committed.executor)
    for kind, row in fresh.items():
        c = committed.executor[kind]
        assert (c.launches, c.syncs, c.events) == (row["launches"], row["syncs"], row["events"]), kind
    # the syncs the executor is known to make (validate/executor/dispatcher.py, runner.py, model/experts.py)
    assert committed.executor["count_exchange"].syncs >= 3  # bincount, counts to the host, tables to the device
    assert committed.executor["gate"].syncs >= 1  # the router histogram to the host
    assert committed.experts.syncs >= 1  # rows per expert to the host (forward_rows)
    assert committed.experts.launches_per_expert == 7  # gather, three GEMMs, SiLU, product, scatter
    # the data-parallel handler reads nothing from the device (the probe's own counting is not charged to it)
    assert committed.executor["local_moe"].syncs == 0


def test_probe_counts_the_ops_of_the_op_level_timings():
    from validate.hostcost import measure_bench

    bench = measure_bench(reps=3)
    assert set(bench) == {"attention", "gate", "experts_1", "experts_2", "shared_expert", "local_combine"}
    # one more local expert adds one SwiGLU: three GEMMs, SiLU and the product
    assert bench["experts_2"]["launches"] - bench["experts_1"]["launches"] == 5
    assert all(row["syncs"] == 0 for row in bench.values())  # the timed ops never read the GPU
    assert all(row["host_s"] > 0 for row in bench.values())


def test_probe_counts_bincount_as_cuda_runs_it():
    # on CUDA bincount reads min() and max() back to size its histogram (SummaryOps.cu), then zero-fills it
    # and runs the histogram kernel: two syncs and four kernels, where the CPU dispatcher shows one call
    import torch

    from validate.hostcost import _Counter, _Probe

    probe = _Probe()
    ids_R = torch.tensor([0, 2, 2, 1])

    def layout():
        counts_E = torch.bincount(ids_R, minlength=4)
        return (counts_E * 2).tolist()

    with _Counter(probe):
        assert probe.wrap("count_exchange", layout)() == [2, 2, 4, 0]
    assert probe.syncs["count_exchange"] == 2  # (tolist is counted where the executor is patched: _patched)
    assert probe.launches["count_exchange"] == 5  # bincount's four kernels and the product


def _samples(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    trace, kind, t = zip(*rows)
    return pd.DataFrame({"trace": trace, "kind": kind, "op_s": t, "gap_s": 0.0})


def test_fit_host_recovers_a_known_host():
    rho, tau = 1.7, 9e-6
    bench_cpu = {"attention": (100e-6, 11), "gate": (110e-6, 19), "shared_expert": (40e-6, 8),
                 "local_combine": (12e-6, 3), "experts_1": (50e-6, 6), "experts_2": (58e-6, 11)}
    H = {k: rho * h + tau * n for k, (h, n) in bench_cpu.items()}
    eager, graph = [], []
    for model, local in (("XL2", 1), ("G2", 2)):
        for b, dev in ((1, 20e-6), (8, 120e-6), (32, 900e-6)):
            trace = f"{model}-b{b}"
            for kind in ("attention", "gate", "shared_expert", "local_combine", "experts"):
                key = f"experts_{local}" if kind == "experts" else kind
                graph.append((trace, kind, dev))
                eager.append((trace, kind, max(H[key], dev)))
    local = {f"{m}-b{b}": x for m, x in (("XL2", 1), ("G2", 2)) for b in (1, 8, 32)}
    executor = {k: {"host_s": 1e-4 * (i + 1), "launches": 5.0 + i, "syncs": float(i % 3), "events": 2.0}
                for i, k in enumerate(("embed", "attention", "gate", "count_exchange", "dispatch", "combine",
                                       "unpermute", "exchange", "shared_expert", "local_combine", "final",
                                       "local_moe"))}
    costs = HostCosts(**{
        "schema": "dicesim-host-costs/1", "meta": {"device": "cpu"},
        "bench": {k: {"host_s": h, "launches": n} for k, (h, n) in bench_cpu.items()},
        "executor": executor,
        "experts": {"host_s": 80e-6, "launches": 2, "syncs": 2, "per_expert_s": 45e-6, "launches_per_expert": 7}})
    fit = fit_host(_samples(eager), _samples(graph), local, costs)
    assert fit.rho == pytest.approx(rho, rel=1e-6) and fit.tau_s == pytest.approx(tau, rel=1e-6)
    assert all(abs(e) < 1e-6 for e in fit.transfer_err.values())
    assert fit.gpu_host_s == pytest.approx(H, rel=1e-9)

    def gpu(row):
        return rho * row["host_s"] + tau * (row["launches"] + EVENT_LAUNCHES * row["events"])

    m = fit.model
    assert m.op_s["attention"] == pytest.approx(gpu(executor["attention"]))
    assert m.op_s["combine"] == pytest.approx(sum(gpu(executor[k]) for k in ("combine", "unpermute", "exchange")))
    assert m.syncs["combine"] == sum(int(executor[k]["syncs"]) for k in ("combine", "unpermute", "exchange"))
    assert m.op_s["experts"] == pytest.approx(rho * 80e-6 + tau * 2)
    # the data-parallel handler: its own work, then the experts op with every local expert
    own = gpu(executor["local_moe"])
    assert m.op_s["local_moe"] == pytest.approx(own)
    assert m.cost("local_moe", 3).issue_s == pytest.approx(own + m.cost("experts", 3).issue_s)
    assert m.cost("local_moe", 3).syncs == int(executor["local_moe"]["syncs"]) + m.syncs["experts"]
    assert m.expert_s == pytest.approx(rho * 45e-6 + tau * 7)
    assert m.sync_s == pytest.approx(tau)
    assert set(m.op_s) == set(HOST_OP_KINDS)
    # the cross-check: host seconds per launch by least squares through the origin over the timed ops
    n_K = np.array([n for _, n in bench_cpu.values()], dtype=float)
    h_K = np.array([H[k] for k in bench_cpu])
    assert fit.per_launch_s == pytest.approx(n_K @ h_K / (n_K @ n_K), rel=1e-9)
    assert fit.expert_per_launch_s == pytest.approx(7 * fit.per_launch_s)


def test_host_cost_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "h.toml"
    bad.write_text('schema = "dicesim-host-costs/1"\nmeta = {}\nbench = {}\nexecutor = {}\n'
                   '[experts]\nhost_s = 1e-5\nlaunches = 2\nper_expert_s = 1e-5\nlaunches_per_expert = 7\n')
    with pytest.raises(ConfigError, match="no entry for"):
        load_host_costs(bad)
    bad.write_text('schema = "dicesim-host-costs/9"\n')
    with pytest.raises(ConfigError, match="host_costs"):
        load_host_costs(bad)
    assert np.isfinite(load_host_costs().experts.per_expert_s)
