"""Hostile-input fuzzing of every reader (shared by tests/test_fuzz_inputs.py and
benchmarks/fuzz_inputs.py).

Each :class:`Reader` starts from a valid file that the project's own writers make or that is
committed (the published set, the acceptance file, the digits checkpoint), mutates it
(:mod:`fuzz_mutate`: structured and byte-level) and feeds it to a CLI command in this
process. :func:`verdict` says whether the command ended cleanly: exit code 0 or 2, at most 3
lines of ``error: ...`` on stderr, no traceback, and nothing left in the output directory
after an error.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from hypothesis import strategies as st

from fuzz_mutate import mutate_bytes, mutate_checkpoint, mutate_csv, mutate_doc, mutate_npy, mutate_parquet

ROOT = Path(__file__).resolve().parents[1]
EXEC_TRACE = ROOT / "traces" / "reference" / "validate-tiny-dice-w2-gloo.trace.json"
KINETO_TRACE = ROOT / "tests" / "data" / "kineto-h200-tiny-b2.pt.trace.json.gz"
PUBLISHED = ROOT / "traces" / "published" / "nvswitch.toml"
ACCEPTANCE = ROOT / "traces" / "acceptance" / "dice-paper.toml"
DIGITS_CHECKPOINT = ROOT / "validate" / "data" / "digits" / "dit_moe_digits.pt"
TINY = ["--model", "tiny", "--topology", "tiny-ring4", "--world-size", "4", "--steps", "2", "--batch", "1",
        "--image-size", "32"]
#: multiplies the examples of the property and stateful tests (tests/test_hostile_*.py); the long
#: run (benchmarks/fuzz_inputs.py --scale N) sets it, CI runs them at 1
FUZZ_SCALE = max(int(os.environ.get("DICESIM_FUZZ_SCALE", "1") or 1), 1)

# --- seeds: valid files made by the project's own writers ---------------------------------
def make_seeds(d: Path) -> Path:
    """Write every reader's valid seed file into directory ``d``; returns ``d``."""
    from dicesim.topology import get_topology, save_graphml, save_toml

    d.mkdir(parents=True, exist_ok=True)
    (d / "scenario.toml").write_text(tomli_w.dumps({
        "model": {"name": "tiny"}, "workload": {"batch": 1, "image_size": 32, "steps": 2},
        "strategy": {"preset": "dice", "cond_policy": "low"}, "topology": {"name": "tiny-ring4", "world_size": 4},
        "routing": {"kind": "zipf", "alpha": 1.2}, "profile": {"file": "rtx4090"}}))
    (d / "sweep.toml").write_text(tomli_w.dumps({
        "sweep": {"name": "fuzz", "chunk_size": 2},
        "base": {"model": {"name": "tiny"}, "workload": {"batch": 1, "image_size": 32, "steps": 2},
                 "topology": {"name": "tiny-ring4", "world_size": 4}, "profile": {"file": "rtx4090"}},
        "axes": {"strategy": ["sync", "dice"], "sync_layers": [[0, 1]], "batch": [1]}}))
    # the sequence family (sp, distrifusion) through the same readers: its [strategy] fields and its sweeps
    (d / "scenario-sp.toml").write_text(tomli_w.dumps({
        "model": {"name": "tiny"}, "workload": {"batch": 1, "image_size": 32, "steps": 3},
        "strategy": {"preset": "distrifusion", "warmup_steps": 1}, "topology": {"name": "tiny-ring4", "world_size": 4},
        "profile": {"file": "rtx4090"}}))
    (d / "sweep-sp.toml").write_text(tomli_w.dumps({
        "sweep": {"name": "fuzz-sp", "chunk_size": 2},
        "base": {"model": {"name": "tiny"}, "workload": {"batch": 1, "image_size": 32, "steps": 3},
                 "topology": {"name": "tiny-ring4", "world_size": 4}, "profile": {"file": "rtx4090"}},
        "axes": {"strategy": ["sp", "distrifusion"], "warmup_steps": [0, 1]}}))
    G = get_topology("tiny-ring4")
    save_toml(G, d / "topology.toml")
    save_graphml(G, d / "topology.graphml")
    shutil.copy(ROOT / "dicesim" / "data" / "profiles" / "rtx4090.toml", d / "profile.toml")
    write_result_seeds(d)
    shutil.copy(EXEC_TRACE, d / "exec.trace.json")
    shutil.copy(KINETO_TRACE, d / "kineto.trace.json.gz")
    hist = np.arange(1, 17, dtype=float).reshape(4, 4)
    np.save(d / "hist.npy", hist)
    np.savetxt(d / "hist.csv", hist, delimiter=",")
    make_checkpoint(d / "tiny.pt")
    shutil.copy(DIGITS_CHECKPOINT, d / "digits.pt")
    shutil.copy(PUBLISHED, d / "published.toml")
    shutil.copy(ROOT / "docs" / "accuracy.md", d / "accuracy.md")
    (d / "acceptance.toml").write_text(tomli_w.dumps(tiny_acceptance(tomllib.loads(ACCEPTANCE.read_text()))))
    (d / "study.toml").write_text(tomli_w.dumps({"study": {
        "name": "fuzz", "models": ["tiny"], "topologies": ["4x-l40s-pcie"], "world_sizes": [4], "batches": [1, 2],
        "image_sizes": [32],
        "strategies": ["dice"], "steps": 2, "chunk_size": 2}}))
    return d


def tiny_acceptance(doc: dict) -> dict:
    """The committed acceptance file on the tiny setting: same schema and figures, but each
    prediction simulates the tiny model on 4 GPUs for 2 steps (milliseconds, not seconds)."""
    doc["setting"] = {"topology": "tiny-ring4", "world_size": 4, "image_size": 32, "steps": 2, "batches": [1],
                      "profile": "rtx4090"}
    for fig in doc["figure"]:
        fig["models"] = ["tiny"]
    return doc


def write_result_seeds(d: Path) -> None:
    """A simulated run as a trace carrying its result (JSON and Parquet), its `simulate --json`
    record, and the `results table` of it and the committed executor run (Parquet and CSV)."""
    from dicesim.compare import run_strategy
    from dicesim.result_files import load_results
    from dicesim.results import results_frame
    from dicesim.scenario import make_scenario

    sc = make_scenario(model="tiny", strategy="dice", topology="tiny-ring4", world_size=4, steps=2, batch=1,
                       image_size=32, profile="rtx4090")
    run = run_strategy(sc, trace_dir=d, trace_format="json")  # dice.trace.json and dice.events.parquet
    (d / "result.json").write_text(run.result.to_json(indent=2) + "\n")
    table = results_frame([run.result, *load_results(EXEC_TRACE)])
    table.to_parquet(d / "table.parquet", index=False)
    table.to_csv(d / "table.csv", index=False)


def make_checkpoint(path: Path) -> None:
    """A valid checkpoint of the ``tiny`` model for 32 px images."""
    from dicesim.models import get_model
    from validate.model.checkpoint import save_checkpoint
    from validate.model.model import DiTMoE

    save_checkpoint(DiTMoE.for_image(get_model("tiny"), 32, seed=1), path)


# --- running a command and judging how it ended -------------------------------------------
@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    crash: str = ""  # the traceback of an exception that escaped the CLI


def run_cli(argv: list[str], *, executor: bool = False) -> Outcome:
    """Run ``dicesim`` (or ``python -m validate``) in this process, capturing both streams."""
    if executor:
        from validate.cli import main
    else:
        from dicesim.cli import main
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except BaseException:  # noqa: BLE001 -- an escaping exception is the finding
        return Outcome(None, out.getvalue(), err.getvalue(), traceback.format_exc())
    return Outcome(code, out.getvalue(), err.getvalue())


def verdict(o: Outcome, out_path: Path | None = None, *, expect_error: bool = False, gate: bool = False) -> str | None:
    """None when the command ended cleanly; otherwise what was wrong, in one line. ``gate``: exit 1
    is a clean answer too (``accuracy --paper``: a figure outside its band)."""
    if o.crash:
        return "exception escaped: " + o.crash.strip().splitlines()[-1]
    if "Traceback" in o.err:
        return "traceback on stderr"
    if o.code not in ((2,) if expect_error else (0, 1, 2) if gate else (0, 2)):
        return f"exit code {o.code}"
    if o.code == 0 and o.out.lstrip().startswith("{"):  # an accepted input gives finite results
        problem = _non_finite_json(o.out)
        if problem:
            return problem
    if o.code == 2:
        lines = [line for line in o.err.splitlines() if line.strip()]
        if not lines or len(lines) > 3 or not lines[0].startswith("error: "):
            return f"error message of {len(lines)} lines: {o.err[:200]!r}"
        if out_path is not None and out_path.exists():
            return f"output {out_path.name} left behind after an error"
        if out_path is not None:
            litter = [p.name for p in out_path.parent.iterdir() if p.name.endswith((".tmp", ".lock"))]
            if litter:
                return f"temporary files left behind: {litter}"
    return None


def _non_finite_json(text: str) -> str | None:
    """'non-finite ...' when JSON output on stdout holds NaN or infinity (as literals or strings)."""
    def constant(name: str) -> float:
        raise ValueError(name)

    for line in text.splitlines():
        if not line.strip().startswith("{"):
            continue
        try:
            doc = json.loads(line, parse_constant=constant)
        except ValueError as exc:
            return f"non-finite number {exc} in the JSON an accepted input printed"
        stack = [doc]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                stack += v.values()
            elif isinstance(v, list):
                stack += v
            elif isinstance(v, float) and not math.isfinite(v):
                return "non-finite number in the JSON an accepted input printed"
    return None


# --- readers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reader:
    """One input boundary: its seed file, how to mutate it, and the command that reads it."""

    name: str
    seed: str  # file name in the seed directory (make_seeds)
    fmt: str  # toml, json, bytes, parquet, npy, csv, checkpoint
    argv: Callable[[Path, Path], list[str]]  # (input file, output path) -> CLI arguments
    writes: bool = False  # the command writes the output path
    executor: bool = False
    expect_error: bool = False  # every input ends in exit 2 (the command is set up to stop before work)
    gate: bool = False  # exit 1 answers the question (a check that failed), not a crash
    focus: tuple = ()
    out: str = "out"  # name of the output path in the work directory


def _check(f: Path, o: Path) -> list[str]:
    return ["check", str(f)]


def _results_table(f: Path, o: Path) -> list[str]:
    return ["results", "table", str(f), "--out", str(o)]


def _simulate_histogram(f: Path, o: Path) -> list[str]:
    return ["simulate", *TINY, "--profile", "rtx4090", "--histogram", str(f), "--json"]


#: calibration stops after every trace is read and typed when --where matches nothing
_CALIBRATE_NOTHING = ("--where", "batch == 12345")
#: 65 gloo ranks are past the executor's limit: the digits study stops right after its checkpoint is checked
_DIGITS_STOP = ("--seeds", "2", "--images", "130", "--world-sizes", "65")

READERS: tuple[Reader, ...] = (
    Reader("scenario", "scenario.toml", "toml", _check),
    Reader("sweep", "sweep.toml", "toml", lambda f, o: ["sweep", str(f), "--out", str(o), "--workers", "0"],
           writes=True),
    Reader("scenario-sp", "scenario-sp.toml", "toml", lambda f, o: ["simulate", str(f), "--json"]),
    Reader("sweep-sp", "sweep-sp.toml", "toml", lambda f, o: ["sweep", str(f), "--out", str(o), "--workers", "0"],
           writes=True),
    Reader("topology-toml", "topology.toml", "toml", _check),
    Reader("topology-graphml", "topology.graphml", "bytes", _check),
    Reader("profile", "profile.toml", "toml", lambda f, o: ["simulate", *TINY, "--profile", str(f), "--json"]),
    Reader("trace-json", "dice.trace.json", "json", lambda f, o: ["trace", "summary", str(f)], focus=("otherData",)),
    Reader("trace-parquet", "dice.events.parquet", "parquet", _check),
    Reader("calibrate-meta", "exec.trace.json", "json",
           lambda f, o: ["calibrate", str(f), "--out", str(o), *_CALIBRATE_NOTHING],
           writes=True, expect_error=True, focus=("otherData",), out="out.toml"),
    Reader("kineto", "kineto.trace.json.gz", "json",
           lambda f, o: ["calibrate", str(f), "--out", str(o), *_CALIBRATE_NOTHING],
           writes=True, expect_error=True, out="out.toml"),
    Reader("histogram-npy", "hist.npy", "npy", _simulate_histogram),
    Reader("histogram-csv", "hist.csv", "csv", _simulate_histogram),
    Reader("checkpoint", "tiny.pt", "checkpoint",
           lambda f, o: ["quality", "--model", "tiny", "--steps", "2", "--image-size", "32", "--batch", "1",
                         "--strategies", "displaced", "--checkpoint", str(f), "--out", str(o)],
           writes=True, executor=True, out="quality.md"),
    # readers added after the hostile-input work
    Reader("published", "published.toml", "toml",
           lambda f, o: ["accuracy", "--published", str(f), "--no-cross-validation", "--write-model", str(o),
                         "--json"],
           writes=True, out="nccl.toml"),
    Reader("acceptance", "acceptance.toml", "toml", lambda f, o: ["accuracy", "--paper", str(f), "--json"],
           gate=True),
    Reader("study", "study.toml", "toml", lambda f, o: ["study", str(f), "--out", str(o), "--workers", "0"],
           writes=True),
    Reader("result-json", "result.json", "json", lambda f, o: [*_results_table(f, o), "--report", str(o) + ".html"],
           writes=True, out="table.csv"),
    Reader("result-trace", "dice.trace.json", "json", _results_table, writes=True,
           focus=("otherData", "extra", "result"), out="table.csv"),
    Reader("result-summary", "exec.trace.json", "json", _results_table, writes=True,
           focus=("otherData", "extra", "summary"), out="table.csv"),
    Reader("result-parquet", "dice.events.parquet", "parquet", _results_table, writes=True, out="table.csv"),
    Reader("table-parquet", "table.parquet", "parquet",
           lambda f, o: ["results", "report", str(f), "--out", str(o)], writes=True, out="report.html"),
    Reader("table-csv", "table.csv", "csv",
           lambda f, o: ["results", "report", str(f), "--out", str(o)], writes=True, out="report.html"),
    # the page `--out` rewrites is read too: its other writers' marked sections are kept
    Reader("accuracy-page", "accuracy.md", "bytes",
           lambda f, o: ["accuracy", "--published", str(PUBLISHED), "--no-cross-validation", "--out", str(f),
                         "--json"]),
    Reader("check-published", "published.toml", "toml", _check),
    Reader("check-acceptance", "acceptance.toml", "toml", _check),
    Reader("check-study", "study.toml", "toml", _check),
    Reader("check-result", "result.json", "json", _check),
    Reader("check-table", "table.parquet", "parquet", _check),
    Reader("digits-checkpoint", "digits.pt", "checkpoint",
           lambda f, o: ["quality", "--model", "digits", "--checkpoint", str(f), *_DIGITS_STOP, "--out", str(o)],
           writes=True, executor=True, expect_error=True, out="quality.md"),
)


def load_seed(reader: Reader, seeds: Path) -> Any:
    """The seed as the structure that structured mutations work on (None: bytes only)."""
    path = seeds / reader.seed
    if reader.fmt == "toml":
        return tomllib.loads(path.read_text())
    if reader.fmt == "json":
        import gzip

        raw = path.read_bytes()
        return json.loads(gzip.decompress(raw) if path.name.endswith(".gz") else raw)
    return None


@st.composite
def hostile_file(draw: st.DrawFn, reader: Reader, seeds: Path) -> tuple[str, bytes]:
    """``(how, bytes)``: a mutated version of ``reader``'s seed file in ``seeds``."""
    path = seeds / reader.seed
    raw = path.read_bytes()
    if reader.fmt == "bytes" or draw(st.integers(0, 3)) == 0:
        return "bytes", mutate_bytes(draw, raw)
    if reader.fmt in ("toml", "json"):
        doc = mutate_doc(draw, load_seed(reader, seeds), toml=reader.fmt == "toml", focus=reader.focus)
        text = tomli_w.dumps(doc) if reader.fmt == "toml" else json.dumps(doc)
        data = text.encode("utf-8")
        if path.name.endswith(".gz"):
            import gzip

            data = gzip.compress(data, mtime=0)
        return "structured", data
    if reader.fmt == "parquet":
        return "structured", mutate_parquet(draw, path)
    if reader.fmt == "csv":
        return "structured", mutate_csv(draw, raw)
    if reader.fmt == "npy":
        return "structured", mutate_npy(draw)
    return "structured", mutate_checkpoint(draw, path)


def out_path(reader: Reader, work: Path) -> Path:
    """Where ``reader``'s command writes."""
    return work / reader.out


def command_line(reader: Reader) -> str:
    """The reader's command for tables, with the tiny scenario's flags shortened to ``...`` and
    committed files named from the repository root."""
    argv = " ".join(reader.argv(Path("FILE"), Path("OUT")))
    return argv.replace(" ".join(TINY), "...").replace(f"{ROOT}/", "")


def try_input(reader: Reader, data: bytes, work: Path) -> tuple[Outcome, str | None]:
    """Write ``data`` as the reader's input in an empty ``work`` dir, run its command, judge it."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    f = work / reader.seed
    f.write_bytes(data)
    out = out_path(reader, work)
    o = run_cli(reader.argv(f, out), executor=reader.executor)
    return o, verdict(o, out if reader.writes else None, expect_error=reader.expect_error, gate=reader.gate)
