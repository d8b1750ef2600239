"""Hostile-input fuzzing of every reader (shared by tests/test_fuzz_inputs.py and
benchmarks/fuzz_inputs.py).

Each :class:`Reader` starts from a valid file that the project's own writers make, mutates it
(structured: wrong types, missing and unknown keys, extra nesting, NaN/inf, huge integers;
byte-level: truncation, flipped and inserted bytes, random bytes) and feeds it to a CLI
command in this process. :func:`verdict` says whether the command ended cleanly: exit code 0
or 2, at most 3 lines of ``error: ...`` on stderr, no traceback, and nothing left in the output
directory after an error.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
EXEC_TRACE = ROOT / "traces" / "reference" / "validate-tiny-dice-w2-gloo.trace.json"
KINETO_TRACE = ROOT / "tests" / "data" / "kineto-h200-tiny-b2.pt.trace.json.gz"
TINY = ["--model", "tiny", "--topology", "tiny-ring4", "--world-size", "4", "--steps", "2", "--batch", "1",
        "--image-size", "32"]

# --- replacement values: what a hostile or careless writer puts where a value was ---------
HUGE_INTS = (2**63, -(2**63) - 1, 2**64 + 1, 10**30, -(10**40))
NON_FINITE = (math.nan, math.inf, -math.inf)


def _nested(value: object, depth: int) -> object:
    for _ in range(depth):
        value = [value]
    return value


def replacement(draw: st.DrawFn, *, toml: bool) -> object:
    """A value of the wrong type, range or shape (TOML has no null: None is left out there)."""
    kinds = ["huge", "nonfinite", "string", "bool", "list", "table", "nested", "negative", "zero", "float", "empty"]
    if not toml:
        kinds.append("null")
    kind = draw(st.sampled_from(kinds))
    if kind == "huge":
        return draw(st.sampled_from(HUGE_INTS))
    if kind == "nonfinite":
        return draw(st.sampled_from(NON_FINITE))
    if kind == "string":
        return draw(st.sampled_from(["", "x", "two", "1e3", "-1", "nan", "\x00", "é" * 3, "[", "{}"]))
    if kind == "bool":
        return draw(st.booleans())
    if kind == "list":
        return draw(st.lists(st.integers(-3, 3), max_size=3))
    if kind == "table":
        return {"x": draw(st.integers(-2, 2))}
    if kind == "nested":
        return _nested(1, draw(st.integers(20, 60)))
    if kind == "negative":
        return -draw(st.integers(1, 10**6))
    if kind == "zero":
        return 0
    if kind == "float":
        return draw(st.sampled_from([0.5, -0.5, 1e300, -1e-300, 3.0]))
    if kind == "empty":
        return draw(st.sampled_from([[], {}]))
    return None


def _paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside ``doc`` (dict keys and list indices), lists cut at 4 items."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:4]):
            out += _paths(v, prefix + (i,))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def mutate_doc(draw: st.DrawFn, doc: Any, *, toml: bool, focus: tuple = ()) -> Any:
    """A deep copy of ``doc`` with one structured mutation (paths under ``focus`` are preferred)."""
    doc = json.loads(json.dumps(doc))
    paths = _paths(doc)
    focused = [p for p in paths if p[: len(focus)] == focus] if focus else []
    path = draw(st.sampled_from(focused if focused and draw(st.booleans()) else paths))
    parent, key = _get(doc, path[:-1]), path[-1]
    op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "wrap"]))
    if op == "delete" and not (isinstance(parent, list) and toml and len(parent) == 1):
        del parent[key]
    elif op == "add" and isinstance(parent, dict):
        parent[draw(st.sampled_from(["zz_unknown", "batch", "model", "steps", "router_hist", "schema_version"]))] = \
            replacement(draw, toml=toml)
    elif op == "wrap":
        parent[key] = _nested(parent[key], draw(st.integers(2, 50)))
    else:
        parent[key] = replacement(draw, toml=toml)
    return doc


def mutate_bytes(draw: st.DrawFn, raw: bytes) -> bytes:
    """Truncation, flipped bytes, inserted bytes, a duplicated slice or random bytes."""
    op = draw(st.sampled_from(["truncate", "flip", "insert", "duplicate", "random"]))
    if op == "random" or not raw:
        return draw(st.binary(max_size=256))
    i = draw(st.integers(0, len(raw) - 1))
    if op == "truncate":
        return raw[:i]
    if op == "flip":
        n = draw(st.integers(1, 8))
        b = bytearray(raw)
        for j in range(i, min(i + n, len(b))):
            b[j] ^= draw(st.integers(1, 255))
        return bytes(b)
    if op == "insert":
        return raw[:i] + draw(st.binary(min_size=1, max_size=16)) + raw[i:]
    j = draw(st.integers(i, min(len(raw), i + 64)))
    return raw[:j] + raw[i:j] * draw(st.integers(2, 50)) + raw[j:]


# --- seeds: valid files made by the project's own writers ---------------------------------
def make_seeds(d: Path) -> Path:
    """Write every reader's valid seed file into directory ``d``; returns ``d``."""
    from dicesim.sim.api import simulate
    from dicesim.topology import get_topology, save_graphml, save_toml
    from dicesim.trace import TraceMeta, write_trace

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
    G = get_topology("tiny-ring4")
    save_toml(G, d / "topology.toml")
    save_graphml(G, d / "topology.graphml")
    shutil.copy(ROOT / "dicesim" / "data" / "profiles" / "rtx4090.toml", d / "profile.toml")
    res = simulate(model="tiny", strategy="dice", topology="tiny-ring4", world_size=4, steps=2, batch=1,
                   image_size=32, profile="rtx4090", record=True)
    meta = TraceMeta(source="sim", scenario=res.meta["scenario"], strategy="dice", world_size=4, model="tiny")
    write_trace(res.events, meta, d, "sim")
    shutil.copy(EXEC_TRACE, d / "exec.trace.json")
    shutil.copy(KINETO_TRACE, d / "kineto.trace.json.gz")
    hist = np.arange(1, 17, dtype=float).reshape(4, 4)
    np.save(d / "hist.npy", hist)
    np.savetxt(d / "hist.csv", hist, delimiter=",")
    make_checkpoint(d / "tiny.pt")
    return d


def make_checkpoint(path: Path) -> None:
    """A valid checkpoint of the ``tiny`` model for 32 px images."""
    from dicesim.models import get_model
    from validate.checkpoint import save_checkpoint
    from validate.model import DiTMoE

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


def verdict(o: Outcome, out_path: Path | None = None, *, expect_error: bool = False) -> str | None:
    """None when the command ended cleanly; otherwise what was wrong, in one line."""
    if o.crash:
        return "exception escaped: " + o.crash.strip().splitlines()[-1]
    if "Traceback" in o.err:
        return "traceback on stderr"
    if o.code not in ((2,) if expect_error else (0, 2)):
        return f"exit code {o.code}"
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
    focus: tuple = ()


READERS: tuple[Reader, ...] = (
    Reader("scenario", "scenario.toml", "toml", lambda f, o: ["check", str(f)]),
    Reader("sweep", "sweep.toml", "toml", lambda f, o: ["sweep", str(f), "--out", str(o), "--workers", "0"],
           writes=True),
    Reader("topology-toml", "topology.toml", "toml", lambda f, o: ["check", str(f)]),
    Reader("topology-graphml", "topology.graphml", "bytes", lambda f, o: ["check", str(f)]),
    Reader("profile", "profile.toml", "toml", lambda f, o: ["simulate", *TINY, "--profile", str(f), "--json"]),
    Reader("trace-json", "sim.trace.json", "json", lambda f, o: ["trace", "summary", str(f)], focus=("otherData",)),
    Reader("trace-parquet", "sim.events.parquet", "parquet", lambda f, o: ["check", str(f)]),
    # --where that matches nothing stops calibration after every trace is read and typed
    Reader("calibrate-meta", "exec.trace.json", "json",
           lambda f, o: ["calibrate", str(f), "--out", str(o), "--where", "batch == 12345"],
           writes=True, expect_error=True, focus=("otherData",)),
    Reader("kineto", "kineto.trace.json.gz", "json",
           lambda f, o: ["calibrate", str(f), "--out", str(o), "--where", "batch == 12345"],
           writes=True, expect_error=True),
    Reader("histogram-npy", "hist.npy", "npy", lambda f, o: ["simulate", *TINY, "--profile", "rtx4090",
                                                             "--histogram", str(f), "--json"]),
    Reader("histogram-csv", "hist.csv", "bytes", lambda f, o: ["simulate", *TINY, "--profile", "rtx4090",
                                                               "--histogram", str(f), "--json"]),
    Reader("checkpoint", "tiny.pt", "checkpoint",
           lambda f, o: ["quality", "--model", "tiny", "--steps", "2", "--image-size", "32", "--batch", "1",
                         "--strategies", "displaced", "--checkpoint", str(f), "--out", str(o)],
           writes=True, executor=True),
)


def load_seed(reader: Reader, seeds: Path) -> Any:
    """The seed as the structure that structured mutations work on (None: bytes only)."""
    path = seeds / reader.seed
    if reader.fmt == "toml":
        import tomllib

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
    structured = reader.fmt in ("toml", "json", "parquet", "npy", "checkpoint") and draw(st.integers(0, 3)) > 0
    if not structured:
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
        return "structured", _mutate_parquet(draw, path)
    if reader.fmt == "npy":
        return "structured", _mutate_npy(draw)
    return "structured", _mutate_checkpoint(draw, path)


def _mutate_parquet(draw: st.DrawFn, path: Path) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    md = dict(table.schema.metadata)
    if draw(st.booleans()):
        meta = json.loads(md[b"dicesim.meta"])
        md[b"dicesim.meta"] = json.dumps(mutate_doc(draw, meta, toml=False)).encode()
        table = table.replace_schema_metadata(md)
    else:
        col = draw(st.sampled_from(table.column_names))
        i = table.column_names.index(col)
        n = table.num_rows
        kind = draw(st.sampled_from(["strings", "floats", "nan", "huge", "nulls"]))
        arr = {"strings": lambda: pa.array(["x"] * n), "floats": lambda: pa.array([0.5] * n),
               "nan": lambda: pa.array([math.nan] * n), "huge": lambda: pa.array([2**62] * n, pa.int64()),
               "nulls": lambda: pa.array([None] * n, table.schema.field(col).type)}[kind]()
        table = table.set_column(i, pa.field(col, arr.type), arr).replace_schema_metadata(md)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _mutate_npy(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["nan", "negative", "strings", "complex", "3d", "empty", "zeros", "shape"]))
    arr = {
        "nan": np.full((4, 4), math.nan), "negative": -np.ones((4, 4)), "strings": np.array([["a", "b"]]),
        "complex": np.ones((4, 4), complex), "3d": np.ones((2, 4, 4)), "empty": np.zeros((0,)),
        "zeros": np.zeros((4, 4)), "shape": np.ones((3, 5)),
    }[kind]
    sink = io.BytesIO()
    np.save(sink, arr)
    return sink.getvalue()


def _mutate_checkpoint(draw: st.DrawFn, path: Path) -> bytes:
    import torch

    state = torch.load(path, weights_only=True)
    key = draw(st.sampled_from(sorted(state)))
    kind = draw(st.sampled_from(["drop", "nan", "int", "shape", "list", "wrap", "rename"]))
    if kind == "drop":
        del state[key]
    elif kind == "nan":
        state[key] = state[key].clone().fill_(math.nan)
    elif kind == "int":
        state[key] = state[key].to(torch.int64)
    elif kind == "shape":
        state[key] = torch.zeros(state[key].numel() + 1)
    elif kind == "list":
        state[key] = [1, 2, 3]
    elif kind == "wrap":
        state = {"model": {"nested": state}}
    else:
        state["blocks.99." + key] = state.pop(key)
    sink = io.BytesIO()
    torch.save(state, sink)
    return sink.getvalue()


def out_path(reader: Reader, work: Path) -> Path:
    """Where ``reader``'s command writes (calibration: a profile file; quality: a page)."""
    return work / {"calibrate-meta": "out.toml", "kineto": "out.toml", "checkpoint": "quality.md"}.get(reader.name, "out")


def command_line(reader: Reader) -> str:
    """The reader's command for tables, with the tiny scenario's flags shortened to ``...``."""
    argv = " ".join(reader.argv(Path("FILE"), Path("OUT")))
    return argv.replace(" ".join(TINY), "...")


def try_input(reader: Reader, data: bytes, work: Path) -> tuple[Outcome, str | None]:
    """Write ``data`` as the reader's input in an empty ``work`` dir, run its command, judge it."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    f = work / reader.seed
    f.write_bytes(data)
    out = out_path(reader, work)
    o = run_cli(reader.argv(f, out), executor=reader.executor)
    return o, verdict(o, out if reader.writes else None, expect_error=reader.expect_error)
