"""Read PyTorch profiler (Kineto) Chrome traces into the shared event schema, for calibration.

A user profiles their own run with ``torch.profiler`` and marks what each piece of code is
with ``record_function`` annotations named ``dicesim:<kind>[;key=value...]``:

- ``<kind>``: an op kind (``attention``, ``gate``, ``experts``, ``shared_expert``,
  ``local_combine``, ``embed``, ``final``) or a collective (``counts``, ``dispatch``,
  ``combine``); keys ``layer``, ``step``, ``tok_step``, ``rows`` (routed rows of ``experts``
  or a collective), ``nbytes``;
- ``dicesim:step;step=<t>`` (or the profiler's own ``ProfilerStep#<t>``) around one step;
- ``dicesim:run;model=XL/2;batch=8;image_size=256;world_size=8;strategy=sync;dtype=bf16;cfg=1``
  once, around everything: the configuration calibration needs to count FLOPs and bytes.

Timing. On a CPU-only trace an op is its annotation's interval on the host. With GPU
kernels (``cat: kernel``, and the copies and memsets beside them), every kernel is matched to the annotation that launched it (the
kernel's ``correlation`` id -> the ``cuda_runtime`` launch event -> the innermost enclosing
``dicesim:`` annotation on that host thread) and the op is the span of its kernels on the
device; NCCL kernels (name contains ``nccl``) become collectives on stream ``comm``. On a
CPU-only trace a collective annotation is also a ``wait`` on the compute track (the host
thread was blocked in it). A trace with ``distributedInfo`` names its rank; each file is
one run (one rank), so collective fits need the executor's own multi-rank traces.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicesim.errors import TraceError
from dicesim.inputs import load_json_file
from dicesim.limits import INT64_MAX, INT64_MIN, MAX_JSON_TRACE_BYTES, MAX_TRACE_TIME_US, MAX_WORLD_SIZE
from dicesim.trace import EventRecorder, TraceMeta, coerce_events

PREFIX = "dicesim:"
COLLECTIVES = ("counts", "dispatch", "combine")
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")  # device activity an annotation can launch
_STEP_RE = re.compile(r"ProfilerStep#(\d{1,9})", re.ASCII)  # "٣" is a \d too


def is_kineto(path: str | Path) -> bool:
    """Whether ``path`` looks like a torch.profiler Chrome export (not a dicesim trace)."""
    try:
        doc = _load(Path(path))
    except TraceError:
        return False
    return isinstance(doc, dict) and "traceEvents" in doc and "otherData" not in doc


def _load(path: Path) -> Any:
    return load_json_file(path, lambda problem: TraceError(path, problem), max_bytes=MAX_JSON_TRACE_BYTES,
                          what="torch.profiler Chrome trace")


def _x_events(doc: dict, path: Path) -> list[dict[str, Any]]:
    """The complete ("X") events with the fields this reader uses, type-checked: ``name`` and
    ``cat`` strings, finite ``ts`` and non-negative ``dur`` numbers, an ``args`` object."""
    out = []
    for i, e in enumerate(doc["traceEvents"]):
        if not isinstance(e, dict) or e.get("ph") != "X":
            continue
        num = {}
        for key, default in (("ts", None), ("dur", 0.0)):
            v = e.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or abs(v) > MAX_TRACE_TIME_US or (key == "dur" and v < 0):
                raise TraceError(path, f"traceEvents[{i}].{key} is {v!r} (allowed: finite numbers of us"
                                       + (", >= 0" if key == "dur" else "") + ")")
            num[key] = float(v)
        args = e.get("args") or {}
        if not isinstance(args, dict):
            raise TraceError(path, f"traceEvents[{i}].args is a {type(args).__name__}, expected an object")
        corr = args.get("correlation")
        out.append({"name": str(e.get("name", "")), "cat": str(e.get("cat", "")), "ts": num["ts"], "dur": num["dur"],
                    "corr": corr if type(corr) is int else None})
    return out


def parse_annotation(name: str) -> tuple[str, dict[str, str]] | None:
    """``"dicesim:experts;layer=3;rows=40"`` -> ``("experts", {"layer": "3", "rows": "40"})``; None otherwise."""
    if not name.startswith(PREFIX):
        return None
    head, *pairs = name[len(PREFIX):].split(";")
    args = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if sep:
            args[k.strip()] = v.strip()
    return head.strip(), args


def _int(args: dict[str, str], key: str, default: int) -> int:
    try:
        value = int(args[key])
    except (KeyError, ValueError):
        return default
    return value if INT64_MIN <= value <= INT64_MAX else default


def _scenario(run_args: dict[str, str], path: Path) -> dict[str, Any]:
    sc: dict[str, Any] = {}
    for k, v in run_args.items():
        if k in ("batch", "image_size", "world_size", "steps", "num_experts"):
            try:
                sc[k] = int(v)
            except ValueError:
                raise TraceError(path, f"dicesim:run annotation has {k}={v[:40]!r} (allowed: an integer)") from None
        elif k == "cfg":
            sc[k] = v.lower() not in ("0", "false", "no")
        else:
            sc[k] = v
    return sc


def _enclosing(starts: np.ndarray, ends: np.ndarray, t: float) -> int:
    """Index of the innermost interval (latest start) containing ``t``, or -1."""
    i = int(np.searchsorted(starts, t, side="right")) - 1
    while i >= 0:
        if ends[i] >= t:
            return i
        i -= 1
    return -1


def read_kineto(path: str | Path, *, scenario: dict[str, Any] | None = None) -> tuple[pd.DataFrame, TraceMeta]:
    """Events (schema ``dicesim-trace/1``, source ``kineto``, times in us from the trace start) and meta."""
    path = Path(path)
    doc = _load(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise TraceError(path, "no 'traceEvents' list: not a torch.profiler Chrome trace")
    evs = _x_events(doc, path)
    info = doc.get("distributedInfo") or {}
    rank = info.get("rank", 0) if isinstance(info, dict) else None
    if type(rank) is not int or not 0 <= rank < MAX_WORLD_SIZE:
        raise TraceError(path, f"distributedInfo.rank is {rank!r} (allowed: 0..{MAX_WORLD_SIZE - 1})")
    ann, steps, run_args = [], [], {}
    for e in evs:
        name = e["name"]
        ts, dur = e["ts"], e["dur"]
        if e.get("cat") in ("user_annotation", "cpu_op", "python_function") and name.startswith(PREFIX):
            kind, args = parse_annotation(name)
            if kind == "run":
                run_args = args
            elif kind == "step":
                steps.append((ts, ts + dur, _int(args, "step", len(steps))))
            else:
                ann.append((ts, ts + dur, kind, args, e.get("pid"), e.get("tid")))
        elif (m := _STEP_RE.fullmatch(name)) is not None:
            steps.append((ts, ts + dur, int(m.group(1))))
    if not ann:
        raise TraceError(path, f"no '{PREFIX}<kind>' record_function annotations to map ops from")
    ann.sort(key=lambda a: a[0])
    steps.sort()
    step_s = np.array([s[0] for s in steps])
    step_e = np.array([s[1] for s in steps])
    a_s = np.array([a[0] for a in ann])
    a_e = np.array([a[1] for a in ann])

    # GPU: kernels -> launching annotation (correlation id -> runtime launch on the host thread)
    launch_at = {e["corr"]: e["ts"] for e in evs
                 if e["cat"] in ("cuda_runtime", "cuda_driver") and e["corr"] is not None}
    spans: dict[int, list[float]] = {}
    nccl: list[tuple[float, float, int]] = []
    for e in evs:
        if e.get("cat") not in DEVICE_CATS:
            continue
        ks, ke = e["ts"], e["ts"] + e["dur"]
        host_t = launch_at.get(e["corr"])
        i = _enclosing(a_s, a_e, host_t) if host_t is not None else -1
        if "nccl" in str(e.get("name", "")).lower():
            nccl.append((ks, ke, i))
        elif i >= 0:
            sp = spans.setdefault(i, [np.inf, -np.inf, 0.0])
            sp[0], sp[1], sp[2] = min(sp[0], ks), max(sp[1], ke), sp[2] + (ke - ks)
    gpu = bool(spans) or bool(nccl)

    rec = EventRecorder("kineto")
    t0 = min([a[0] for a in ann] + [k[0] for k in nccl] + [s[0] for s in spans.values()])
    for i, (s, e, kind, args, _pid, _tid) in enumerate(ann):
        si = _enclosing(step_s, step_e, s) if len(steps) else -1
        step = _int(args, "step", steps[si][2] if si >= 0 else -1)
        layer, tok = _int(args, "layer", -1), _int(args, "tok_step", step)
        rows, nbytes = _int(args, "rows", 0), _int(args, "nbytes", 0)
        if kind in COLLECTIVES:
            if not gpu:
                rec.add(rank, "comm", "collective", kind, s - t0, e - t0, layer, step, tok, nbytes, rows)
                rec.add(rank, "compute", "wait", f"wait:{kind}", s - t0, e - t0, layer, step, tok)
            continue
        if gpu:
            if i not in spans:
                continue  # an annotation that launched no kernel
            s, e = spans[i][0], spans[i][1]
        rec.add(rank, "compute", "compute", kind, s - t0, e - t0, layer, step, tok, 0, rows)
    for ks, ke, i in nccl:
        kind, args = (ann[i][2], ann[i][3]) if i >= 0 else ("dispatch", {})
        si = _enclosing(step_s, step_e, ann[i][0]) if i >= 0 and len(steps) else -1
        step = _int(args, "step", steps[si][2] if si >= 0 else -1)
        rec.add(rank, "comm", "collective", kind if kind in COLLECTIVES else "dispatch", ks - t0, ke - t0,
                _int(args, "layer", -1), step, _int(args, "tok_step", step), _int(args, "nbytes", 0),
                _int(args, "rows", 0))
    try:
        df = coerce_events(rec.to_frame(validate=False))
    except TraceError as exc:  # the recorder names no file
        raise TraceError(path, exc.one_line().removeprefix("<recorder>: ")) from None
    df = _drop_nested(df)
    sc = {**_scenario(run_args, path), **(scenario or {})}
    device = "gpu" if gpu else "cpu"
    props = doc.get("deviceProperties") or []
    if gpu and isinstance(props, list) and props and isinstance(props[0], dict):
        device = str(props[0].get("name", "gpu"))
    world = sc.get("world_size", 1)
    if not 1 <= world <= MAX_WORLD_SIZE:
        raise TraceError(path, f"dicesim:run annotation has world_size={world} (allowed: 1..{MAX_WORLD_SIZE})")
    meta = TraceMeta(source="kineto", scenario=sc, strategy=str(sc.get("strategy", "")),
                     world_size=world, model=str(sc.get("model", "")),
                     backend="nccl" if nccl else str(sc.get("backend", "")), device=device,
                     extra={"kineto_file": path.name, "rank": rank})
    return df, meta


def _drop_nested(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the outermost of nested compute-track events (the compute track may not overlap)."""
    comp = df[df["stream"] == "compute"].sort_values(["rank", "start_us", "end_us"], ascending=[True, True, False])
    keep, last_end, last_rank = [], -np.inf, None
    for idx, r, s, e in zip(comp.index, comp["rank"], comp["start_us"], comp["end_us"]):
        if r != last_rank:
            last_end, last_rank = -np.inf, r
        if s >= last_end:
            keep.append(idx)
            last_end = e
    return pd.concat([comp.loc[keep], df[df["stream"] != "compute"]]).sort_values("start_us").reset_index(drop=True)
