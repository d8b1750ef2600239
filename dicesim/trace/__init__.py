"""Trace schema shared by the simulator and the executor (``dicesim-trace/1``).

One event table (pandas, dtypes in ``DTYPES``) plus a ``TraceMeta``; written as Chrome
trace-event JSON for Perfetto and as Parquet for analysis. See docs/trace-format.md.

Typical use::

    rec = EventRecorder("sim")
    rec.add(0, "compute", "compute", "attention", 0.0, 12.5, layer=0, step=0, tok_step=0)
    df = rec.to_frame()
    write_trace(df, TraceMeta(source="sim", world_size=1), "out", "run1")
    df2, meta = read_trace("out/run1.events.parquet")
"""

from dicesim.trace.chrome import LINKS_PID, chrome_document, dump_chrome, read_chrome
from dicesim.trace.files import (
    JSON_SUFFIX,
    PARQUET_SUFFIX,
    read_trace,
    read_trace_dir,
    trace_stems,
    write_chrome,
    write_parquet,
    write_trace,
)
from dicesim.trace.intervals import align_clocks, busy_union_us, per_step_table
from dicesim.trace.parquet import dump_parquet, read_parquet, read_parquet_meta
from dicesim.trace.schema import (
    COLUMNS,
    DEFAULT_EXCLUSIVE,
    DTYPES,
    KINDS,
    KNOWN_STREAMS,
    NA_VALUES,
    SCHEMA_VERSION,
    SOURCES,
    EventRecorder,
    TraceMeta,
    check_schema_version,
    coerce_events,
    empty_events,
    validate_events,
)

__all__ = [
    "COLUMNS", "DEFAULT_EXCLUSIVE", "DTYPES", "JSON_SUFFIX", "KINDS", "KNOWN_STREAMS", "LINKS_PID",
    "NA_VALUES", "PARQUET_SUFFIX", "SCHEMA_VERSION", "SOURCES", "EventRecorder", "TraceMeta",
    "align_clocks", "busy_union_us", "check_schema_version", "chrome_document", "coerce_events",
    "dump_chrome", "dump_parquet", "empty_events", "per_step_table", "read_chrome", "read_parquet",
    "read_parquet_meta", "read_trace", "read_trace_dir", "trace_stems", "validate_events",
    "write_chrome", "write_parquet", "write_trace",
]
