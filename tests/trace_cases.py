"""Shared builders for the trace tests: hypothesis strategies and a small golden table."""

from __future__ import annotations

import pandas as pd
from hypothesis import strategies as st

from dicesim.trace import KINDS, EventRecorder, TraceMeta

STREAMS = ("compute", "comm", "comm:counts", "host", "link-x", "strêam ü")
NAMES = ("attention", "gate", "experts", "dispatch", "combine", "count_exchange", "ø name", "")

_times = st.one_of(
    st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=10_000).map(float),  # touching / shared boundaries
)


@st.composite
def event_rows(draw: st.DrawFn, max_rows: int = 40) -> list[tuple]:
    """Rows for EventRecorder.add; overlapping intervals on one track are allowed and likely."""
    n = draw(st.integers(min_value=0, max_value=max_rows))
    rows = []
    for _ in range(n):
        kind = draw(st.sampled_from(KINDS))
        rank = -1 if kind == "link" else draw(st.integers(0, 3))
        start = draw(_times)
        end = start + draw(st.one_of(st.just(0.0), _times, st.floats(0.0, 1.0)))
        rows.append((
            rank, draw(st.sampled_from(STREAMS)), kind, draw(st.sampled_from(NAMES)), start, end,
            draw(st.integers(-1, 40)), draw(st.integers(-1, 50)), draw(st.integers(-1, 50)),
            draw(st.integers(0, 2**40)), draw(st.integers(0, 2**33)), draw(st.integers(-1, 7)),
            draw(st.one_of(st.just(0.0), st.floats(0.0, 1e15))),
        ))
    return rows


def table(rows: list[tuple], source: str = "sim") -> pd.DataFrame:
    """Event table from ``event_rows`` output, without the exclusivity check."""
    rec = EventRecorder(source)
    for r in rows:
        rec.add(*r)
    return rec.to_frame(exclusive_streams=())


def meta(**kw) -> TraceMeta:
    """A TraceMeta with every field filled, nested dicts included."""
    base = dict(source="sim", scenario={"model": "XL/2", "gpus": 8, "nested": {"x": [1, 2.5]}},
                strategy="dice", world_size=4, model="XL/2", backend="sim", device="h100-nvlink",
                torch_version="", created="2025-01-01T00:00:00+00:00", extra={"seed": 7})
    base.update(kw)
    return TraceMeta(**base)


def golden() -> pd.DataFrame:
    """Two ranks, one step, overlapping async collectives on rank 0's comm stream, one link."""
    rec = EventRecorder("sim")
    rec.add(0, "compute", "compute", "attention", 0.0, 10.0, layer=0, step=0, tok_step=0, flops=2e9)
    rec.add(0, "compute", "compute", "gate", 10.0, 12.0, layer=0, step=0, tok_step=0)
    rec.add(0, "comm", "collective", "dispatch", 12.0, 30.0, layer=0, step=0, tok_step=0, nbytes=4096, rows=64)
    rec.add(0, "comm", "collective", "combine", 14.0, 20.0, layer=0, step=0, tok_step=-1, nbytes=4096, rows=64)
    rec.add(0, "compute", "compute", "experts", 20.0, 25.0, layer=0, step=0, tok_step=0)
    rec.add(1, "compute", "compute", "attention", 1.0, 11.0, layer=0, step=0, tok_step=0)
    rec.add(1, "host", "marker", "step_begin", 1.0, 1.0, step=0)
    rec.add(-1, "nvlink:0-1", "link", "dispatch", 12.5, 29.0, nbytes=4096, peer=1)
    return rec.to_frame()
