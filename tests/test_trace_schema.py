"""Schema checks: dtypes, the recorder, metadata, and every validate_events rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dicesim.errors import ConfigError, TraceError
from dicesim.trace import (
    COLUMNS, DTYPES, SCHEMA_VERSION, EventRecorder, TraceMeta, coerce_events, empty_events, validate_events,
)
from trace_cases import golden, meta


def test_recorder_builds_canonical_dtypes_in_order():
    df = golden()
    assert tuple(df.columns) == COLUMNS
    for col, dtype in DTYPES.items():
        assert str(df[col].dtype) == dtype, col
    assert df["name"].tolist()[:3] == ["attention", "gate", "dispatch"]
    assert df.loc[3, "tok_step"] == -1 and df.loc[0, "flops"] == 2e9
    assert (df["source"] == "sim").all()
    validate_events(df, exclusive_streams=("compute",))


def test_empty_recorder_and_empty_table_are_valid():
    assert len(EventRecorder().to_frame()) == 0
    validate_events(empty_events())
    assert tuple(empty_events().columns) == COLUMNS


def test_recorder_rejects_overflow_and_fractional_ints():
    rec = EventRecorder()
    rec.add(0, "compute", "compute", "x", 0.0, 1.0, layer=2**31)
    with pytest.raises(TraceError, match="outside int32"):
        rec.to_frame()
    rec = EventRecorder()
    rec.add(0, "compute", "compute", "x", 0.0, 1.0, rows=1.5)
    with pytest.raises(TraceError, match="needs integers"):
        rec.to_frame()


def test_unknown_source_is_a_config_error():
    with pytest.raises(ConfigError, match="allowed: sim, executor, kineto"):
        EventRecorder("gpu")
    with pytest.raises(ConfigError, match="source"):
        TraceMeta(source="nope")


def test_meta_dict_round_trip_and_unknown_keys_refused():
    m = meta()
    assert TraceMeta.from_dict(m.to_dict()) == m
    d = {**m.to_dict(), "future_field": 3}  # issue 19: every table of every input refuses unknown keys
    with pytest.raises(TraceError, match=r"metadata.future_field: unknown key \(allowed: source, schema_version"):
        TraceMeta.from_dict(d)
    with pytest.raises(TraceError, match="unsupported schema version 'dicesim-trace/0'"):
        TraceMeta.from_dict({**m.to_dict(), "schema_version": "dicesim-trace/0"})
    with pytest.raises(TraceError, match="'world_size' is '4', expected int"):
        TraceMeta.from_dict({**m.to_dict(), "world_size": "4"})
    with pytest.raises(ConfigError, match="not JSON-serialisable"):
        meta(extra={"x": object()}).to_json()
    assert m.schema_version == SCHEMA_VERSION


def _bad(df: pd.DataFrame, match: str, **kw) -> None:
    with pytest.raises(TraceError, match=match) as info:
        validate_events(df, **kw)
    assert "\n" not in str(info.value)


def test_missing_extra_and_wrongly_typed_columns():
    df = golden()
    _bad(df.drop(columns=["rows", "peer"]), r"missing column\(s\): rows, peer")
    _bad(df.assign(extra=1), r"unexpected column\(s\): extra")
    validate_events(df.assign(extra=1), allow_extra=True)
    _bad(df.astype({"rank": "int64"}), "column 'rank' has dtype int64, expected int32")
    _bad(df.astype({"start_us": "float32"}), "column 'start_us' has dtype float32, expected float64")
    validate_events(df.astype({"stream": "category"}))  # category is an accepted stream dtype


def test_row_rules_name_the_row():
    df = golden()
    _bad(df.assign(end_us=np.where(df.index == 2, 5.0, df["end_us"])), r"row 2 \('dispatch'.*ends before it starts")
    _bad(df.assign(start_us=np.where(df.index == 1, -1.0, df["start_us"])), "'start_us' is negative at row 1")
    _bad(df.assign(end_us=np.where(df.index == 1, np.nan, df["end_us"])), "NaN or infinite at row 1")
    _bad(df.assign(kind=["compute"] * 7 + ["bogus"]), "'kind' has 'bogus' at row 7")
    _bad(df.assign(source=["sim"] * 7 + ["gpu"]), "'source' has 'gpu'")
    _bad(df.assign(layer=np.array([-2] + [0] * 7, dtype="int32")), "'layer' is below -1 at row 0")
    _bad(df.assign(nbytes=np.array([-1] + [0] * 7, dtype="int64")), "'nbytes' is below 0")
    _bad(df.assign(rank=np.array([0] * 7 + [3], dtype="int32")), "rank must be -1 on link rows")
    _bad(df.assign(name=pd.Series(["a"] * 7 + [None], dtype=object)), "'name' holds a non-string value at row 7")


def test_overlap_only_forbidden_on_exclusive_streams():
    df = golden()
    validate_events(df)  # comm overlaps (async collectives) are allowed by default
    _bad(df, r"overlapping events on exclusive track \(rank 0, stream 'comm'\): 'dispatch' \[12.0, 30.0\]",
         exclusive_streams=("comm",))
    nested = df.copy()
    nested.loc[4, ["start_us", "end_us"]] = [3.0, 4.0]  # experts inside attention on rank 0
    _bad(nested, "'attention' .* and 'experts'")
    sub = df.copy()
    sub.loc[[2, 3], "stream"] = ["comm:a2a", "comm:a2a"]
    _bad(sub, "stream 'comm:a2a'", exclusive_streams=("comm",))  # a prefix covers its sub-streams


def test_coerce_casts_losslessly_or_fails():
    df = golden().astype({"rank": "int64", "stream": "category", "nbytes": "float64"})
    out = coerce_events(df)
    validate_events(out)
    pd.testing.assert_frame_equal(out, golden())
    with pytest.raises(ValueError, match="without loss"):
        coerce_events(df.assign(rank=np.int64(2**40)))
