"""Parquet storage of the event table: exact dtypes, metadata in the Arrow schema metadata.

Parquet is the compact, fast format for analysis (a million events is a few MB and loads in
well under a second); the Chrome JSON beside it is for looking at. The reader checks the
file's magic bytes first so that truncated and foreign files get a specific message
instead of an Arrow stack of internals.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dicesim.errors import TraceError
from dicesim.inputs import check_file_size, check_regular_file, parse_json_bounded
from dicesim.limits import (
    MAX_PARQUET_BYTES, MAX_PARQUET_DECODED_BYTES, MAX_PARQUET_UNCOMPRESSED_BYTES, MAX_TRACE_EVENTS, human_bytes,
)
from dicesim.trace.parquet_bounded import read_table_bounded
from dicesim.trace.schema import (
    COLUMNS, DTYPES, SCHEMA_VERSION, TraceMeta, check_schema_version, coerce_events, validate_events,
)

#: what pyarrow raises on a corrupt file: a footer whose names or metadata are not UTF-8
#: raises UnicodeDecodeError, not an ArrowException
PARQUET_ERRORS = (pa.ArrowException, OSError, UnicodeDecodeError)
_META_KEY = b"dicesim.meta"
_VERSION_KEY = b"dicesim.schema_version"
_MAGIC = b"PAR1"
_ARROW_TYPES: dict[str, pa.DataType] = {
    "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(), "str": pa.string(),
}
ARROW_SCHEMA = pa.schema([pa.field(c, _ARROW_TYPES[d], nullable=False) for c, d in DTYPES.items()])


def dump_parquet(df: pd.DataFrame, meta: TraceMeta, path: str | Path, *, check: bool = True) -> None:
    """Write ``df`` as Parquet to ``path`` directly; not atomic (``write_parquet`` is).

    ``check`` validates first (no exclusivity rule); pass False only for a table that was
    just validated.
    """
    if check:
        validate_events(df, exclusive_streams=())
    arrays = [pa.array(df[c].astype(object) if DTYPES[c] == "str" else df[c].to_numpy(), type=ARROW_SCHEMA.field(c).type)
              for c in COLUMNS]
    schema = ARROW_SCHEMA.with_metadata({_VERSION_KEY: SCHEMA_VERSION.encode(), _META_KEY: meta.to_json().encode()})
    table = pa.Table.from_arrays(arrays, schema=schema)
    pq.write_table(table, str(path), compression="zstd")


def _check_magic(path: Path) -> None:
    check_regular_file(path, lambda problem: TraceError(path, problem))  # a FIFO would block the read
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(4)
            fh.seek(max(size - 4, 0))
            tail = fh.read(4)
    except OSError as exc:
        raise TraceError(path, f"cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise TraceError(path, "empty file, expected a Parquet event table")
    if head != _MAGIC:
        raise TraceError(path, "not a Parquet file (no PAR1 magic at the start)")
    if size < 12 or tail != _MAGIC:
        raise TraceError(path, f"truncated Parquet file (no PAR1 footer; {size} bytes)")


def _arrow_problem(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def read_parquet_meta(path: str | Path) -> TraceMeta:
    """Only the metadata of a Parquet trace (reads the footer, not the data)."""
    path = Path(path)
    _check_magic(path)
    check_file_size(path, MAX_PARQUET_BYTES, lambda problem: TraceError(path, problem), what="Parquet trace")
    try:
        schema = pq.read_schema(str(path))
    except PARQUET_ERRORS as exc:
        raise TraceError(path, f"corrupt Parquet footer: {_arrow_problem(exc)}") from None
    return _meta_from_schema(schema, path)


def is_trace_parquet(path: str | Path) -> bool:
    """Whether a Parquet file carries a trace's schema version (only its footer is read). A
    file that cannot be read counts as a trace, so that the trace reader says what is wrong."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > MAX_PARQUET_BYTES:
            return True  # the trace reader names what is wrong (a FIFO is never opened here)
        md = pq.read_schema(str(path)).metadata or {}
    except PARQUET_ERRORS:
        return True
    return _VERSION_KEY in md


def _meta_from_schema(schema: pa.Schema, path: Path) -> TraceMeta:
    md = schema.metadata or {}
    version = md.get(_VERSION_KEY)
    check_schema_version(version.decode("utf-8", "replace") if version is not None else None, path)
    try:
        text = md.get(_META_KEY, b"").decode("utf-8")
    except UnicodeDecodeError:
        raise TraceError(path, "Parquet metadata 'dicesim.meta' is not valid JSON (not UTF-8)") from None
    raw = parse_json_bounded(text, lambda problem: TraceError(path, f"Parquet metadata 'dicesim.meta': {problem}"))
    return TraceMeta.from_dict(raw, path)


def _check_size(path: Path, meta: pq.FileMetaData) -> None:
    """Refuse tables too large to load before Arrow allocates them (limits: docs/limits.md)."""
    if meta.num_rows > MAX_TRACE_EVENTS:
        raise TraceError(path, f"{meta.num_rows:,} events, more than the {MAX_TRACE_EVENTS:,} limit (see docs/limits.md)")
    check_unpacked_size(meta, lambda problem: TraceError(path, problem))


def check_unpacked_size(meta: pq.FileMetaData, fail: Callable[[str], Exception]) -> None:
    """Refuse a Parquet file whose row groups (from the footer) unpack past the limit."""
    unpacked = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if unpacked > MAX_PARQUET_UNCOMPRESSED_BYTES:
        raise fail(f"row groups unpack to {human_bytes(unpacked)}, more than the "
                   f"{human_bytes(MAX_PARQUET_UNCOMPRESSED_BYTES)} limit (see docs/limits.md)")


def read_parquet(path: str | Path) -> tuple[pd.DataFrame, TraceMeta]:
    """Read a Parquet trace written by ``dump_parquet``/``write_parquet``: (events, meta).

    One-line TraceError for: empty, foreign or truncated files, corrupt pages, wrong schema
    version, missing columns, columns of the wrong type, rows that break the schema.
    """
    path = Path(path)
    meta = read_parquet_meta(path)
    try:
        footer = pq.read_metadata(str(path))
    except PARQUET_ERRORS as exc:
        raise TraceError(path, f"corrupt Parquet footer: {_arrow_problem(exc)}") from None
    _check_size(path, footer)
    schema = footer.schema.to_arrow_schema()
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise TraceError(path, "missing column(s): " + ", ".join(missing))
    for c in COLUMNS:
        have, want = schema.field(c).type, ARROW_SCHEMA.field(c).type
        if have != want and not (want == pa.string() and have == pa.large_string()):
            raise TraceError(path, f"column {c!r} has Arrow type {have}, expected {want}")
    try:  # bounded by what the columns decode to, not only by the footer's encoded sizes
        table = read_table_bounded(path, lambda problem: TraceError(path, problem), columns=COLUMNS,
                                   max_decoded_nbytes=MAX_PARQUET_DECODED_BYTES)
    except PARQUET_ERRORS as exc:
        raise TraceError(path, f"corrupt Parquet data: {_arrow_problem(exc)}") from None
    if table.num_rows and any(table.column(c).null_count for c in COLUMNS):
        bad = next(c for c in COLUMNS if table.column(c).null_count)
        raise TraceError(path, f"column {bad!r} has null values")
    df = coerce_events(table.to_pandas())
    validate_events(df, exclusive_streams=(), where=path)
    return df, meta
