"""Bounded reading of untrusted files: size caps, gzip without bombs, JSON and TOML without
unbounded nesting, and a walk that checks parsed data before any numeric code sees it.

Every function takes ``fail(problem) -> DicesimError`` so each reader keeps its own error
type and file name; the limits come from :mod:`dicesim.limits`.
"""

from __future__ import annotations

import json
import math
import os
import stat
import zlib
from collections.abc import Callable
from pathlib import Path

from dicesim.errors import DicesimError
from dicesim.limits import INT64_MAX, INT64_MIN, MAX_JSON_VALUES, MAX_NESTING, human_bytes

Fail = Callable[[str], DicesimError]


def check_regular_file(path: Path, fail: Fail) -> os.stat_result:
    """``path``'s status when it is a regular file (symbolic links followed). A FIFO, a socket or
    a device is refused before it is opened: opening a FIFO blocks until someone writes to it,
    and a device such as /dev/zero never ends."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device or special file")
        raise fail(f"is {kind}, not a regular file")
    return st


def check_file_size(path: Path, max_bytes: int, fail: Fail, *, what: str = "file") -> int:
    """The size of ``path`` (a regular file, :func:`check_regular_file`); refused when larger
    than ``max_bytes``."""
    size = check_regular_file(path, fail).st_size
    if size > max_bytes:
        raise fail(f"{what} is {human_bytes(size)}, larger than the {human_bytes(max_bytes)} limit "
                   "(see docs/limits.md)")
    return size


def read_bytes_bounded(path: Path, max_bytes: int, fail: Fail, *, what: str = "file") -> bytes:
    """The bytes of ``path`` after a size check (the file is not read when too large)."""
    check_file_size(path, max_bytes, fail, what=what)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)  # a file that grew since the check is still capped
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise fail(f"{what} is larger than the {human_bytes(max_bytes)} limit (see docs/limits.md)")
    return raw


def gunzip_bounded(raw: bytes, max_bytes: int, fail: Fail) -> bytes:
    """Decompress every gzip member of ``raw``, refusing output beyond ``max_bytes`` (gzip bombs)."""
    out: list[bytes] = []
    total = 0
    data = raw
    try:
        while data:
            d = zlib.decompressobj(wbits=31)
            while data:
                chunk = d.decompress(data, max_bytes + 1 - total)
                out.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise fail(f"gzip data expands past the {human_bytes(max_bytes)} limit (see docs/limits.md)")
                data = d.unconsumed_tail
                if d.eof:
                    break
            if not d.eof:
                raise fail("truncated or corrupt gzip data (stream ends early)")
            data = d.unused_data.lstrip(b"\x00")  # padding between or after members is allowed
    except zlib.error as exc:
        raise fail(f"truncated or corrupt gzip data ({exc})") from None
    return b"".join(out)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def json_value_bound(text: str) -> int:
    """An upper bound of the values a JSON text holds, without parsing it: every value after the
    first follows a comma or opens a container (commas inside strings only make it larger)."""
    return text.count(",") + text.count("[") + text.count("{") + 1


def parse_json_bounded(text: str, fail: Fail) -> object:
    """``json.loads`` that turns every parse failure into one line: syntax errors, NaN/Infinity
    literals, integers past Python's digit limit and nesting too deep for the parser.

    What the parse builds is bounded too, not only what it reads: a text of tiny values
    (``[{},{},...]``: 256 MiB are 85 M dicts, 6 GB as Python objects) is refused before parsing
    when it may hold more than ``MAX_JSON_VALUES`` values."""
    values = json_value_bound(text)
    if values > MAX_JSON_VALUES:
        raise fail(f"JSON holds up to {values:,} values, more than the {MAX_JSON_VALUES:,} a reader builds "
                   "(see docs/limits.md)")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            raise fail(f"truncated JSON (document ends at line {exc.lineno} before it is complete)") from None
        raise fail(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise fail(f"JSON nested too deeply (limit {MAX_NESTING} levels)") from None
    except ValueError as exc:  # NaN/Infinity literals, integers of more than 4300 digits
        raise fail(f"not valid JSON: {' '.join(str(exc).split())[:120]}") from None


def _join(where: str, key: object) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def check_data(obj: object, fail: Fail, *, where: str = "", max_depth: int = MAX_NESTING) -> None:
    """Refuse parsed JSON/TOML data that numeric code cannot take: nesting deeper than
    ``max_depth``, integers outside 64 bits, NaN or infinite floats, non-string keys.

    The walk is iterative, so it also works on documents nested past Python's recursion limit.
    """
    stack: list[tuple[object, str, int]] = [(obj, where, 0)]
    while stack:
        value, at, depth = stack.pop()
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise fail(f"{at or 'value'}: integer {_short(value)} does not fit 64 bits "
                           f"(allowed: {INT64_MIN}..{INT64_MAX})")
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise fail(f"{at or 'value'}: {value!r} is not a finite number (allowed: finite numbers)")
            continue
        if isinstance(value, (dict, list, tuple)):
            if depth >= max_depth:
                raise fail(f"{at or 'document'}: nested deeper than {max_depth} levels (see docs/limits.md)")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                if isinstance(value, dict) and not isinstance(k, str):
                    raise fail(f"{at or 'document'}: key {k!r} is not a string")
                stack.append((v, _join(at, k), depth + 1))
            continue
        # dates and times (TOML) and other scalars pass: typed models decide whether they fit


def _short(value: int) -> str:
    return str(value) if value.bit_length() <= 96 else f"of {value.bit_length()} bits"


def load_json_file(path: Path, fail: Fail, *, max_bytes: int, what: str = "JSON file") -> object:
    """Read a .json or .json.gz file within ``max_bytes`` (after gunzip) and parse it bounded."""
    raw = read_bytes_bounded(path, max_bytes, fail, what=what)
    if path.name.endswith(".gz"):
        raw = gunzip_bounded(raw, max_bytes, fail)
    if not raw.strip():
        raise fail(f"empty file, expected a {what}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not a JSON text file (undecodable byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    return parse_json_bounded(text, fail)
