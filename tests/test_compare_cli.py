"""`dicesim simulate` and `dicesim compare`: JSON contract, files written, speedup baseline."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dicesim.cli import main
from dicesim.compare import TABLE_COLUMNS, compare_strategies, default_timeline_steps, resolve_scenario
from dicesim.strategy import COMPARE_DEFAULT
from dicesim.trace import read_trace

TINY = ["--model", "tiny", "--world-size", "4", "--batch", "2", "--steps", "6"]
SUMMARY_KEYS = ("step_latency_s", "total_latency_s", "exposed_comm_s", "overlap_frac", "comm_frac", "mean_lag_steps",
                "weighted_lag_steps", "max_lag_steps", "peak_buffer_bytes")


def test_simulate_json_is_one_object_with_the_summary_keys(capsys):
    assert main(["simulate", *TINY, "--strategy", "dice", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    doc = json.loads(out)
    for key in SUMMARY_KEYS + ("label", "exposed_comm_step_s"):
        assert key in doc, key
    assert doc["label"] == "tiny x4 8x-rtx4090-pcie b2 256px 6 steps dice"
    assert doc["step_latency_s"] > 0 and doc["total_latency_s"] == pytest.approx(6 * doc["step_latency_s"])
    assert doc["weighted_lag_steps"] > 0  # dice runs layers asynchronously
    assert doc["schema"] == "dicesim-result/1" and doc["source"] == "sim"
    assert len(doc["per_step_latency_s"]) == 6 and sum(doc["per_step_latency_s"]) == pytest.approx(
        doc["total_latency_s"])


def test_simulate_flags_override_the_scenario_file(tmp_path, capsys):
    path = tmp_path / "sc.toml"
    path.write_text('[model]\nname = "tiny"\n[workload]\nbatch = 2\nsteps = 3\n[strategy]\npreset = "displaced"\n'
                    '[topology]\nworld_size = 2\n')
    assert main(["simulate", str(path), "--steps", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["label"] == "tiny x2 8x-rtx4090-pcie b2 256px 5 steps displaced"


def test_resolve_scenario_overrides():
    sc = resolve_scenario(model="tiny", world_size=2, strategy="dice", zipf_alpha=1.3)
    assert (sc.model, sc.world_size, sc.strategy.name) == ("tiny", 2, "dice")
    assert (sc.routing.kind, sc.routing.alpha) == ("zipf", 1.3)  # alpha alone switches to Zipf
    default = resolve_scenario()
    assert (default.model, default.topology, default.world_size, default.batch, default.image_size,
            default.steps) == ("XL/2", "8x-rtx4090-pcie", 8, 32, 256, 50)


def test_simulate_out_writes_tables_trace_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", *TINY, "--strategy", "interweaved", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "step latency (ms)" in text and "peak buffer (MiB)" in text and "GB/s" in text
    for name in ("per_step.parquet", "lags.parquet", "links.parquet", "summary.json", "report.html",
                 "interweaved.trace.json.gz", "interweaved.events.parquet"):
        assert (out / name).is_file(), name
    assert len(pd.read_parquet(out / "per_step.parquet")) == 6
    events, meta = read_trace(out / "interweaved.trace.json.gz")  # compressed by default (--traces gz)
    assert meta.strategy == "interweaved" and meta.world_size == 4 and len(events) > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_simulate_bad_flag_is_one_line_exit_2(capsys):
    assert main(["simulate", "--model", "tiny", "--world-size", "3", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().count("\n") == 0 and "world_size: 3 GPUs cannot hold" in captured.err


def test_compare_lists_every_strategy_with_sync_speedup_one(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *TINY, "--out", str(out), "--workers", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["strategy"]: r for r in doc["strategies"]}
    # the tiny model's 2 heads do not split over 4 GPUs: the default listing leaves Ulysses out, saying why
    runnable = [n for n in COMPARE_DEFAULT if n != "ulysses"]
    assert list(rows) == runnable
    assert "Left out, cannot run here: ulysses (world_size: 2 heads do not split over 4 ranks" in doc["verdict"]
    assert rows["sync"]["speedup"] == 1.0
    for r in rows.values():
        assert r["speedup"] == pytest.approx(rows["sync"]["step_latency_s"] / r["step_latency_s"])
    csv = pd.read_csv(out / "summary.csv")
    assert list(csv.columns) == list(TABLE_COLUMNS) and list(csv["strategy"]) == runnable
    pd.testing.assert_frame_equal(pd.read_parquet(out / "summary.parquet"), csv, check_dtype=False)
    assert not (out / "ulysses.trace.json.gz").exists()
    for name in runnable:
        assert (out / f"{name}.trace.json.gz").is_file()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("plotly.js v") == 1 and "Timeline: dice" in html and "router-weighted lag" in html


def test_compare_table_printed_with_units(tmp_path, capsys):
    assert main(["compare", *TINY, "--strategies", "sync,dice", "--out", str(tmp_path), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    for header in ("step latency", "(ms)", "speedup over", "(x)", "(%)", "(steps)", "(MiB)"):
        assert header in text, header
    assert "1.00" in text and "dice" in text


def test_compare_without_sync_still_uses_sync_as_baseline():
    sc = resolve_scenario(model="tiny", world_size=4, batch=2, steps=6)
    with_sync = compare_strategies(sc, ["sync", "dice"], record=False).table.set_index("strategy")
    no_sync = compare_strategies(sc, ["dice"], record=False).table.set_index("strategy")
    assert list(no_sync.index) == ["dice"]
    assert no_sync.loc["dice", "speedup"] == pytest.approx(with_sync.loc["dice", "speedup"])
    assert with_sync.loc["sync", "speedup"] == 1.0


def test_parallel_compare_matches_serial(tmp_path):
    sc = resolve_scenario(model="tiny", world_size=4, batch=2, steps=6)
    serial = compare_strategies(sc, ["sync", "displaced", "dice"], workers=1, trace_dir=tmp_path / "a")
    parallel = compare_strategies(sc, ["sync", "displaced", "dice"], workers=2, trace_dir=tmp_path / "b")
    pd.testing.assert_frame_equal(serial.table, parallel.table)
    assert all(r.events is not None and set(r.events["step"]) <= {2, 3} for r in parallel.runs)


def test_unknown_strategy_in_list_is_one_line(capsys, tmp_path):
    assert main(["compare", *TINY, "--strategies", "sync,dicey", "--out", str(tmp_path)]) == 2
    assert "unknown strategy 'dicey'" in capsys.readouterr().err


def test_default_timeline_steps():
    assert default_timeline_steps(50) == (2, 3)
    assert default_timeline_steps(3) == (1, 2)
    assert default_timeline_steps(1) == (0,)
