"""Chrome trace-event JSON (Perfetto, chrome://tracing) for the event table, both directions.

Layout: pid = rank (``process_name`` "rank N"), pid ``LINKS_PID`` ("links") holds the link
rows with one thread per link; one tid per stream (``thread_name``). Events that overlap on
one (rank, stream) track go to extra lanes "<stream> #2", "#3", ... chosen greedily in
(start, end, row) order, so no lane ever holds two overlapping ``X`` events (viewers
mis-draw or drop those). ``args`` carry only the columns that differ from their "n/a"
value; the thread metadata carries the stream name so the reader can undo the lanes.
``dur`` is rounded down when ``ts + dur`` would pass the true end; the exact end then rides
in ``args.end_us``, which keeps both the no-overlap guarantee and an exact round trip.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicesim.errors import TraceError
from dicesim.inputs import load_json_file
from dicesim.limits import MAX_JSON_TRACE_BYTES, MAX_TRACE_EVENTS
from dicesim.trace.schema import (
    COLUMNS, KNOWN_STREAMS, NA_VALUES, TraceMeta, check_schema_version, coerce_events,
    validate_events,
)

LINKS_PID = 1_000_000
_LANE_SEP = " #"


def _lanes(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Lane per interval (input order) such that no lane holds two overlapping intervals."""
    order = np.lexsort((np.arange(len(start)), end, start))
    s, e = start[order], end[order]
    lane = np.zeros(len(s), dtype=np.int64)
    if len(s) > 1 and (s[1:] >= np.maximum.accumulate(e)[:-1]).all():
        return lane  # common case: the track never overlaps itself
    lane_end: list[float] = []
    for i in range(len(s)):
        for k, busy_until in enumerate(lane_end):
            if busy_until <= s[i]:
                break
        else:
            k = len(lane_end)
            lane_end.append(0.0)
        lane_end[k] = e[i]
        lane[i] = k
    out = np.empty_like(lane)
    out[order] = lane
    return out


def _stream_key(stream: str) -> tuple[int, str]:
    return (KNOWN_STREAMS.index(stream) if stream in KNOWN_STREAMS else len(KNOWN_STREAMS), stream)


def _tracks(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """pid and tid per row, plus the process/thread metadata events that name them."""
    if len(df) and int(df["rank"].max()) >= LINKS_PID:
        raise TraceError("<events>", f"rank {int(df['rank'].max())} collides with the links pid {LINKS_PID}")
    pid = np.where(df["kind"].to_numpy(dtype=object) == "link", LINKS_PID, df["rank"].to_numpy()).astype(np.int64)
    stream = df["stream"].to_numpy(dtype=object)
    lane = np.zeros(len(df), dtype=np.int64)
    start, end = df["start_us"].to_numpy(), df["end_us"].to_numpy()
    keys = pd.DataFrame({"pid": pid, "stream": stream})
    for _, idx in keys.groupby(["pid", "stream"], sort=False).indices.items():
        lane[idx] = _lanes(start[idx], end[idx])
    tid = np.zeros(len(df), dtype=np.int64)
    meta_events: list[dict[str, Any]] = []
    track_rows = pd.DataFrame({"pid": pid, "stream": stream, "lane": lane})
    track_ids = track_rows.groupby(["pid", "stream", "lane"], sort=False).indices
    by_pid: dict[int, list[tuple[str, int]]] = {}
    for p, s, k in track_ids:
        by_pid.setdefault(int(p), []).append((s, int(k)))
    for p in sorted(by_pid):
        pname = "links" if p == LINKS_PID else f"rank {p}"
        meta_events.append({"ph": "M", "name": "process_name", "pid": p, "tid": 0, "args": {"name": pname}})
        meta_events.append({"ph": "M", "name": "process_sort_index", "pid": p, "tid": 0, "args": {"sort_index": p}})
        for t, (s, k) in enumerate(sorted(by_pid[p], key=lambda sk: (_stream_key(sk[0]), sk[1])), start=1):
            tid[track_ids[(p, s, k)]] = t
            label = s if k == 0 else f"{s}{_LANE_SEP}{k + 1}"
            meta_events.append({"ph": "M", "name": "thread_name", "pid": p, "tid": t,
                                "args": {"name": label, "stream": s, "lane": k}})
            meta_events.append({"ph": "M", "name": "thread_sort_index", "pid": p, "tid": t,
                                "args": {"sort_index": t}})
    return pid, tid, meta_events


def _durations(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Largest dur with start + dur <= end in float arithmetic (a plain difference can overshoot)."""
    dur = end - start
    # The overshoot is at most half an ulp of `end` and dur >= end / 2 whenever the
    # subtraction was inexact, so one or two steps down always suffice.
    over = start + dur > end
    while over.any():
        dur[over] = np.nextafter(dur[over], 0.0)
        over = start + dur > end
    return dur


def chrome_document(df: pd.DataFrame, meta: TraceMeta, *, check: bool = True) -> dict[str, Any]:
    """The trace-event JSON object for ``df``.

    ``check`` validates ``df`` first, without any exclusivity rule (lanes take care of
    overlaps); pass False only for a table that was just validated.
    """
    if check:
        validate_events(df, exclusive_streams=())
    pid, tid, events = _tracks(df)
    start, end = df["start_us"].to_numpy(), df["end_us"].to_numpy()
    dur = _durations(start, end)
    all_args: list[dict[str, Any]] = [{} for _ in range(len(df))]
    # Fill args column by column over the rows that need each key: most values are "n/a".
    for col, na in NA_VALUES.items():
        values = df[col].to_numpy()
        as_list = values.tolist()
        for i in np.flatnonzero(values != na).tolist():
            all_args[i][col] = as_list[i]
    source = df["source"].to_numpy(dtype=object)
    for i in np.flatnonzero(source != meta.source).tolist():
        all_args[i]["source"] = source[i]
    for i in np.flatnonzero(start + dur != end).tolist():
        all_args[i]["end_us"] = float(end[i])
    for name, kind, p, t, ts, d, args in zip(df["name"].to_numpy(dtype=object), df["kind"].to_numpy(dtype=object),
                                            pid.tolist(), tid.tolist(), start.tolist(), dur.tolist(), all_args):
        events.append({"ph": "X", "cat": kind, "name": name, "pid": p, "tid": t, "ts": ts, "dur": d, "args": args})
    return {"traceEvents": events, "displayTimeUnit": "ns", "otherData": meta.to_dict()}


def dump_chrome(df: pd.DataFrame, meta: TraceMeta, path: str | Path, *, compress: bool | None = None,
                check: bool = True) -> None:
    """Write ``df`` as Chrome JSON to ``path`` directly; not atomic (``write_chrome`` is).

    ``compress`` gzips the bytes; None means "when the path ends in .gz". ``check`` as in
    ``chrome_document``.
    """
    text = json.dumps(chrome_document(df, meta, check=check), separators=(",", ":"), allow_nan=False)
    data = text.encode("utf-8")
    if compress is None:
        compress = str(path).endswith(".gz")
    Path(path).write_bytes(gzip.compress(data, mtime=0) if compress else data)


def _load_json(path: Path) -> object:
    return load_json_file(path, lambda problem: TraceError(path, problem), max_bytes=MAX_JSON_TRACE_BYTES,
                          what="Chrome trace JSON object")


def _number(ev: dict, key: str, i: int, path: Path) -> float:
    value = ev.get(key)
    if value is None:
        raise TraceError(path, f"traceEvents[{i}] ({ev.get('name')!r}) has no {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TraceError(path, f"traceEvents[{i}] has non-numeric {key!r}: {value!r}")
    return float(value)


def _first_bad(values: list, ok: Callable[[object], bool]) -> int | None:
    return next((j for j, v in enumerate(values) if not ok(v)), None)


def _events_frame(xs: list[tuple[int, dict]], streams: dict, source: str, path: Path) -> pd.DataFrame:
    """Column-wise rebuild of the table from the X events; the checks name the first bad event."""
    evs = [ev for _, ev in xs]
    for key in ("ts", "dur"):
        bad = _first_bad([ev.get(key) for ev in evs], lambda v: type(v) in (int, float))
        if bad is not None:
            _number(evs[bad], key, xs[bad][0], path)  # raises the specific message
    try:
        ts = np.array([ev["ts"] for ev in evs], dtype=np.float64)
        dur = np.array([ev["dur"] for ev in evs], dtype=np.float64)
    except OverflowError:
        raise TraceError(path, "an event's ts or dur is too large for a float (allowed: finite numbers)") from None
    if (dur < 0).any():
        j = int(np.flatnonzero(dur < 0)[0])
        raise TraceError(path, f"traceEvents[{xs[j][0]}] ({evs[j].get('name')!r}) has negative dur {float(dur[j])!r}")
    tracks = [(ev.get("pid"), ev.get("tid")) for ev in evs]
    bad = _first_bad(tracks, lambda t: type(t[0]) is int and type(t[1]) is int and t in streams)
    if bad is not None:
        raise TraceError(path, f"traceEvents[{xs[bad][0]}] on pid {tracks[bad][0]!r} tid {tracks[bad][1]!r} "
                               f"has no thread_name metadata")
    args = [ev.get("args") or {} for ev in evs]
    bad = _first_bad(args, lambda a: isinstance(a, dict))
    if bad is not None:
        raise TraceError(path, f"traceEvents[{xs[bad][0]}] has non-object args")
    end = ts + dur
    try:
        for j in [j for j, a in enumerate(args) if "end_us" in a]:
            end[j] = a_end if type(a_end := args[j]["end_us"]) in (int, float) else np.nan
    except OverflowError:
        raise TraceError(path, f"traceEvents[{xs[j][0]}] has an end_us too large for a float") from None
    cols: dict[str, object] = {
        "rank": [-1 if p == LINKS_PID else p for p, _ in tracks],
        "stream": [streams[t] for t in tracks],
        "kind": [ev.get("cat") for ev in evs],
        "name": [ev.get("name") for ev in evs],
        "start_us": ts,
        "end_us": end,
        "source": [a.get("source", source) for a in args],
    }
    for col, na in NA_VALUES.items():
        cols[col] = [a.get(col, na) for a in args]
    try:
        frame = pd.DataFrame({c: pd.Series(cols[c], dtype=object) if isinstance(cols[c], list) else cols[c]
                              for c in COLUMNS})
        return coerce_events(frame)
    except (ValueError, TypeError, OverflowError) as exc:
        raise TraceError(path, f"event args do not fit the schema: {exc}") from None


def read_chrome(path: str | Path) -> tuple[pd.DataFrame, TraceMeta]:
    """Read a Chrome JSON trace written by ``dump_chrome``/``write_chrome`` (.json or .json.gz).

    Returns the canonical event table (rows in file order) and its metadata; raises a one-line
    TraceError for unreadable, truncated, foreign-version or malformed files.
    """
    path = Path(path)
    doc = _load_json(path)
    if isinstance(doc, list):
        raise TraceError(path, "JSON array trace carries no metadata: missing schema version "
                               "(expected an object with otherData.schema_version)")
    if not isinstance(doc, dict):
        raise TraceError(path, f"top-level JSON is a {type(doc).__name__}, expected an object with traceEvents")
    if "traceEvents" not in doc:
        raise TraceError(path, "missing 'traceEvents' list")
    raw_meta = doc.get("otherData", doc.get("metadata"))
    if not isinstance(raw_meta, dict):
        raise TraceError(path, "missing schema version (no otherData object)")
    check_schema_version(raw_meta.get("schema_version"), path)
    meta = TraceMeta.from_dict(raw_meta, path)
    events = doc["traceEvents"]
    if not isinstance(events, list):
        raise TraceError(path, f"'traceEvents' is a {type(events).__name__}, expected a list")
    if len(events) > MAX_TRACE_EVENTS:
        raise TraceError(path, f"{len(events):,} trace events, more than the {MAX_TRACE_EVENTS:,} limit "
                               "(see docs/limits.md)")
    streams: dict[tuple[Any, Any], str] = {}
    xs: list[tuple[int, dict]] = []
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise TraceError(path, f"traceEvents[{i}] is a {type(ev).__name__}, expected an object")
        ph = ev.get("ph")
        if ph == "M" and ev.get("name") == "thread_name":
            args = ev.get("args") or {}
            track = (ev.get("pid"), ev.get("tid"))
            if not isinstance(args, dict) or not all(type(t) is int for t in track):
                raise TraceError(path, f"traceEvents[{i}] (thread_name) needs integer pid and tid and object args")
            streams[track] = str(args.get("stream", args.get("name", "")))
        elif ph == "X":
            xs.append((i, ev))
    df = _events_frame(xs, streams, meta.source, path)
    validate_events(df, exclusive_streams=(), where=path)
    return df, meta
