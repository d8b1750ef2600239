"""Reading result files and result tables (``dicesim results``, ``dicesim check``), bounded and typed.

A result file is a ``dicesim-result/1`` JSON record (``simulate --json``, ``validate run
--json``), an executor summary written before the schema (``summary.json``), or a trace whose
metadata carries one of them (``.trace.json[.gz]``, ``.events.parquet``). A result table is
a table of such records or of sweep rows (``results table --out``, ``sweep.parquet``,
``study.parquet``, ``candidates.parquet``), as Parquet or CSV. Both are read within the limits
of :mod:`dicesim.limits` and typed before a report sees them; a problem is one line naming
the file, the field or column, and what is allowed.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from dicesim.errors import ConfigError, DicesimError, config_error_from_pydantic
from dicesim.inputs import Fail, check_data, check_file_size, check_regular_file, load_json_file
from dicesim.limits import (
    MAX_JSON_TRACE_BYTES, MAX_RESULT_TABLE_BYTES, MAX_RESULT_TABLE_COLUMNS, MAX_RESULT_TABLE_ROWS, MAX_TEXT_FILE_BYTES,
)
from dicesim.results import METRIC_NAMES, RESULT_SCHEMA, RunResult, rename_legacy_columns, result_from_executor

#: table columns that must hold numbers: the schema's metrics and counts, and what sweeps add
NUMERIC_COLUMNS: tuple[str, ...] = (*METRIC_NAMES, "num_experts", "world_size", "batch", "image_size", "steps",
                                    "index", "speedup")
#: table columns that must hold text (a sweep's row status is compared with "ok")
TEXT_COLUMNS: tuple[str, ...] = ("status",)
TABLE_FORMATS = (".parquet", ".csv")


def _from_document(doc: Any, where: str) -> list[RunResult]:
    """Every run in one parsed JSON document (schema record, legacy summary, compare output)."""
    if not isinstance(doc, dict):
        raise ConfigError(where, f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("schema") == RESULT_SCHEMA:
        try:
            return [RunResult(**doc)]
        except ValidationError as exc:
            raise config_error_from_pydantic(exc, f"{where}: result", model=RunResult) from None
    if "schema" in doc:
        raise ConfigError(f"{where}: schema", f"unknown result schema {doc['schema']!r}", (RESULT_SCHEMA,))
    if "traceEvents" in doc:  # a Chrome trace: its metadata carries the run's result
        from dicesim.trace.schema import TraceMeta

        return _from_trace_meta(TraceMeta.from_dict(doc.get("otherData"), where).to_dict(), where)
    if isinstance(doc.get("step_latency_s"), list):
        return [result_from_executor(doc, where=f"{where}: executor summary")]
    raise ConfigError(where, "not a dicesim result: no 'schema' key and no executor summary "
                             "(write it with `dicesim simulate --json` or `python -m validate run --json`)")


def _from_trace_meta(meta: dict, where: str) -> list[RunResult]:
    extra = meta.get("extra") or {}
    if isinstance(extra.get("result"), dict):
        return _from_document(extra["result"], where)
    if isinstance(extra.get("summary"), dict):
        return [result_from_executor(extra["summary"], where=f"{where}: executor summary")]
    raise ConfigError(where, "trace metadata carries no run result (traces from before the result schema)")


def load_results(path: str | Path) -> list[RunResult]:
    """The runs in a result file: a ``.json`` record, an executor summary or a trace file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(p.name, f"result file not found: {p}")
    check_regular_file(p, lambda problem: ConfigError(p.name, problem))  # a FIFO is never opened
    if p.name.endswith(".parquet"):  # a Parquet trace: only its metadata is read
        from dicesim.trace.parquet import read_parquet_meta

        return _from_trace_meta(read_parquet_meta(p).to_dict(), p.name)

    def fail(problem: str) -> DicesimError:
        return ConfigError(p.name, problem)

    doc = load_json_file(p, fail, max_bytes=MAX_JSON_TRACE_BYTES, what="result file")
    check_data(doc, fail)
    return _from_document(doc, p.name)


# --- tables ---------------------------------------------------------------------------------
def load_result_table(path: str | Path) -> pd.DataFrame:
    """A result table (Parquet or CSV) with pre-schema columns renamed and its known columns typed.

    Refused with one line naming the file: a missing, oversized or unreadable file, more than
    ``MAX_RESULT_TABLE_ROWS`` rows, repeated or nested columns, text or infinity in a numeric
    column (:data:`NUMERIC_COLUMNS`), numbers in a text column.
    """
    p = Path(path)

    def fail(problem: str) -> DicesimError:
        return ConfigError(p.name, problem)

    if not p.exists():
        raise fail(f"result table not found: {p}")
    if p.suffix not in TABLE_FORMATS:
        raise ConfigError(p.name, f"unknown table format {p.suffix!r}", TABLE_FORMATS)
    check_file_size(p, MAX_RESULT_TABLE_BYTES, fail, what="result table")
    df = _read_parquet(p, fail) if p.suffix == ".parquet" else _read_csv(p, fail)
    _check_rows(len(df), fail)
    return _typed(rename_legacy_columns(df), p.name)


def _check_rows(rows: int, fail: Fail) -> None:
    if rows > MAX_RESULT_TABLE_ROWS:
        raise fail(f"{rows:,} rows, more than the {MAX_RESULT_TABLE_ROWS:,} a table may hold (see docs/limits.md)")


def _read_parquet(p: Path, fail: Fail) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dicesim.trace.parquet import PARQUET_ERRORS, check_unpacked_size
    from dicesim.trace.parquet_bounded import read_table_bounded

    flat = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string,
            pa.types.is_large_string, pa.types.is_null, pa.types.is_dictionary)
    try:
        footer = pq.read_metadata(str(p))
        _check_rows(footer.num_rows, fail)  # before any page is read
        check_unpacked_size(footer, fail)
        schema = footer.schema.to_arrow_schema()
        _check_columns(len(schema), fail)
        for field in schema:  # from the footer: a nested column is refused before it is read
            if not any(ok(field.type) for ok in flat) or (pa.types.is_dictionary(field.type) and not any(
                    ok(field.type.value_type) for ok in flat)):
                raise ConfigError(f"{p.name}: column {field.name!r}", f"holds {field.type} values",
                                  "numbers, text or booleans")
        # bounded by what the columns decode to (dictionary-encoded text), not only by the footer
        table = read_table_bounded(p, fail, max_decoded_nbytes=MAX_RESULT_TABLE_BYTES)
    except PARQUET_ERRORS as exc:
        raise fail(f"not a readable Parquet table: {' '.join(str(exc).split())[:200]}") from None
    if len(set(table.column_names)) < len(table.column_names):
        dup = next(c for c in table.column_names if table.column_names.count(c) > 1)
        raise ConfigError(f"{p.name}: column {dup!r}", "appears more than once")
    # pandas' own metadata is a second schema a hostile file can break: the Arrow one is enough
    return table.to_pandas(ignore_metadata=True)


def _check_columns(columns: int, fail: Fail) -> None:
    if columns > MAX_RESULT_TABLE_COLUMNS:
        raise fail(f"{columns:,} columns, more than the {MAX_RESULT_TABLE_COLUMNS:,} a table may have (see docs/limits.md)")


def _read_csv(p: Path, fail: Fail) -> pd.DataFrame:
    # rows and columns bounded before pandas builds anything: the header gives the columns, and
    # rows past the limit are not read (a 256 MiB file of commas would be millions of columns)
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            header = next(csv.reader([fh.readline(MAX_TEXT_FILE_BYTES)]), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise fail(f"not a readable CSV table: {' '.join(str(exc).split())[:200]}") from None
    _check_columns(len(header), fail)
    try:
        return pd.read_csv(p, encoding="utf-8", nrows=MAX_RESULT_TABLE_ROWS + 1)
    except (ValueError, OSError, csv.Error) as exc:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise fail(f"not a readable CSV table: {' '.join(str(exc).split())[:200]}") from None


def _typed(df: pd.DataFrame, name: str) -> pd.DataFrame:
    out = df.copy()
    for col in (c for c in NUMERIC_COLUMNS if c in out.columns):
        values = out[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            as_float = values.to_numpy(dtype="float64", na_value=np.nan)
        else:  # text, booleans or a mix (a CSV column with one word in it), or all missing
            numbers = [_number(v) for v in values]
            bad = next((v for v, x in zip(values, numbers) if x is None), None)
            if bad is not None:
                raise ConfigError(f"{name}: column {col!r}", f"holds {str(bad)[:40]!r}", "numbers, empty where missing")
            as_float = np.array(numbers, dtype="float64")
        if np.isinf(as_float).any():
            raise ConfigError(f"{name}: column {col!r}", "holds an infinite value", "finite numbers")
        out[col] = as_float
    for col in (c for c in TEXT_COLUMNS if c in out.columns):
        bad = next((v for v in out[col] if not isinstance(v, str) and not _missing(v)), None)
        if bad is not None:
            raise ConfigError(f"{name}: column {col!r}", f"holds {str(bad)[:40]!r}", "text")
    return out


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: object) -> float | None:
    """``value`` as a float (NaN where missing); None when it is not a number."""
    if _missing(value):
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return float(value) if isinstance(value, (int, float, np.number, str)) else None
    except (ValueError, OverflowError):
        return None
