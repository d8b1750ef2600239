"""write_trace / read_trace: atomic pairs, suffix dispatch, directories, malformed files."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dicesim.errors import DicesimError, TraceError
from dicesim.trace import read_trace, read_trace_dir, write_trace
from dicesim.trace import files as trace_files
from trace_cases import golden, meta


def test_write_trace_writes_both_and_reads_back(tmp_path):
    df = golden()
    paths = write_trace(df, meta(), tmp_path / "new", "run")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["run.events.parquet", "run.trace.json"]
    for p in paths.values():
        back, m = read_trace(p)
        pd.testing.assert_frame_equal(back, df)
        assert m == meta()
    gz = write_trace(df, meta(), tmp_path, "z", gzip_json=True)["json"]
    assert gz.name == "z.trace.json.gz"
    pd.testing.assert_frame_equal(read_trace(gz)[0], df)


def test_failed_write_leaves_no_files(tmp_path, monkeypatch):
    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(trace_files, "dump_chrome", boom)
    from dicesim.outguard import OutputError

    with pytest.raises(OutputError, match="cannot write .*disk full"):  # one line, not a traceback
        write_trace(golden(), meta(), tmp_path, "run")
    assert list(tmp_path.iterdir()) == []  # the Parquet half was written to a temp file and removed


def test_invalid_events_are_refused_before_any_write(tmp_path):
    bad = golden()
    bad.loc[0, "end_us"] = -1.0
    with pytest.raises(TraceError):
        write_trace(bad, meta(), tmp_path, "run")
    assert list(tmp_path.iterdir()) == []
    compute_overlap = golden()
    compute_overlap.loc[1, "start_us"] = 5.0  # gate starts inside attention on rank 0's compute stream
    with pytest.raises(TraceError, match="overlapping events on exclusive track"):
        write_trace(compute_overlap, meta(), tmp_path, "run")
    write_trace(compute_overlap, meta(), tmp_path, "run", exclusive_streams=())


def test_directory_reads_every_trace_once(tmp_path):
    df = golden()
    write_trace(df, meta(strategy="sync"), tmp_path, "a")
    write_trace(df.iloc[:3].reset_index(drop=True), meta(strategy="dice"), tmp_path, "b")
    all_df, metas = read_trace(tmp_path)
    assert [m.strategy for m in metas] == ["sync", "dice"]
    assert all_df["trace"].value_counts().to_dict() == {"a": len(df), "b": 3}  # no JSON+Parquet doubles
    pd.testing.assert_frame_equal(all_df[all_df["trace"] == "a"].drop(columns="trace"), df)
    assert read_trace_dir(tmp_path)[1] == metas


# ---- malformed files: each gives its own specific, one-line TraceError ----------------------

def _parquet_without(path, column: str, version: bytes = b"dicesim-trace/1"):
    table = pq.read_table(path).drop_columns([column] if column else [])
    md = dict(table.schema.metadata)
    md[b"dicesim.schema_version"] = version
    pq.write_table(table.replace_schema_metadata(md), path)


def _case_files(tmp_path):
    good = write_trace(golden(), meta(), tmp_path, "good")
    text = good["json"].read_text()
    raw_pq = good["parquet"].read_bytes()
    doc = json.loads(text)
    no_ts = json.loads(text)
    next(e for e in no_ts["traceEvents"] if e["ph"] == "X").pop("ts")
    neg = json.loads(text)
    next(e for e in neg["traceEvents"] if e["ph"] == "X")["dur"] = -1.0
    end_before = json.loads(text)
    late = next(e for e in end_before["traceEvents"] if e["ph"] == "X" and e["ts"] >= 1.0)
    late["args"]["end_us"] = late["ts"] - 0.5
    cases = {
        "truncated.json": (text[: len(text) // 2], "truncated JSON"),
        "garbage.json": (b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01", "not a JSON text file"),
        "prose.json": ("hello, I am not json", "not valid JSON: Expecting value at line 1 column 1"),
        "scalar.json": ("42", "top-level JSON is a int"),
        "array.json": ("[]", "JSON array trace carries no metadata"),
        "noevents.json": (json.dumps({"otherData": doc["otherData"]}), "missing 'traceEvents'"),
        "version.json": (json.dumps({**doc, "otherData": {**doc["otherData"], "schema_version": "x/9"}}),
                         "unsupported schema version 'x/9'"),
        "noversion.json": (json.dumps({"traceEvents": []}), "missing schema version"),
        "nots.json": (json.dumps(no_ts), "has no 'ts'"),
        "negdur.json": (json.dumps(neg), "negative dur -1.0"),
        "endbefore.json": (json.dumps(end_before), "ends before it starts"),
        "trunc.json.gz": (gzip.compress(text.encode())[:100], "truncated or corrupt gzip"),
        "truncated.events.parquet": (raw_pq[: len(raw_pq) // 2], "truncated Parquet file (no PAR1 footer"),
        "garbage.events.parquet": (b"not parquet at all, just text", "not a Parquet file (no PAR1 magic"),
        "empty.events.parquet": (b"", "empty file"),
        "unknown.txt": ("x", "unknown trace file type"),
    }
    out = {}
    for name, (content, expected) in cases.items():
        path = tmp_path / "bad" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        out[name] = (path, expected)
    for name, column, version, expected in [
        ("nocol.events.parquet", "rows", b"dicesim-trace/1", "missing column(s): rows"),
        ("oldver.events.parquet", "", b"dicesim-trace/0", "unsupported schema version 'dicesim-trace/0'"),
    ]:
        path = tmp_path / "bad" / name
        path.write_bytes(raw_pq)
        _parquet_without(path, column, version)
        out[name] = (path, expected)
    wrong_type = tmp_path / "bad" / "wrongtype.events.parquet"
    wrong_type.write_bytes(raw_pq)
    t = pq.read_table(wrong_type)
    t = t.set_column(t.schema.get_field_index("rank"), "rank", t.column("rank").cast(pa.int64()))
    pq.write_table(t.replace_schema_metadata(pq.read_schema(good["parquet"]).metadata), wrong_type)
    out["wrongtype.events.parquet"] = (wrong_type, "column 'rank' has Arrow type int64, expected int32")
    return out


def test_malformed_files_give_specific_one_line_errors(tmp_path):
    cases = _case_files(tmp_path)
    assert len(cases) >= 6
    for name, (path, expected) in cases.items():
        with pytest.raises(TraceError) as info:
            read_trace(path)
        msg = str(info.value)
        assert expected in msg, (name, msg)
        assert "\n" not in msg and msg.startswith(str(path)), (name, msg)
        assert isinstance(info.value, DicesimError) and info.value.one_line() == msg


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(TraceError, match="no such file or directory"):
        read_trace(tmp_path / "nope.parquet")
    with pytest.raises(TraceError, match="no trace files"):
        read_trace(tmp_path)
