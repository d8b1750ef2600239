"""Mutations of valid input files for the hostile-input fuzzing (tests/fuzz_cases.py).

Structured mutations work on a parsed document (TOML/JSON), a Parquet table, a CSV table, a
.npy array or a torch checkpoint: wrong types, missing and unknown keys, extra nesting,
NaN/inf, huge integers, reshaped or renamed weights. Byte-level mutations work on the file:
truncation, flipped and inserted bytes, repeated slices, random bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

# --- replacement values: what a hostile or careless writer puts where a value was ---------
HUGE_INTS = (2**63, -(2**63) - 1, 2**64 + 1, 10**30, -(10**40))
NON_FINITE = (math.nan, math.inf, -math.inf)


def _nested(value: object, depth: int) -> object:
    for _ in range(depth):
        value = [value]
    return value


def replacement(draw: st.DrawFn, *, toml: bool) -> object:
    """A value of the wrong type, range or shape (TOML has no null: None is left out there)."""
    kinds = ["huge", "nonfinite", "string", "bool", "list", "table", "nested", "negative", "zero", "float", "empty"]
    if not toml:
        kinds.append("null")
    kind = draw(st.sampled_from(kinds))
    if kind == "huge":
        return draw(st.sampled_from(HUGE_INTS))
    if kind == "nonfinite":
        return draw(st.sampled_from(NON_FINITE))
    if kind == "string":
        return draw(st.sampled_from(["", "x", "two", "1e3", "-1", "nan", "\x00", "é" * 3, "[", "{}"]))
    if kind == "bool":
        return draw(st.booleans())
    if kind == "list":
        return draw(st.lists(st.integers(-3, 3), max_size=3))
    if kind == "table":
        return {"x": draw(st.integers(-2, 2))}
    if kind == "nested":
        return _nested(1, draw(st.integers(20, 60)))
    if kind == "negative":
        return -draw(st.integers(1, 10**6))
    if kind == "zero":
        return 0
    if kind == "float":
        return draw(st.sampled_from([0.5, -0.5, 1e300, -1e-300, 3.0]))
    if kind == "empty":
        return draw(st.sampled_from([[], {}]))
    return None


def _paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside ``doc`` (dict keys and list indices), lists cut at 4 items."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:4]):
            out += _paths(v, prefix + (i,))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def mutate_doc(draw: st.DrawFn, doc: Any, *, toml: bool, focus: tuple = ()) -> Any:
    """A deep copy of ``doc`` with one structured mutation (paths under ``focus`` are preferred)."""
    doc = json.loads(json.dumps(doc))
    paths = _paths(doc)
    focused = [p for p in paths if p[: len(focus)] == focus] if focus else []
    path = draw(st.sampled_from(focused if focused and draw(st.booleans()) else paths))
    parent, key = _get(doc, path[:-1]), path[-1]
    op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "wrap"]))
    if op == "delete" and not (isinstance(parent, list) and toml and len(parent) == 1):
        del parent[key]
    elif op == "add" and isinstance(parent, dict):
        parent[draw(st.sampled_from(["zz_unknown", "batch", "model", "steps", "router_hist", "schema_version"]))] = \
            replacement(draw, toml=toml)
    elif op == "wrap":
        parent[key] = _nested(parent[key], draw(st.integers(2, 50)))
    else:
        parent[key] = replacement(draw, toml=toml)
    return doc


def mutate_bytes(draw: st.DrawFn, raw: bytes) -> bytes:
    """Truncation, flipped bytes, inserted bytes, a duplicated slice or random bytes."""
    op = draw(st.sampled_from(["truncate", "flip", "insert", "duplicate", "random"]))
    if op == "random" or not raw:
        return draw(st.binary(max_size=256))
    i = draw(st.integers(0, len(raw) - 1))
    if op == "truncate":
        return raw[:i]
    if op == "flip":
        n = draw(st.integers(1, 8))
        b = bytearray(raw)
        for j in range(i, min(i + n, len(b))):
            b[j] ^= draw(st.integers(1, 255))
        return bytes(b)
    if op == "insert":
        return raw[:i] + draw(st.binary(min_size=1, max_size=16)) + raw[i:]
    j = draw(st.integers(i, min(len(raw), i + 64)))
    return raw[:j] + raw[i:j] * draw(st.integers(2, 50)) + raw[j:]


def mutate_parquet(draw: st.DrawFn, path: Path) -> bytes:
    """A Parquet file with its JSON metadata mutated (dicesim's, else pandas'), a column
    replaced by strings, floats, NaN, infinity, huge integers or nulls, or a column dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    md = dict(table.schema.metadata or {})
    key = next((k for k in (b"dicesim.meta", b"pandas") if k in md), None)
    if key is not None and draw(st.booleans()):
        md[key] = json.dumps(mutate_doc(draw, json.loads(md[key]), toml=False)).encode()
        table = table.replace_schema_metadata(md)
    else:
        col = draw(st.sampled_from(table.column_names))
        i = table.column_names.index(col)
        n = table.num_rows
        kind = draw(st.sampled_from(["strings", "floats", "nan", "inf", "huge", "nulls", "drop"]))
        if kind == "drop":
            table = table.remove_column(i)
        else:
            arr = {"strings": lambda: pa.array(["x"] * n), "floats": lambda: pa.array([0.5] * n),
                   "nan": lambda: pa.array([math.nan] * n), "inf": lambda: pa.array([-math.inf] * n),
                   "huge": lambda: pa.array([2**62] * n, pa.int64()),
                   "nulls": lambda: pa.array([None] * n, table.schema.field(col).type)}[kind]()
            table = table.set_column(i, pa.field(col, arr.type), arr)
        table = table.replace_schema_metadata(md)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def mutate_csv(draw: st.DrawFn, raw: bytes) -> bytes:
    """A CSV file with one cell replaced by a hostile value, a row cut short or a column added."""
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
    r = draw(st.integers(0, len(rows) - 1))
    op = draw(st.sampled_from(["cell", "cell", "cell", "short", "extra"]))
    if op == "short" and len(rows[r]) > 1:
        rows[r] = rows[r][: draw(st.integers(0, len(rows[r]) - 1))]
    elif op == "extra":
        rows[r] = rows[r] + ["1"]
    else:
        c = draw(st.integers(0, max(len(rows[r]) - 1, 0)))
        value = draw(st.sampled_from(["", "nan", "inf", "-inf", "1e999", "x", "True", str(2**64), "-" + "9" * 30,
                                      "[1, 2]", '"', "\x00", "1,2"]))
        rows[r][c:c + 1] = [value]
    sink = io.StringIO()
    csv.writer(sink, lineterminator="\n").writerows(rows)
    return sink.getvalue().encode("utf-8")


def mutate_npy(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["nan", "negative", "strings", "complex", "3d", "empty", "zeros", "shape"]))
    arr = {
        "nan": np.full((4, 4), math.nan), "negative": -np.ones((4, 4)), "strings": np.array([["a", "b"]]),
        "complex": np.ones((4, 4), complex), "3d": np.ones((2, 4, 4)), "empty": np.zeros((0,)),
        "zeros": np.zeros((4, 4)), "shape": np.ones((3, 5)),
    }[kind]
    sink = io.BytesIO()
    np.save(sink, arr)
    return sink.getvalue()


def mutate_checkpoint(draw: st.DrawFn, path: Path) -> bytes:
    import torch

    state = torch.load(path, weights_only=True)
    key = draw(st.sampled_from(sorted(state)))
    kind = draw(st.sampled_from(["drop", "nan", "int", "shape", "list", "wrap", "rename"]))
    if kind == "drop":
        del state[key]
    elif kind == "nan":
        state[key] = state[key].clone().fill_(math.nan)
    elif kind == "int":
        state[key] = state[key].to(torch.int64)
    elif kind == "shape":
        state[key] = torch.zeros(state[key].numel() + 1)
    elif kind == "list":
        state[key] = [1, 2, 3]
    elif kind == "wrap":
        state = {"model": {"nested": state}}
    else:
        state["blocks.99." + key] = state.pop(key)
    sink = io.BytesIO()
    torch.save(state, sink)
    return sink.getvalue()
