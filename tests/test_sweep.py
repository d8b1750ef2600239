"""Sweeps: spec parsing, stable keys, resume after interruption, skips, Dask == in-process."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dicesim.cli import main
from dicesim.errors import ConfigError
from dicesim.report.sweep_report import best_under_budget, sweep_sections, with_speedup
from dicesim.sweep import (
    config_key,
    load_sweep,
    point_scenario,
    read_chunks,
    run_sweep,
    sweep_from_dict,
)

DOC = {
    "sweep": {"name": "t", "chunk_size": 3},
    "base": {"model": {"name": "tiny"}, "workload": {"steps": 4, "batch": 2}},
    "axes": {"strategy": ["sync", "displaced", "dice"], "cond_interval": [1, 2], "world_size": [2, 3, 4]},
}


def fake_metrics(sc) -> dict:
    """Closed-form stand-in for the simulator: latency halves when async, scales with 1/GPUs."""
    s = sc.strategy
    lat = (0.1 if s.scheme == "sync" else 0.05) * 8 / sc.world_size
    return dict(step_latency_s=lat, total_latency_s=lat * sc.steps, exposed_comm_s=lat / 4 * sc.steps,
                exposed_comm_step_s=lat / 4, overlap_frac=0.0 if s.scheme == "sync" else 0.9, comm_frac=0.5,
                mean_lag_steps=0.0 if s.scheme == "sync" else float(s.cond_interval),
                weighted_lag_steps=0.0 if s.scheme == "sync" else 0.8 * s.cond_interval, peak_buffer_bytes=2.0**20)


def failing_once(sc) -> dict:
    if sc.world_size == 4 and sc.strategy.scheme == "displaced":
        raise RuntimeError("transient failure\nsecond line")
    return fake_metrics(sc)


def _spec(**sweep):
    doc = {**DOC, "sweep": {**DOC["sweep"], **sweep}}
    return sweep_from_dict(doc)


def _run(spec, out, **kw):
    ran: list[str] = []
    outcome = run_sweep(spec, out, evaluate=kw.pop("evaluate", fake_metrics),
                        on_chunk=lambda path, rows: ran.extend(r["key"] for r in rows), **kw)
    return outcome, ran


def test_points_are_the_cartesian_product_in_order():
    points = _spec().points()
    assert len(points) == 18
    assert points[0] == {"strategy": "sync", "cond_interval": 1, "world_size": 2}
    assert points[1] == {"strategy": "sync", "cond_interval": 1, "world_size": 3}  # last axis fastest
    assert points[-1] == {"strategy": "dice", "cond_interval": 2, "world_size": 4}


def test_config_key_is_stable_and_specific():
    spec = _spec()
    p = {"strategy": "dice", "world_size": 4}
    assert config_key(spec.base, p) == config_key(spec.base, dict(reversed(list(p.items()))))
    assert config_key(spec.base, p) == "%s" % config_key(_spec().base, dict(p))
    assert config_key(spec.base, p) != config_key(spec.base, {**p, "world_size": 2})
    other_base = sweep_from_dict({**DOC, "base": {"model": {"name": "tiny"}, "workload": {"steps": 5}}}).base
    assert config_key(spec.base, p) != config_key(other_base, p)
    assert len(config_key(spec.base, p)) == 16


@pytest.mark.parametrize("doc, message", [
    ({**DOC, "axes": {"strategi": ["dice"]}}, "axes.strategi: unknown axis"),
    ({**DOC, "axes": {"strategy": ["dicey"]}}, "unknown strategy 'dicey'"),
    ({**DOC, "axes": {"batch": []}}, "axes.batch: must be a non-empty list"),
    ({**DOC, "axes": {}}, "axes: needs at least one axis"),
    ({**DOC, "extra": {}}, "[extra]: unknown section"),
    ({**DOC, "sweep": {"chunk_size": 0}}, "sweep.chunk_size"),
])
def test_bad_sweep_files_are_config_errors(doc, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sweep_from_dict(doc)


def test_point_scenario_applies_strategy_overrides_and_rejects_redundant_ones():
    base = _spec().base
    sc, label = point_scenario(base, {"strategy": "dice", "cond_interval": 4, "world_size": 2})
    assert (sc.strategy.scheme, sc.strategy.sync_layers, sc.strategy.cond_interval) == ("interweaved", "deep", 4)
    assert label == "dice[cond_interval=4]" and sc.world_size == 2
    sc, label = point_scenario(base, {"strategy": "dice", "cond_interval": 2})
    assert label == "dice"  # equal to the preset's own value: no override
    with pytest.raises(ConfigError, match="redundant"):
        point_scenario(base, {"strategy": "sync", "cond_interval": 2})
    with pytest.raises(ConfigError, match="3 GPUs cannot hold 4 experts"):
        point_scenario(base, {"strategy": "dice", "world_size": 3})


def test_sweep_records_invalid_configurations_as_skipped(tmp_path):
    outcome, _ = _run(_spec(), tmp_path)
    t = outcome.table
    assert len(t) == 18 and list(t["index"]) == list(range(18))
    skipped = t[t["status"] == "skipped"]
    assert (t.loc[t["world_size"] == 3, "status"] == "skipped").all()
    on3 = skipped.loc[(skipped["world_size"] == 3) & ~skipped["reason"].str.contains("redundant"), "reason"]
    assert len(on3) == 5 and on3.str.startswith("world_size: 3 GPUs cannot hold 4 experts").all()
    assert (t.loc[(t["strategy"] == "sync") & (t["cond_interval"] == 2), "status"] == "skipped").all()
    assert t.loc[t["status"] == "skipped", "step_latency_s"].isna().all()
    ok = t[t["status"] == "ok"]
    assert len(ok) == 10  # 3 strategies x 2 intervals x {2, 4} GPUs, minus 2 redundant sync rows
    dice4 = ok[(ok["strategy"] == "dice") & (ok["world_size"] == 4)]
    assert dice4["step_latency_s"].tolist() == [pytest.approx(0.1)]


def test_resume_after_deleting_chunks_runs_only_missing_configs(tmp_path):
    spec = _spec()
    first, ran1 = _run(spec, tmp_path)
    assert first.n_run == 18 and len(ran1) == 18
    again, ran2 = _run(spec, tmp_path)
    assert (again.n_run, again.n_cached, ran2) == (0, 18, [])
    chunks = sorted((tmp_path / "chunks").glob("chunk-*.parquet"))
    lost = set(pd.read_parquet(chunks[1])["key"]) | set(pd.read_parquet(chunks[4])["key"])
    chunks[1].unlink()
    chunks[4].unlink()
    resumed, ran3 = _run(spec, tmp_path)
    assert set(ran3) == lost and resumed.n_run == len(lost) == 6
    pd.testing.assert_frame_equal(resumed.table, first.table)


def test_interrupted_sweep_resumes_and_gives_the_same_table(tmp_path):
    spec = _spec()
    reference, _ = _run(spec, tmp_path / "ref")
    written: list[str] = []

    def stop_after_two(path, rows):
        written.extend(r["key"] for r in rows)
        if len(written) >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "run", evaluate=fake_metrics, on_chunk=stop_after_two)
    assert set(read_chunks(tmp_path / "run")["key"]) == set(written)
    # a temp file of a chunk that was being written is not a result
    (tmp_path / "run" / "chunks" / ".chunk-dead.parquet.123.tmp").write_bytes(b"partial")
    resumed, ran = _run(spec, tmp_path / "run")
    assert resumed.n_cached == 6 and len(ran) == 12 and not set(ran) & set(written)
    pd.testing.assert_frame_equal(resumed.table, reference.table)


def test_errors_are_recorded_and_retried(tmp_path):
    spec = _spec()
    first, _ = _run(spec, tmp_path, evaluate=failing_once)
    errors = first.table[first.table["status"] == "error"]
    assert len(errors) == 2 and set(errors["reason"]) == {"RuntimeError: transient failure"}
    retried, ran = _run(spec, tmp_path)
    assert sorted(ran) == sorted(errors["key"])
    assert (retried.table["status"] != "error").all()


def test_dask_local_cluster_gives_the_in_process_table(tmp_path):
    spec = _spec()
    local, _ = _run(spec, tmp_path / "local")
    dask_run = run_sweep(spec, tmp_path / "dask", workers=2, processes=False, evaluate=fake_metrics)
    assert dask_run.n_run == 18
    pd.testing.assert_frame_equal(dask_run.table, local.table)


def test_sweep_connects_to_a_running_scheduler(tmp_path):
    from dask.distributed import LocalCluster

    spec = _spec()
    local, _ = _run(spec, tmp_path / "local")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        remote = run_sweep(spec, tmp_path / "remote", scheduler=cluster.scheduler_address, evaluate=fake_metrics)
    pd.testing.assert_frame_equal(remote.table, local.table)


def test_best_under_budget_and_speedup():
    table = pd.DataFrame({
        "index": range(5), "key": list("abcde"), "status": ["ok", "ok", "ok", "ok", "skipped"], "reason": "",
        "strategy": ["sync", "displaced", "dice", "sync", "dice"], "topology": ["t"] * 5,
        "world_size": [8, 8, 8, 4, 4], "step_latency_s": [1.0, 0.5, 0.8, 2.0, math.nan],
        "weighted_lag_steps": [0.0, 1.9, 0.6, 0.0, math.nan],
    })
    assert with_speedup(table)["speedup"].tolist()[:4] == pytest.approx([1.0, 2.0, 1.25, 1.0])
    best = best_under_budget(table).set_index("world_size")
    assert best.loc[8, "best"] == "displaced" and best.loc[4, "best"] == "sync"
    best = best_under_budget(table, max_lag=1.0).set_index("world_size")
    assert best.loc[8, "best"] == "dice" and best.loc[8, "speedup"] == pytest.approx(1.25)
    assert best.loc[8, "feasible"] == "2 of 3"
    best = best_under_budget(table, max_lag=1.0, max_latency_ms=700).set_index("world_size")
    assert best.loc[8, "best"] == "(none within budget)"
    sections = sweep_sections(table, max_lag=1.0)
    assert [s.title for s in sections][0] == "Sweep"
    assert "Skipped and failed configurations" in [s.title for s in sections]


SWEEP_TOML = """
[sweep]
name = "tiny-real"
chunk_size = 4
max_lag = 1.0
[base.model]
name = "tiny"
[base.workload]
steps = 4
batch = 2
[axes]
strategy = ["sync", "interweaved", "dice"]
world_size = [2, 3, 4]
"""


def test_cli_sweep_with_the_simulator_end_to_end(tmp_path, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP_TOML)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert "9 configurations evaluated" in text and "Best strategy" in text
    table = pd.read_parquet(out / "sweep.parquet")
    assert (table["status"] == "ok").sum() == 6 and (table["status"] == "skipped").sum() == 3
    assert (table.loc[table["status"] == "ok", "step_latency_s"] > 0).all()
    assert "Pareto" in (out / "report.html").read_text(encoding="utf-8")
    assert main(["sweep", str(path), "--out", str(out), "--workers", "0"]) == 0
    assert "0 configurations evaluated, 9 reused" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(out / "sweep.parquet"), table)


def test_example_sweep_file_is_valid():
    spec = load_sweep("examples/sweep-xl2.toml")
    assert len(spec.points()) == 162 and spec.base.model == "XL/2"
    assert spec.options.max_lag is not None


def test_cli_sweep_rejects_workers_with_scheduler(tmp_path, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP_TOML)
    code = main(["sweep", str(path), "--out", str(tmp_path), "--workers", "2", "--dask-scheduler", "tcp://x:1"])
    assert code == 2 and "--scheduler" in capsys.readouterr().err
