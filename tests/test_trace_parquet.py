"""Parquet storage: exact round trip and metadata in the Arrow schema."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings

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
