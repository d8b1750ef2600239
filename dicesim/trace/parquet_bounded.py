"""Reading a Parquet table within a bound on what it decodes to, not only on what it stores.

The footer's sizes (checked first, :func:`dicesim.trace.parquet.check_unpacked_size`) are of the
encoded pages. A dictionary-encoded string column stores each distinct value once and one small
index per row, so a 16 KB file can stand for gigabytes of text once Arrow decodes it (measured:
7 GB before a MemoryError). Here every text column is read still dictionary-encoded, the size it
would decode to is computed from the dictionary's value lengths and the indices, and the table
is refused before anything is expanded when the sum passes the limit. Only then are the text
columns decoded and the whole table validated (UTF-8 included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dicesim.limits import human_bytes

_TEXT = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)


def _is_text(t: pa.DataType) -> bool:
    return any(ok(t) for ok in _TEXT)


def decoded_nbytes(table: pa.Table) -> int:
    """Bytes ``table`` takes once its dictionary columns are decoded (values plus offsets)."""
    total = 0
    for column in table.columns:
        for chunk in column.chunks:
            if pa.types.is_dictionary(chunk.type):
                vt = chunk.type.value_type
                if _is_text(vt):  # each row's value length, looked up through its index
                    lengths = pc.binary_length(chunk.dictionary).cast(pa.int64())
                    total += int(pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0) + 8 * len(chunk)
                else:
                    total += len(chunk) * (vt.bit_width // 8 if pa.types.is_primitive(vt) else 64)
            else:
                total += chunk.nbytes
    return total


def read_table_bounded(path: Path, fail: Callable[[str], Exception], *, max_decoded_nbytes: int,
                       columns: Sequence[str] | None = None) -> pa.Table:
    """The table at ``path`` (optionally only ``columns``), decoded and validated; ``fail(problem)``
    when it would decode to more than ``max_decoded_nbytes``. Arrow's own errors propagate (the
    caller names the file)."""
    schema = pq.read_schema(str(path))
    names = list(columns) if columns is not None else schema.names
    text = [n for n in names if n in schema.names and _is_text(schema.field(n).type)]
    table = pq.read_table(str(path), columns=list(columns) if columns is not None else None, read_dictionary=text)
    nbytes = decoded_nbytes(table)
    if nbytes > max_decoded_nbytes:
        raise fail(f"columns decode to {human_bytes(nbytes)}, more than the {human_bytes(max_decoded_nbytes)} "
                   "limit (see docs/limits.md)")
    decoded = [pa.chunked_array([c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in col.chunks],
                                type=col.type.value_type if pa.types.is_dictionary(col.type) else col.type)
               for col in table.columns]
    fields = [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type, f.nullable,
                       f.metadata) for f in table.schema]
    out = pa.Table.from_arrays(decoded, schema=pa.schema(fields, metadata=table.schema.metadata))
    out.validate(full=True)  # string pages are not checked for UTF-8 until they are converted
    return out
