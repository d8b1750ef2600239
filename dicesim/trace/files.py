"""Atomic trace files on disk and reading them back by suffix or by directory.

A trace named ``<stem>`` is the pair ``<stem>.trace.json`` (Chrome/Perfetto) and
``<stem>.events.parquet`` (analysis). Every writer goes through a temporary file in the
target directory and ``os.replace``, so a crash or a full disk never leaves a half-written
trace under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dicesim.atomic import write_all_atomic
from dicesim.errors import TraceError
from dicesim.trace.chrome import dump_chrome, read_chrome
from dicesim.trace.parquet import dump_parquet, read_parquet
from dicesim.trace.schema import DEFAULT_EXCLUSIVE, TraceMeta, validate_events

JSON_SUFFIX = ".trace.json"
PARQUET_SUFFIX = ".events.parquet"
_TRACE_SUFFIXES = (PARQUET_SUFFIX, JSON_SUFFIX + ".gz", JSON_SUFFIX)


def write_chrome(df: pd.DataFrame, meta: TraceMeta, path: str | Path, *,
                 exclusive_streams: Iterable[str] = DEFAULT_EXCLUSIVE) -> Path:
    """Validate ``df`` and write it atomically as Chrome JSON (.json, or gzip for .json.gz)."""
    path = Path(path)
    validate_events(df, exclusive_streams=exclusive_streams, where=path)
    gz = path.name.endswith(".gz")
    write_all_atomic([(path, lambda tmp: dump_chrome(df, meta, tmp, compress=gz, check=False))])
    return path


def write_parquet(df: pd.DataFrame, meta: TraceMeta, path: str | Path, *,
                  exclusive_streams: Iterable[str] = DEFAULT_EXCLUSIVE) -> Path:
    """Validate ``df`` and write it atomically as Parquet."""
    path = Path(path)
    validate_events(df, exclusive_streams=exclusive_streams, where=path)
    write_all_atomic([(path, lambda tmp: dump_parquet(df, meta, tmp, check=False))])
    return path


def write_trace(df: pd.DataFrame, meta: TraceMeta, out_dir: str | Path, stem: str, *,
                exclusive_streams: Iterable[str] = DEFAULT_EXCLUSIVE,
                gzip_json: bool = False) -> dict[str, Path]:
    """Write ``<stem>.trace.json[.gz]`` and ``<stem>.events.parquet`` into ``out_dir``.

    Validates once, creates ``out_dir`` if needed, writes both to temp files and only then
    renames them into place. Returns ``{"json": path, "parquet": path}``.
    """
    if not stem or "/" in stem or os.sep in stem or stem.startswith("."):
        raise TraceError(stem, "trace stem must be a plain, non-hidden file name")
    out = Path(out_dir)
    validate_events(df, exclusive_streams=exclusive_streams, where=out / stem)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / (stem + JSON_SUFFIX + (".gz" if gzip_json else ""))
    parquet_path = out / (stem + PARQUET_SUFFIX)
    write_all_atomic([
        (parquet_path, lambda tmp: dump_parquet(df, meta, tmp, check=False)),
        (json_path, lambda tmp: dump_chrome(df, meta, tmp, compress=gzip_json, check=False)),
    ])
    return {"json": json_path, "parquet": parquet_path}


def _read_file(path: Path) -> tuple[pd.DataFrame, TraceMeta]:
    name = path.name
    if name.endswith(".parquet"):
        return read_parquet(path)
    if name.endswith(".json") or name.endswith(".json.gz"):
        return read_chrome(path)
    raise TraceError(path, "unknown trace file type (allowed: .parquet, .json, .json.gz)")


def trace_stems(directory: str | Path) -> dict[str, Path]:
    """``stem -> file`` for every trace in ``directory``, the Parquet copy preferred over JSON."""
    found: dict[str, Path] = {}
    for path in sorted(Path(directory).iterdir()):
        for suffix in _TRACE_SUFFIXES:  # Parquet first: faster and smaller than the JSON twin
            if path.is_file() and path.name.endswith(suffix) and not path.name.startswith("."):
                found.setdefault(path.name[: -len(suffix)], path)
    return dict(sorted(found.items()))


def read_trace_dir(directory: str | Path) -> tuple[pd.DataFrame, list[TraceMeta]]:
    """All traces in ``directory`` concatenated, with an extra ``trace`` column (the stem).

    Metas come in the same (sorted-by-stem) order as the ``trace`` values. Drop the
    ``trace`` column to get a schema table back.
    """
    stems = trace_stems(directory)
    if not stems:
        raise TraceError(directory, f"no trace files (*{PARQUET_SUFFIX}, *{JSON_SUFFIX}[.gz]) in directory")
    frames, metas = [], []
    for stem, path in stems.items():
        df, meta = _read_file(path)
        frames.append(df.assign(trace=pd.Series([stem] * len(df), dtype="str")))
        metas.append(meta)
    return pd.concat(frames, ignore_index=True), metas


def read_trace(path: str | Path) -> tuple[pd.DataFrame, TraceMeta | list[TraceMeta]]:
    """Read one trace file (.parquet, .json, .json.gz) -> (events, meta).

    A directory gives ``read_trace_dir``'s (events with a ``trace`` column, list of metas).
    """
    path = Path(path)
    if path.is_dir():
        return read_trace_dir(path)
    if not path.exists():
        raise TraceError(path, "no such file or directory")
    return _read_file(path)
