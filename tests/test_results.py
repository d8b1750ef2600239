"""The shared result schema: both halves write it, old files still read, one table holds both."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from dicesim.cli import main
from dicesim.errors import ConfigError
from dicesim.result_files import load_results
from dicesim.results import (
    IDENTITY,
    VERDICT,
    METRICS,
    PER_STEP,
    BAND,
    NESTED,
    RESULT_SCHEMA,
    RunResult,
    result_from_sim,
    results_frame,
)
from dicesim.scenario import make_scenario
from dicesim.sim.api import simulate
from dicesim.sweep import read_chunks
from dicesim.trace import read_trace

EXEC_TRACE = Path("traces/reference/validate-tiny-dice-w2-gloo.trace.json")
SIDE = Path("traces/side-by-side")


def test_sim_record_from_the_simulators_tables():
    sc = make_scenario(model="tiny", world_size=4, batch=2, steps=6, strategy="dice")
    res = simulate(sc)
    rec = result_from_sim(sc, res.summary(), res.per_step)
    s = res.summary()
    assert (rec.source, rec.schema_, rec.steps, rec.batch, rec.world_size) == ("sim", RESULT_SCHEMA, 6, 2, 4)
    assert rec.mean_lag_steps == s["mean_lag"] and rec.weighted_lag_steps == s["weighted_lag"]
    assert rec.max_lag_steps == s["max_lag"] and rec.peak_buffer_bytes == s["peak_buffer_bytes"]
    assert sum(rec.per_step_latency_s) == pytest.approx(rec.total_latency_s)
    assert rec.steady_step_latency_s == pytest.approx(np.mean(rec.per_step_latency_s[1:]))
    assert rec.exposed_comm_step_s * 6 == pytest.approx(rec.exposed_comm_s)
    doc = json.loads(rec.to_json())
    assert doc["schema"] == RESULT_SCHEMA and "collectives" in doc["extra"]


def test_executor_summary_maps_onto_the_schema():
    _, meta = read_trace(EXEC_TRACE)
    old = meta.extra["summary"]  # written before the schema: the executor's own names
    [rec] = load_results(EXEC_TRACE)
    assert rec.source == "executor" and rec.backend == "gloo" and rec.strategy == "dice"
    assert rec.steady_step_latency_s == pytest.approx(old["mean_step_latency_s"])
    assert rec.per_step_latency_s == old["step_latency_s"]
    assert rec.total_latency_s == pytest.approx(sum(old["step_latency_s"]))
    assert rec.weighted_lag_steps == old["score_weighted_mean_lag_steps"]
    assert rec.peak_buffer_bytes == old["peak_held_nbytes"] and rec.mean_lag_steps == old["mean_lag_steps"]
    assert (rec.batch, rec.image_size) == (old["batch_per_rank"], old["image_size_px"])


def test_measured_and_predicted_runs_share_one_table_and_report(tmp_path, capsys):
    sim_json = tmp_path / "sim.json"
    exec_trace = SIDE / "executor-small-w2-b2-dice.trace.json"
    # the committed executor run is `dice` in fp32 (CPU), recorded before cond_gate existed: predict the
    # strategy it records (its fields, read with today's defaults), so the same plan and bytes
    _, meta = read_trace(exec_trace)
    scenario = tmp_path / "run.toml"
    scenario.write_text(tomli_w.dumps({"model": {"name": "small"}, "strategy": meta.scenario["strategy"]}))
    args = ["simulate", str(scenario), "--world-size", "2", "--batch", "2", "--image-size", "64", "--steps", "8",
            "--dtype", "fp32", "--profile", str(SIDE / "cpu-gloo-w2.toml"),
            "--topology", str(SIDE / "cpu-gloo-w2.topology-w2.toml"), "--json"]
    assert main(args) == 0
    sim_json.write_text(capsys.readouterr().out)
    table, report = tmp_path / "both.parquet", tmp_path / "both.html"
    assert main(["results", "table", str(exec_trace), str(sim_json), "--out", str(table), "--report", str(report)]) == 0
    text = capsys.readouterr().out
    assert "executor" in text and "sim" in text and "(steps)" in text and "(ms)" in text
    df = pd.read_parquet(table)
    assert list(df["source"]) == ["executor", "sim"] and (df["model"] == "small").all()
    assert (df[["world_size", "batch", "steps"]].nunique() == 1).all()  # the same scenario, predicted and measured
    assert df["mean_lag_steps"].iloc[0] == pytest.approx(df["mean_lag_steps"].iloc[1])  # one plan, both halves
    html = report.read_text(encoding="utf-8")
    assert "measured solid, predicted dashed" in html
    assert main(["results", "report", str(table), "--out", str(tmp_path / "explore.html")]) == 0
    assert "explorer-controls" in (tmp_path / "explore.html").read_text(encoding="utf-8")


def test_a_simulated_trace_is_a_result_file_too(tmp_path):
    assert main(["simulate", "--model", "tiny", "--world-size", "4", "--batch", "2", "--steps", "4",
                 "--strategy", "interweaved", "--out", str(tmp_path)]) == 0
    [from_trace] = load_results(tmp_path / "interweaved.events.parquet")
    [from_summary] = load_results(tmp_path / "summary.json")
    assert from_trace == from_summary and from_trace.source == "sim"


@pytest.mark.parametrize("content, needle", [
    ("not json", "not valid JSON"),
    ('{"schema": "dicesim-result/9"}', "unknown result schema"),
    ('{"label": "x", "mean_lag": 1.0}', "not a dicesim result"),
    ('{"schema": "dicesim-result/1", "source": "sim"}', "is required"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_result_files_are_one_line_errors(tmp_path, capsys, content, needle):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_results(path)
    assert main(["results", "table", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_old_sweep_chunks_are_read_with_the_schemas_names(tmp_path):
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    pd.DataFrame({"index": [0], "key": ["k"], "status": ["ok"], "mean_lag": [1.5], "weighted_lag": [1.2]}).to_parquet(
        chunks / "chunk-old.parquet")
    df = read_chunks(tmp_path)
    assert df["mean_lag_steps"].tolist() == [1.5] and df["weighted_lag_steps"].tolist() == [1.2]


def test_results_frame_columns_and_docs_list_every_field():
    frame = results_frame([])
    assert list(frame.columns) == ([f.name for f in IDENTITY] + [f.name for f in METRICS] + [f.name for f in VERDICT]
                                   + [f.name for f in BAND])
    names = {f.name for f in IDENTITY + METRICS + VERDICT + PER_STEP + NESTED}
    assert set(RunResult.model_fields) == names | {"schema_", "extra"}  # the documented list is the model
    doc = Path("docs/results.md").read_text(encoding="utf-8")
    for f in IDENTITY + METRICS + VERDICT + PER_STEP + BAND + NESTED:
        assert f"`{f.name}`" in doc, f.name
