"""Named hostile inputs for the readers added after the hostile-input work: result files and
tables, study files, the published and acceptance sets as `check` sees them, and what their
fuzzing found in older readers (each case is a class of docs/fuzzing.md, made small)."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dicesim.cli import main
from dicesim.trace import read_trace, write_trace
from fuzz_cases import ACCEPTANCE, EXEC_TRACE, PUBLISHED
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


@pytest.mark.parametrize("argv", [["check"], ["results", "report"]])
def test_column_name_not_utf8_in_a_parquet_footer(tmp_path, capsys, argv):
    f = tmp_path / "t.parquet"
    pq.write_table(pa.table({"step_latency_s": [0.1]}), f, store_schema=False)
    f.write_bytes(f.read_bytes().replace(b"step_latency_s", b"\x84tep_latency_s"))
    line = _err(capsys, [*argv, str(f)])
    assert "t.parquet: " in line and "can't decode byte 0x84" in line


# --- result files ----------------------------------------------------------------------------
@pytest.mark.parametrize("edit, needle", [
    (lambda s: s["step_latency_s"].__setitem__(1, None), "executor summary.step_latency_s.1: Input should be a valid number"),
    (lambda s: s.__setitem__("step_latency_s", [{}]), "executor summary.step_latency_s.0"),
    (lambda s: s.__setitem__("exposed_comm_s_per_rank", [[0.1], [0.1, 0.2]]), "one value per step (6)"),
    (lambda s: s.__setitem__("steps", [6]), "executor summary.steps"),
])
def test_executor_summary_is_typed(tmp_path, capsys, edit, needle):
    doc = _exec_doc()
    edit(doc["otherData"]["extra"]["summary"])
    out = tmp_path / "t.csv"
    assert needle in _err(capsys, ["results", "table", _write(tmp_path, "x.trace.json", doc), "--out", str(out)])
    assert not out.exists()


def test_trace_metadata_of_the_wrong_type(tmp_path, capsys):
    doc = _exec_doc()
    doc["otherData"] = [1]
    assert "trace metadata is a list" in _err(capsys, ["results", "table", _write(tmp_path, "o.trace.json", doc)])


@pytest.mark.parametrize("text, needle", [("1e999", "inf is not a finite number"), ("NaN", "not a JSON number"),
                                           ("[" * 100 + "]" * 100, "nested deeper than 32")])
def test_result_json_numbers_and_nesting(tmp_path, capsys, text, needle):
    f = tmp_path / "r.json"
    f.write_text('{"schema": "dicesim-result/1", "step_latency_s": ' + text + "}")
    assert needle in _err(capsys, ["results", "table", str(f)])


def test_gzipped_trace_is_a_result_file(tmp_path, capsys):
    f = tmp_path / "g.trace.json.gz"
    f.write_bytes(gzip.compress(EXEC_TRACE.read_bytes()))
    assert main(["results", "table", str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "executor"


# --- result tables ---------------------------------------------------------------------------
@pytest.fixture
def table(tmp_path, capsys):
    path = tmp_path / "t.parquet"
    assert main(["results", "table", str(EXEC_TRACE), "--out", str(path)]) == 0
    capsys.readouterr()
    return path


def _report(capsys, path, code=2):
    out = path.with_suffix(".html")
    line = _err(capsys, ["results", "report", str(path), "--out", str(out)]) if code == 2 else None
    assert not out.exists()
    return line


def test_table_with_invalid_utf8(table, capsys):
    t = pq.read_table(table)
    pq.write_table(t.set_column(t.schema.get_field_index("label"), "label", _bad_utf8(t.num_rows)), table)
    assert "not a readable Parquet table" in _report(capsys, table)


@pytest.mark.parametrize("column, values, needle", [
    ("step_latency_s", ["x"], "column 'step_latency_s': holds 'x' (allowed: numbers"),
    ("step_latency_s", [float("inf")], "column 'step_latency_s': holds an infinite value"),
    ("batch", [True], "column 'batch': holds 'True'"),
    ("status", [1.5], "column 'status': holds '1.5' (allowed: text)"),
    ("label", [[1, 2]], "column 'label': holds list<element: int64> values"),
])
def test_table_columns_are_typed(table, capsys, column, values, needle):
    t = pq.read_table(table)
    arr = pa.array(values)
    i = t.schema.get_field_index(column)
    t = t.set_column(i, column, arr) if i >= 0 else t.append_column(column, arr)
    pq.write_table(t, table)
    assert needle in _report(capsys, table)


def test_table_pandas_metadata_is_not_trusted(table, capsys):
    t = pq.read_table(table)
    md = dict(t.schema.metadata)
    pandas_md = json.loads(md[b"pandas"])
    pandas_md["columns"][0]["name"] = 7  # pandas named the column 7: the explorer called 7.endswith
    md[b"pandas"] = json.dumps(pandas_md).encode()
    pq.write_table(t.replace_schema_metadata(md), table)
    assert main(["results", "report", str(table), "--out", str(table.with_suffix(".html"))]) == 0


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_table_row_limit(tmp_path, capsys, monkeypatch, suffix):
    import dicesim.result_files as result_files

    monkeypatch.setattr(result_files, "MAX_RESULT_TABLE_ROWS", 2)
    f = tmp_path / f"t{suffix}"
    df = pd.DataFrame({"strategy": ["a", "b", "c"], "step_latency_s": [0.1, 0.2, 0.3]})
    df.to_parquet(f) if suffix == ".parquet" else df.to_csv(f, index=False)
    assert "3 rows, more than the 2 a table may hold" in _report(capsys, f)


def test_csv_table_with_text_in_a_metric(tmp_path, capsys):
    f = tmp_path / "t.csv"
    f.write_text("strategy,step_latency_s,weighted_lag_steps\ndice,0.1,0.5\nsync,fast,0\n")
    assert "column 'step_latency_s': holds 'fast'" in _report(capsys, f)


# --- study files ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, needle", [
    ("", "s.toml: [study]: is required"),
    ("[study]\nsteps = 1000000\n", "s.toml: study.steps: Input should be less than or equal to 10000"),
    ("[study]\nbatches = [0]\n", "study.batches.0: Input should be greater than or equal to 1"),
    ("[study]\nbase = 3\n", "study.base: unknown key"),
    ("[study]\nmodels = ['tiny']\ntopologies = ['4x-l40s-pcie']\nbatches = " + str(list(range(1, 2001))) + "\nimage_sizes = "
     + str(list(range(32, 132))) + "\n", "configurations, more than the 100,000 a study may hold"),
])
def test_study_file_fields(tmp_path, capsys, text, needle):
    f = tmp_path / "s.toml"
    f.write_text(text)
    out = tmp_path / "out"
    assert needle in _err(capsys, ["study", str(f), "--out", str(out), "--workers", "0"])
    assert not out.exists()
    if text:  # `check` tells a study by its [study] table: an empty file is an (empty) scenario to it
        assert needle in _err(capsys, ["check", str(f)])


def test_page_that_out_rewrites_must_be_text(tmp_path, capsys):
    page = tmp_path / "accuracy.md"
    page.write_bytes(b"<!-- published:begin -->\xac\x00")
    line = _err(capsys, ["accuracy", "--published", str(PUBLISHED), "--out", str(page)])
    assert "not a UTF-8 text page (byte 0xac at offset 24)" in line
    assert page.read_bytes() == b"<!-- published:begin -->\xac\x00"


# --- check knows every kind ------------------------------------------------------------------
def test_check_recognises_each_kind(tmp_path, capsys, table):
    study = tmp_path / "s.toml"
    study.write_text('[study]\nmodels = ["tiny"]\ntopologies = ["4x-l40s-pcie"]\nbatches = [1, 2]\n')
    result = tmp_path / "r.json"
    assert main(["results", "table", str(EXEC_TRACE), "--json"]) == 0
    result.write_text(capsys.readouterr().out)
    paths = [PUBLISHED, ACCEPTANCE, study, result, table, EXEC_TRACE]
    assert main(["check", *map(str, paths)]) == 0
    kinds = [line.split(": ", 1)[1].split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert kinds == ["published set", "acceptance set", "study", "result", "result table", "trace"]
