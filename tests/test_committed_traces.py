"""Every trace committed under traces/ reads back through the shared reader and is valid
trace-event JSON (what Perfetto and chrome://tracing load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicesim.plan import build_plan, lag_table
from dicesim.strategy import STRATEGY_NAMES, ExpertParallelStrategy
from dicesim.trace import read_trace

TRACES = Path(__file__).parents[1] / "traces"
SCHEMA_FILES = sorted(p for p in TRACES.rglob("*") if p.name.endswith((".trace.json", ".events.parquet"))
                      and not p.name.startswith("merged-"))


def _check_trace_event_format(doc: dict) -> None:
    xs = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    assert xs, "no complete events"
    for e in xs:
        assert {"pid", "tid", "ts", "dur", "name"} <= set(e) and e["dur"] >= 0
    named = {(e["pid"], e["tid"]) for e in doc["traceEvents"] if e.get("name") == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in xs} <= named  # every track has a name


def test_there_are_committed_traces():
    assert len(SCHEMA_FILES) > 20


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: str(p.relative_to(TRACES)))
def test_reads_back_through_shared_reader(path):
    df, meta = read_trace(path)
    assert len(df) and meta.source in ("executor", "sim")
    if path.suffix == ".json":
        _check_trace_event_format(json.loads(path.read_text()))


def test_reference_runs_cover_every_strategy_on_2_and_4_ranks():
    have = {(m.strategy, m.world_size) for _, m in (read_trace(p) for p in (TRACES / "reference").glob("*.trace.json"))}
    wanted = {(s, w) for s in STRATEGY_NAMES for w in (2, 4)}
    assert wanted <= have


@pytest.mark.parametrize("strategy", ["displaced", "interweaved", "dice"])
def test_reference_executor_lags_match_the_plan(strategy):
    _, meta = read_trace(TRACES / "reference" / f"validate-tiny-{strategy}-w2-gloo.trace.json")
    summary = meta.extra["summary"]
    # the fields the run recorded: traces made before a preset changed keep their own semantics
    lags = lag_table(build_plan(ExpertParallelStrategy(**meta.scenario["strategy"]), 4, 6))
    per_copy = (lags.kept + lags.dropped) / 2  # top-2: one kept and one dropped copy per token
    assert summary["mean_lag_steps"] == pytest.approx(float(per_copy.mean()))
    assert summary["max_lag_steps"] == lags.max_lag


def test_merged_side_by_side_file_is_valid_trace_event_json():
    doc = json.loads((TRACES / "side-by-side" / "merged-small-w2-b2-dice.trace.json").read_text())
    _check_trace_event_format(doc)
    names = {e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "process_name"}
    assert {"executor rank 0", "executor rank 1", "simulated rank 0", "simulated rank 1"} <= names
