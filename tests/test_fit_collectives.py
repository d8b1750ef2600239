"""The CPU profile's own all-gather and ring-pass parameters (dicesim/calibrate/fit_collectives.py).

Closed forms: rows made from known (latency, bandwidth) with the algorithm's structure (a ring all-gather of W
ranks: W-1 steps of latency + slice / bandwidth; a ring pass: one step) are fitted back exactly; a profile
carrying such parameters times the simulator's all-gathers and passes by the same formulas on an idle
network; a bad microbenchmark file is a one-line error, exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dicesim.calibrate.fit_collectives import SCHEMA, BenchRow, fit_collectives, fit_step, load_bench
from dicesim.cli import main
from dicesim.errors import ConfigError
from dicesim.sim.api import prepare, simulate
from dicesim.sim.costs.profile import get_profile
from dicesim.topology import fully_connected

ROOT = Path(__file__).resolve().parent.parent
CPU, SEQ = ROOT / "traces" / "cpu", ROOT / "traces" / "cpu-seq"
BENCH = ROOT / "traces" / "cpu-collectives" / "gloo-collectives-v1.csv"
SIZES = (1024, 16384, 262144, 4194304)
HEADER = "op,world_size,slice_nbytes,reps,median_s,p25_s,p75_s,last_arrival_median_s"


def _rows(alpha: dict, bw: dict, world_sizes=(2, 4)) -> list[BenchRow]:
    out = []
    for W in world_sizes:
        for s in SIZES:
            out.append(BenchRow("all_gather", W, s, (W - 1) * (alpha["all_gather"] + s / bw["all_gather"])))
            out.append(BenchRow("p2p_pass", W, s, alpha["p2p_pass"] + s / bw["p2p_pass"]))
            out.append(BenchRow("all_to_all", W, s, alpha["all_to_all"] + (W - 1) * s / bw["all_to_all"]))
    return out


def test_fit_recovers_known_step_latency_and_bandwidth():
    alpha = {"all_gather": 300e-6, "p2p_pass": 120e-6, "all_to_all": 90e-6}
    bw = {"all_gather": 1.2e9, "p2p_pass": 2.5e9, "all_to_all": 0.8e9}
    rows = _rows(alpha, bw)
    for ws in ({2}, {4}, {2, 4}):
        fit = fit_collectives(rows, ws, source="synthetic")
        for f in (fit.all_gather, fit.p2p_pass, fit.all_to_all):
            assert f.latency_s == pytest.approx(alpha[f.op], rel=1e-9)
            assert f.bw_Bps == pytest.approx(bw[f.op], rel=1e-9)
            assert f.rel_err_max < 1e-9 and f.world_sizes == tuple(sorted(ws))
            assert f.time_s(3, 1000.0) == pytest.approx(
                {"all_gather": 2 * (alpha[f.op] + 1000 / bw[f.op]), "p2p_pass": alpha[f.op] + 1000 / bw[f.op],
                 "all_to_all": alpha[f.op] + 2 * 1000 / bw[f.op]}[f.op], rel=1e-9)


def test_fit_is_least_squares_in_relative_terms_and_reports_the_residuals():
    # a row 10% slow: the fit moves, the residuals say by how much, and a latency-only set clamps the bandwidth
    rows = [BenchRow("p2p_pass", 2, s, 1e-4 + s / 1e9) for s in SIZES]
    rows[-1] = BenchRow("p2p_pass", 2, SIZES[-1], rows[-1].median_s * 1.1)
    f = fit_step(rows, "p2p_pass")
    assert len(f.rel_residuals) == len(SIZES) and 0 < f.rel_err_max < 0.1
    X = np.array([[1.0, s] for s in SIZES])
    y = np.array([r.median_s for r in rows])
    coef, *_ = np.linalg.lstsq(X / y[:, None], np.ones_like(y), rcond=None)
    assert (f.latency_s, 1 / f.bw_Bps) == pytest.approx(tuple(coef), rel=1e-9)
    flat = fit_step([BenchRow("p2p_pass", 2, s, 2e-4 * (1 - 1e-3 * k)) for k, s in enumerate(SIZES)], "p2p_pass")
    assert flat.bw_Bps == 1e15 and flat.latency_s > 0  # time falling with size: no bandwidth term


@pytest.mark.parametrize("W", [2, 4])
def test_profile_parameters_time_the_simulators_gathers_and_passes_in_closed_form(W):
    alpha_ag, alpha_p, own_ag, own_p, bw, lat = 250e-6, 80e-6, 1.5e9, 3e9, 1e8, 1e-6
    base = get_profile("h100-sxm").with_updates(host_op_s=0.0, host_collective_s=0.0, interference=0.0)
    prof = base.with_updates(collective_base_s={**base.collective_base_s, "all_gather": alpha_ag, "p2p_pass": alpha_p},
                             collective_bw_Bps={"all_gather": own_ag, "p2p_pass": own_p})
    graph = fully_connected(W, bw, lat)
    kw = dict(model="tiny", world_size=W, batch=1, image_size=64, steps=2)
    for strategy in ("sp", "ring"):
        prep = prepare(**kw, strategy=strategy, profile=prof, graph=graph)
        tpr, row = prep.routing.tokens_per_rank, prep.spec.row_nbytes
        ev = simulate(**kw, strategy=strategy, profile=prof, graph=graph, record=True).events
        coll = ev[ev.kind == "collective"]
        dur = (coll.end_us - coll.start_us) * 1e-6
        # gloo's ring all-gather: W-1 steps of a step latency and a slice at the all-gather's own bandwidth
        # (and each ring hop's route latency, W-1 of them)
        gather = dur[coll.name == "token_gather"]
        assert len(gather) and np.allclose(gather, (W - 1) * (alpha_ag + tpr * row / own_ag + lat), rtol=1e-9)
        if strategy == "ring":  # W-1 passes, each a step latency and one K/V block at the pass's own bandwidth
            ring = dur[coll.name == "kv_ring"]
            assert len(ring) and np.allclose(ring, (W - 1) * (alpha_p + 2 * tpr * row / own_p + lat), rtol=1e-9)
    # without them the all-to-all's base latency and the link bandwidth stand in (unchanged behaviour)
    ev = simulate(**kw, strategy="sp", profile=base, graph=graph, record=True).events
    g = ev[(ev.kind == "collective") & (ev.name == "token_gather")]
    tpr, row = prepare(**kw, strategy="sp", profile=base, graph=graph).routing.tokens_per_rank, None
    row = prepare(**kw, strategy="sp", profile=base, graph=graph).spec.row_nbytes
    want = base.collective_base_s["all_to_all"] + (W - 1) * lat + (W - 1) * tpr * row / bw
    assert np.allclose((g.end_us - g.start_us) * 1e-6, want, rtol=1e-9)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bench.csv"
    p.write_text(text)
    return p


GOOD = f"# schema: {SCHEMA}\n{HEADER}\n" + "".join(
    f"{op},2,{s},10,{1e-4 + s / 1e9},1e-4,1e-4,1e-4\n" for op in ("all_gather", "p2p_pass") for s in SIZES)


@pytest.mark.parametrize("text, needle", [
    (GOOD.replace(SCHEMA, "other/1"), f"schema 'other/1' is not supported (allowed: {SCHEMA})"),
    (GOOD.replace(HEADER, "op,ws,size"), "header must be the columns (allowed: op, world_size"),
    (GOOD.replace("p2p_pass,2,1024", "broadcast,2,1024"), "unknown op 'broadcast' (allowed: all_gather, all_to_all, "
                                                          "p2p_pass)"),
    (GOOD.replace("all_gather,2,1024,10,", "all_gather,2,1024,10,-1"), "0 < median_s <= 10"),
    (GOOD.replace("all_gather,2,1024,10,", "all_gather,x,1024,10,"), "must be integers"),
    (f"# schema: {SCHEMA}\n{HEADER}\n", "no data rows"),
])
def test_bad_microbenchmark_file_is_a_one_line_error(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_bench(_write(tmp_path, text))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_world_size_names_the_ones_there(tmp_path):
    with pytest.raises(ConfigError, match=r"no rows for world size 4 \(allowed: 2\)"):
        fit_collectives(load_bench(_write(tmp_path, GOOD)), {2, 4}, source="b")


@pytest.mark.skipif(not (CPU / "README.md").is_file() or not (SEQ / "README.md").is_file() or not BENCH.is_file(),
                    reason="committed traces not present")
class TestAccuracyCommand:
    WHERE = 'world_size == 2 and batch == 1 and (strategy in ("sp", "ring", "sync"))'
    ARGS = ["accuracy", str(CPU), str(SEQ), "--fit-on", 'family == "expert_parallel"']

    def test_bad_file_exits_2_in_one_line(self, tmp_path, capsys):
        bad = _write(tmp_path, GOOD.replace(SCHEMA, "x/0"))
        assert main([*self.ARGS, "--where", self.WHERE, "--collectives", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert "collectives" in err and f"allowed: {SCHEMA}" in err and "\n" not in err
        assert main([*self.ARGS, "--collectives", str(tmp_path / "none.csv")]) == 2
        assert "cannot read" in capsys.readouterr().err

    def test_option_runs_on_a_subset_and_moves_only_the_sequence_predictions(self, capsys):
        import json

        out = {}
        for extra in ([], ["--collectives", str(BENCH)]):
            assert main([*self.ARGS, "--where", self.WHERE, "--json", *extra]) == 0
            rows = json.loads(capsys.readouterr().out)["rows"]
            out[bool(extra)] = {r["strategy"]: r["predicted_step_latency_s"] for r in rows}
        assert set(out[True]) == {"sp", "ring", "sync"}
        assert out[True]["sync"] == out[False]["sync"]  # the expert family's fit is untouched
        assert out[True]["sp"] != out[False]["sp"] and out[True]["ring"] != out[False]["ring"]


@pytest.mark.skipif(not (CPU / "README.md").is_file() or not BENCH.is_file(), reason="committed traces not present")
def test_calibrate_writes_the_fitted_step_parameters_into_the_profile(tmp_path, capsys):
    from dicesim.sim.costs.profile import load_profile

    out = tmp_path / "cpu-w2.toml"
    assert main(["calibrate", str(CPU), "--where", 'world_size == 2 and batch == 1 and strategy == "sync"',
                 "--out", str(out), "--collectives", str(BENCH)]) == 0
    assert "all_gather: step latency" in capsys.readouterr().out
    prof = load_profile(out)
    fit = fit_collectives(load_bench(BENCH), {2})
    for f in (fit.all_gather, fit.p2p_pass):
        assert prof.collective_base_s[f.op] == pytest.approx(f.latency_s, rel=1e-12)
        assert prof.collective_bw_Bps[f.op] == pytest.approx(f.bw_Bps, rel=1e-12)
    assert "fitted on" in prof.citations["collective_base_s.all_gather"]


def test_microbenchmark_script_refuses_a_one_rank_world_in_one_line(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gloo_collectives", ROOT / "benchmarks" / "gloo_collectives.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as exc:
        mod.main([str(tmp_path / "out"), "--world-sizes", "1,2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "need integers >= 2" in err and not (tmp_path / "out").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="gloo ranks on linux only")
def test_microbenchmark_runs_on_gloo_ranks_and_its_file_fits(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "bench"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gloo_collectives.py"), str(out), "--world-sizes",
                           "2", "--slice-nbytes", "1024,65536", "--reps", "3", "--warmup", "1"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = load_bench(out / "gloo-collectives-v1.csv")
    assert sorted((r.op, r.slice_nbytes) for r in rows) == sorted(
        (op, s) for op in ("all_gather", "all_to_all", "p2p_pass") for s in (1024, 65536))
    fit = fit_collectives(rows, {2}, source=str(out))
    assert fit.all_gather.latency_s >= 0 and fit.p2p_pass.bw_Bps > 0
    readme = (out / "README.md").read_text()
    assert "benchmarks/gloo_collectives.py" in readme and "load average" in readme
