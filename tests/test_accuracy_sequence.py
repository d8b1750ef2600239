"""The sequence family's held-out CPU timing check: the committed traces/cpu-seq set and the accuracy
command that predicts it from a calibration fitted on expert-parallel runs only (docs/accuracy-sequence.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dicesim.calibrate.runs import load_runs
from dicesim.calibrate.select import compile_selector, split_runs
from dicesim.cli import main
from dicesim.strategy import family_names

ROOT = Path(__file__).resolve().parent.parent
SEQ = ROOT / "traces" / "cpu-seq"
CPU = ROOT / "traces" / "cpu"
STEM = re.compile(r"^cpu-small-w(\d+)-b(\d+)-([a-z_-]+)-r(\d+)$")
FIT_ON = 'family == "expert_parallel"'
# a small subset that keeps the accuracy run under a few seconds: 2 ranks, batches 1 and 2, one expert strategy
WHERE = 'world_size == 2 and batch in (1, 2) and (family == "sequence" or strategy == "sync")'


def _flag(name: str, default: str) -> str:
    """A flag of the command the README says made the directory (the script's default where not given)."""
    text = (SEQ / "README.md").read_text() if (SEQ / "README.md").is_file() else ""
    m = re.search(rf"make_cpu_traces\.py traces/cpu-seq[^\n]* --{name} (\S+)", text)
    return m[1] if m else default


# what the committed set was made with: adding a preset (``ring``) is one more name in --strategies
STRATEGIES = tuple(_flag("strategies", "").split(","))
WORLD_SIZES = tuple(int(v) for v in _flag("world-sizes", "2,4").split(","))
BATCHES = tuple(int(v) for v in _flag("batches", "1,2,4").split(","))

pytestmark = pytest.mark.skipif(not (SEQ / "README.md").is_file() or not (CPU / "README.md").is_file(),
                                reason="traces/cpu-seq or traces/cpu not present")


def _parquet_stems() -> list[str]:
    return sorted(p.name.removesuffix(".events.parquet") for p in SEQ.glob("*.events.parquet"))


def test_committed_sequence_traces_cover_every_strategy_world_size_and_batch():
    seen: dict[tuple[int, int, str], set[int]] = {}
    for stem in _parquet_stems():
        m = STEM.match(stem)
        assert m, stem
        w, b, s, r = int(m[1]), int(m[2]), m[3], int(m[4])
        seen.setdefault((w, b, s), set()).add(r)
    want = {(w, b, s) for w in WORLD_SIZES for b in BATCHES for s in STRATEGIES}
    assert set(seen) == want
    assert all(reps == {0, 1, 2} for reps in seen.values()), seen
    # Parquet only, but for one Perfetto twin; every run is in the README with its command
    assert [p.name for p in SEQ.glob("*.json")] == ["cpu-small-w2-b2-distrifusion-r0.trace.json"]
    readme = (SEQ / "README.md").read_text()
    for w, b, s in want:
        assert (f"`cpu-small-w{w}-b{b}-{s}-r{{0..2}}` | `python -m validate run --world-size {w} --backend gloo "
                f"--model small --strategy {s} --steps 8 --batch {b} --image-size 64") in readme
    assert {"sp", "distrifusion", "ulysses", "ring"} <= set(STRATEGIES)
    assert "other processes may have been running" in readme
    assert sum(p.stat().st_size for p in SEQ.iterdir()) < 5 * 2**20


def test_sequence_traces_read_as_the_sequence_family():
    runs = load_runs([str(SEQ / f"cpu-small-w2-b1-{s}-r0.events.parquet") for s in STRATEGIES])
    assert len(runs) == len(STRATEGIES) >= 3
    assert {r.family for r in runs} == {"sequence"}
    assert {r.strategy_name for r in runs} == set(STRATEGIES)
    assert all(r.world_size == 2 and r.batch == 1 and r.steps == 8 for r in runs)
    fit, held = split_runs(runs, FIT_ON)
    assert fit == [] and len(held) == len(STRATEGIES)


def test_accuracy_predicts_every_sequence_strategy_fitted_on_expert_runs_only(capsys):
    assert main(["accuracy", str(CPU), str(SEQ), "--where", WHERE, "--fit-on", FIT_ON, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    s = doc["summary"]
    assert s["fit_families"] == ["expert_parallel"] and s["held_out_families"] == ["sequence"]
    assert set(s["per_strategy"]) == set(STRATEGIES)
    for name, v in s["per_strategy"].items():
        assert v["family"] == "sequence" and v["n"] == 2, name
        for k in ("median_abs_step_err", "max_abs_step_err", "median_abs_exposed_err_of_step",
                  "max_abs_exposed_err_of_step"):
            assert 0 <= v[k] < 5, (name, k)  # a sanity bound, not the accuracy claim
    held = [r for r in doc["rows"] if r["held_out"]]
    assert {r["strategy"] for r in held} == set(STRATEGIES) and {r["batch"] for r in held} == {1, 2}
    assert all(r["family"] == "sequence" for r in held)
    assert all(r["family"] == "expert_parallel" for r in doc["rows"] if not r["held_out"])
    assert all(r["predicted_step_latency_s"] > 0 and r["measured_step_latency_s"] > 0 for r in held)


def test_accuracy_text_output_reports_every_sequence_strategy(capsys):
    assert main(["accuracy", str(CPU), str(SEQ), "--where", WHERE, "--fit-on", FIT_ON]) == 0
    out = capsys.readouterr().out
    assert "fitted on: expert_parallel; held out: sequence" in out
    for name in STRATEGIES:
        assert re.search(rf"^strategy {name} +2 held out: step \|error\| median .*exposed comm", out, re.M), name


FAMILIES = ", ".join(family_names())  # expert_parallel, sequence (and any family registered later)


@pytest.mark.parametrize("expr, needle", [
    ('family == "expert"', f"unknown family 'expert' (allowed: {FAMILIES})"),
    ('family in ("expert_parallel", "seq")', f"unknown family 'seq' (allowed: {FAMILIES})"),
    ('famly == "sequence"', "unknown name 'famly'"),
])
def test_bad_family_selector_is_a_one_line_error_with_the_allowed_values(expr, needle, capsys):
    assert main(["accuracy", str(CPU), str(SEQ), "--fit-on", expr]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert "family" in err


def test_family_selector_values():
    pred = compile_selector(FIT_ON, choices={"family": family_names()})
    assert pred({"family": "expert_parallel"}) and not pred({"family": "sequence"})
    # without known values the selector stays the plain grammar (the published set's own fields)
    assert not compile_selector('family == "x"', ("family",))({"family": "y"})


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _make_cpu_traces():
    return _load_script("make_cpu_traces")


def test_trace_script_refuses_an_unknown_strategy_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _make_cpu_traces().main([str(tmp_path / "out"), "--strategies", "sp,rign"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown strategy preset rign" in err and "allowed: " in err and "ulysses" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="gloo ranks on linux only")
def test_trace_script_runs_a_sequence_preset_on_gloo_ranks(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "seq"
    # a child process: the ranks are spawned and import the script's rank function by its module
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_cpu_traces.py"), str(out), "--world-sizes",
                           "2", "--batches", "1", "--steps", "2", "--reps", "1", "--strategies", "sp", "--json-for",
                           "none"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = load_runs([str(out)])
    assert [(r.stem, r.family, r.world_size) for r in runs] == [("cpu-small-w2-b1-sp-r0", "sequence", 2)]
    assert (runs[0].events["name"] == "token_gather").any()
    readme = (out / "README.md").read_text()
    assert "sequence family" in readme and "--strategies sp" in readme and "--fit-on 'family ==" in readme


def test_time_split_partitions_each_ranks_steps():
    """ops + gaps + waits = the compute track's span from the end of step 0 to the end of the run, per rank."""
    split = _load_script("trace_time_split")
    run = load_runs([str(SEQ / "cpu-small-w2-b1-sp-r0.events.parquet")])[0]
    parts = split.time_split_ms(run)
    ev = run.events[(run.events["stream"] == "compute") & run.events["kind"].isin(("compute", "wait"))]
    span_ms = sum(g["end_us"].max() - g.loc[g["step"] == 0, "end_us"].max() for _, g in ev.groupby("rank")) / 1e3
    steps = run.steps - 1
    assert sum(parts.values()) * steps * run.world_size == pytest.approx(span_ms, rel=1e-9)
    assert parts["gap_before_waits"] > 0 and parts["ops"] > 0
