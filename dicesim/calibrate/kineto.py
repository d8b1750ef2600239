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

import gzip
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicesim.errors import TraceError
from dicesim.trace import EventRecorder, TraceMeta, coerce_events

PREFIX = "dicesim:"
COLLECTIVES = ("counts", "dispatch", "combine")
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")  # device activity an annotation can launch
_STEP_RE = re.compile(r"ProfilerStep#(\d+)")


def is_kineto(path: str | Path) -> bool:
    """Whether ``path`` looks like a torch.profiler Chrome export (not a dicesim trace)."""
    try:
        doc = _load(Path(path))
    except TraceError:
        return False
    return isinstance(doc, dict) and "traceEvents" in doc and "otherData" not in doc


def _load(path: Path) -> Any:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt") as fh:
            return json.load(fh)
    except (OSError, ValueError, EOFError) as exc:
        raise TraceError(path, f"not a readable JSON trace ({exc})") from None


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
        return int(args[key])
    except (KeyError, ValueError):
        return default


def _scenario(run_args: dict[str, str]) -> dict[str, Any]:
    sc: dict[str, Any] = {}
    for k, v in run_args.items():
        if k in ("batch", "image_size", "world_size", "steps", "num_experts"):
            sc[k] = int(v)
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
    evs = [e for e in doc["traceEvents"] if isinstance(e, dict) and e.get("ph") == "X"]
    rank = int((doc.get("distributedInfo") or {}).get("rank", 0))
    ann, steps, run_args = [], [], {}
    for e in evs:
        name = str(e.get("name", ""))
        ts, dur = float(e.get("ts", 0.0)), float(e.get("dur", 0.0))
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
    launch_at = {e["args"]["correlation"]: float(e["ts"]) for e in evs
                 if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    spans: dict[int, list[float]] = {}
    nccl: list[tuple[float, float, int]] = []
    for e in evs:
        if e.get("cat") not in DEVICE_CATS:
            continue
        ks, ke = float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))
        corr = (e.get("args") or {}).get("correlation")
        host_t = launch_at.get(corr)
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
    df = coerce_events(rec.to_frame(validate=False))
    df = _drop_nested(df)
    sc = {**_scenario(run_args), **(scenario or {})}
    device = "gpu" if gpu else "cpu"
    props = doc.get("deviceProperties") or []
    if gpu and props:
        device = str(props[0].get("name", "gpu"))
    meta = TraceMeta(source="kineto", scenario=sc, strategy=str(sc.get("strategy", "")),
                     world_size=int(sc.get("world_size", 1)), model=str(sc.get("model", "")),
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
