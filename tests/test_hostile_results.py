"""Named hostile inputs for the readers added after the hostile-input work: result files and
tables, study files, the published and acceptance sets as `check` sees them, and what their
fuzzing found in older readers (each case is a class of docs/fuzzing.md, made small)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from dicesim.trace import read_trace, write_trace
from fuzz_cases import EXEC_TRACE
from test_hostile_inputs import _err


def _exec_doc() -> dict:
    return json.loads(EXEC_TRACE.read_text())


def _write(tmp_path, name, doc) -> str:
    f = tmp_path / name
    f.write_text(json.dumps(doc))
    return str(f)


def _bad_utf8(n: int) -> pa.Array:
    """A string array whose every value is the byte 0xa7, which no UTF-8 text starts with."""
    offsets = pa.array(range(n + 1), pa.int32()).buffers()[1]
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(b"\xa7" * n)])


# --- found in older readers ----------------------------------------------------------------
def test_sync_layers_of_lists_in_trace_metadata(tmp_path, capsys):
    doc = _exec_doc()
    doc["otherData"]["scenario"]["strategy"]["sync_layers"] = [["deep"]]
    line = _err(capsys, ["calibrate", _write(tmp_path, "s.trace.json", doc), "--out", str(tmp_path / "p.toml")])
    assert "scenario.strategy.sync_layers" in line and "'deep'" in line
    assert not (tmp_path / "p.toml").exists()


def test_invalid_utf8_in_a_parquet_trace(tmp_path, capsys):
    df, meta = read_trace(EXEC_TRACE)
    path = write_trace(df, meta, tmp_path, "t")["parquet"]
    table = pq.read_table(path)
    i = table.schema.get_field_index("name")
    pq.write_table(table.set_column(i, "name", _bad_utf8(table.num_rows)), path)
    assert "corrupt Parquet data" in _err(capsys, ["check", str(path)])
