"""Put several traces into one Chrome JSON document, side by side, for Perfetto.

Perfetto opens one file at a time; to compare a simulated and an executed run of the same
scenario, each input becomes its own group of processes (``<label> rank N``), with its
clock shifted so that its first event starts at 0. The result is for viewing only: it is
not a ``dicesim-trace/1`` file (pids no longer equal ranks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from dicesim.atomic import write_text_atomic
from dicesim.trace.chrome import LINKS_PID, chrome_document
from dicesim.trace.schema import TraceMeta

#: pid stride between merged inputs; ranks and the links pid of one input stay below it
PID_STRIDE = LINKS_PID + 1


def merged_document(traces: list[tuple[str, pd.DataFrame, TraceMeta]]) -> dict[str, Any]:
    """One Chrome trace document holding every ``(label, events, meta)`` input."""
    events: list[dict[str, Any]] = []
    inputs = []
    for i, (label, df, meta) in enumerate(traces):
        shifted = df.copy()
        if len(shifted):
            t0 = float(shifted["start_us"].min())
            shifted["start_us"] -= t0
            shifted["end_us"] -= t0
        doc = chrome_document(shifted, meta, check=False)
        for ev in doc["traceEvents"]:
            ev = dict(ev)
            pid = int(ev.get("pid", 0))
            ev["pid"] = i * PID_STRIDE + pid
            if ev.get("ph") == "M" and ev.get("name") == "process_name":
                ev["args"] = {"name": f"{label} {ev['args']['name']}"}
            if ev.get("ph") == "M" and ev.get("name") == "process_sort_index":
                ev["args"] = {"sort_index": ev["pid"]}
            events.append(ev)
        inputs.append({"label": label, "meta": meta.to_dict()})
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"merged": inputs}}


def write_merged(traces: list[tuple[str, pd.DataFrame, TraceMeta]], path: str | Path) -> Path:
    """Write :func:`merged_document` atomically to ``path``."""
    return write_text_atomic(json.dumps(merged_document(traces), separators=(",", ":")), path)
