"""Parquet storage: exact round trip and metadata in the Arrow schema."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings

from dicesim.errors import TraceError
from dicesim.trace import dump_parquet, read_parquet, read_parquet_meta
from trace_cases import event_rows, golden, meta, table


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=event_rows())
def test_parquet_round_trip_is_exact(tmp_path, rows):
    df = table(rows)
    m = meta(scenario={"rows": len(rows)})
    dump_parquet(df, m, tmp_path / "t.events.parquet")
    back, m2 = read_parquet(tmp_path / "t.events.parquet")
    pd.testing.assert_frame_equal(back, df)
    assert m2 == m


def test_meta_lives_in_schema_metadata(tmp_path):
    path = tmp_path / "g.events.parquet"
    dump_parquet(golden(), meta(), path)
    md = pq.read_schema(path).metadata
    assert md[b"dicesim.schema_version"] == b"dicesim-trace/1"
    assert b'"strategy":"dice"' in md[b"dicesim.meta"]
    assert read_parquet_meta(path) == meta()
    assert pq.read_table(path).num_rows == len(golden())


def test_category_stream_is_stored_as_text(tmp_path):
    df = golden()
    dump_parquet(df.astype({"stream": "category"}), meta(), tmp_path / "c.events.parquet")
    back, _ = read_parquet(tmp_path / "c.events.parquet")
    pd.testing.assert_frame_equal(back, df)
    assert pq.read_schema(tmp_path / "c.events.parquet").field("stream").type == pa.string()


def test_nulls_and_bad_rows_written_by_others_are_refused(tmp_path):
    path = tmp_path / "n.events.parquet"
    dump_parquet(golden(), meta(), path)
    table = pq.read_table(path)
    md = table.schema.metadata
    names = table.column("name").to_pylist()
    names[3] = None
    nulls = table.set_column(table.schema.get_field_index("name"), "name", pa.array(names, pa.string()))
    pq.write_table(nulls.replace_schema_metadata(md), path)
    with pytest.raises(TraceError, match="column 'name' has null values"):
        read_parquet(path)
    ends = table.column("end_us").to_pylist()
    ends[2] = 1.0  # dispatch starts at 12.0
    bad = table.set_column(table.schema.get_field_index("end_us"), "end_us", pa.array(ends, pa.float64()))
    pq.write_table(bad.replace_schema_metadata(md), path)
    with pytest.raises(TraceError, match=r"row 2 \('dispatch'.*ends before it starts") as info:
        read_parquet(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_extra_columns_in_a_file_are_ignored(tmp_path):
    path = tmp_path / "x.events.parquet"
    dump_parquet(golden(), meta(), path)
    table = pq.read_table(path)
    pq.write_table(table.append_column("note", pa.array(["x"] * table.num_rows)), path)
    back, _ = read_parquet(path)
    pd.testing.assert_frame_equal(back, golden())
