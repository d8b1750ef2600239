"""The event table that the simulator and the executor both write: columns, metadata, checks.

One row is one interval on one track. A track is ``(rank, stream)``: ``stream`` names the
GPU stream or host thread ("compute", "comm", "comm:counts", "host") or, for rows of kind
"link", the interconnect link (rank is then -1: a link belongs to no rank). Times are
microseconds on one clock per trace (``align_clocks`` puts executor ranks on one clock).
Integer columns use -1 (ids, steps, layers, peers) or 0 (sizes, counts, flops) for
"not applicable", never NaN, so the table stays integer-typed and cheap to group on.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from dicesim.errors import ConfigError, TraceError
from dicesim.inputs import check_data
from dicesim.strict_table import take_table

SCHEMA_VERSION = "dicesim-trace/1"

#: column -> canonical dtype; "str" is pandas' string dtype (object on pandas 2)
DTYPES: dict[str, str] = {
    "rank": "int32",
    "stream": "str",
    "kind": "str",
    "name": "str",
    "layer": "int32",
    "step": "int32",
    "tok_step": "int32",
    "start_us": "float64",
    "end_us": "float64",
    "nbytes": "int64",
    "rows": "int64",
    "peer": "int32",
    "flops": "float64",
    "source": "str",
}
COLUMNS: tuple[str, ...] = tuple(DTYPES)
#: "not applicable" value and smallest legal value of each numeric column
NA_VALUES: dict[str, int | float] = {
    "layer": -1, "step": -1, "tok_step": -1, "nbytes": 0, "rows": 0, "peer": -1, "flops": 0.0,
}
KINDS: tuple[str, ...] = ("compute", "collective", "wait", "marker", "link")
SOURCES: tuple[str, ...] = ("sim", "executor", "kineto")
#: well-known stream names, in the order viewers should list them; any other name is allowed
KNOWN_STREAMS: tuple[str, ...] = ("compute", "comm", "comm:counts", "host")
#: streams on which two events may never overlap (a CUDA stream runs one kernel at a time)
DEFAULT_EXCLUSIVE: tuple[str, ...] = ("compute",)

_STR_COLUMNS = tuple(c for c, d in DTYPES.items() if d == "str")
# Order of the tuple that EventRecorder.add appends: every column except `source`.
_ROW_COLUMNS = tuple(c for c in COLUMNS if c != "source")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, kw_only=True)
class TraceMeta:
    """Run-level facts stored beside the events (Chrome ``otherData``, Parquet schema metadata)."""

    source: str
    schema_version: str = SCHEMA_VERSION
    scenario: dict[str, Any] = field(default_factory=dict)
    strategy: str = ""
    world_size: int = 0
    model: str = ""
    backend: str = ""
    device: str = ""
    torch_version: str = ""
    created: str = field(default_factory=_utc_now)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError("trace meta.source", f"unknown source {self.source!r}", SOURCES)
        if self.schema_version != SCHEMA_VERSION:
            raise ConfigError("trace meta.schema_version", f"{self.schema_version!r}", [SCHEMA_VERSION])
        if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or self.world_size < 0:
            raise ConfigError("trace meta.world_size", f"{self.world_size!r} is not an int >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (schema_version included)."""
        return asdict(self)

    def to_json(self) -> str:
        """Compact JSON text; ConfigError if scenario/extra hold values JSON cannot carry."""
        try:
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError("trace meta", f"not JSON-serialisable: {exc}") from None

    @classmethod
    def from_dict(cls, data: object, where: object = "<meta>") -> TraceMeta:
        """Rebuild from a stored dict; TraceError(where, ...) on a bad or foreign version."""
        if not isinstance(data, Mapping):
            raise TraceError(where, f"trace metadata is a {type(data).__name__}, expected an object")
        check_schema_version(data.get("schema_version"), where)
        # scenario and extra are free-form: bound them here so no reader meets deep nesting,
        # integers past 64 bits or NaN in them (typed readers: dicesim.trace.runmeta)
        check_data(data, lambda problem: TraceError(where, f"metadata {problem}"), where="meta")
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        # the top level is this schema's own: an unknown key is refused by name (free-form data
        # goes in `extra`; a writer that adds a field bumps the schema version)
        take_table(data, tuple(known), "metadata", lambda f, p, a: TraceError(where, f"{f}: {p} (allowed: "
                                                                             f"{', '.join(a)})"))
        for key, value in data.items():
            want = dict if key in ("scenario", "extra") else int if key == "world_size" else str
            if isinstance(value, bool) or not isinstance(value, want):
                raise TraceError(where, f"metadata field {key!r} is {value!r}, expected {want.__name__}")
            kwargs[key] = value
        if "source" not in kwargs:
            raise TraceError(where, "metadata has no 'source' (allowed: " + ", ".join(SOURCES) + ")")
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise TraceError(where, f"bad metadata: {exc}") from None


def check_schema_version(version: object, where: object) -> None:
    """TraceError unless ``version`` is exactly this module's SCHEMA_VERSION."""
    if version is None:
        raise TraceError(where, f"missing schema version (expected {SCHEMA_VERSION!r})")
    if version != SCHEMA_VERSION:
        raise TraceError(where, f"unsupported schema version {version!r} (expected {SCHEMA_VERSION!r})")


def empty_events() -> pd.DataFrame:
    """A zero-row event table with the canonical dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in DTYPES.items()})


def coerce_events(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with schema columns cast to the canonical dtypes (category stream -> str).

    Casting is lossless or it fails: integer overflow or fractional values raise ValueError.
    Extra columns are kept; the index is reset.
    """
    out = df.reset_index(drop=True).copy()
    for col, dtype in DTYPES.items():
        if col not in out.columns:
            continue
        if dtype == "str":
            values = out[col].astype(object)
            # Leave non-strings (None, NaN, numbers) in place for validate_events to report:
            # a cast would turn them into text ("None") or NaN silently.
            if all(isinstance(v, str) for v in values):
                out[col] = values.astype("str")
            else:
                out[col] = values
        elif dtype.startswith("int") and out[col].dtype != dtype:
            values = out[col].to_numpy()
            cast = values.astype(dtype)
            if len(values) and not np.array_equal(cast, values):
                raise ValueError(f"column {col!r} does not fit {dtype} without loss")
            out[col] = cast
        else:
            out[col] = out[col].astype(dtype)
    return out


def _is_canonical(col: str, dtype: object) -> bool:
    if DTYPES[col] != "str":
        return str(dtype) == DTYPES[col]
    if col == "stream" and isinstance(dtype, pd.CategoricalDtype):
        return True
    return pd.api.types.is_string_dtype(dtype)


def _bad_row(df: pd.DataFrame, mask: np.ndarray) -> str:
    i = int(np.flatnonzero(mask)[0])
    r = df.iloc[i]
    return f"row {i} ({r['name']!r} on rank {r['rank']} stream {r['stream']!r})"


def validate_events(
    df: pd.DataFrame,
    *,
    exclusive_streams: Iterable[str] = DEFAULT_EXCLUSIVE,
    allow_extra: bool = False,
    where: object = "<events>",
) -> None:
    """Raise TraceError(where, problem) naming the first column or row that breaks the schema.

    Checks: every column present with its canonical dtype, no extra columns (unless
    ``allow_extra``), no missing strings, finite non-negative times with end >= start, known
    kind/source, lower bounds of id columns, rank -1 exactly on "link" rows, and no two
    overlapping events on one (rank, stream) track whose stream is in ``exclusive_streams``
    (a stream ``s`` also covers sub-streams ``s:*``); touching intervals are fine.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise TraceError(where, "missing column(s): " + ", ".join(missing))
    extra = [str(c) for c in df.columns if c not in DTYPES]
    if extra and not allow_extra:
        raise TraceError(where, "unexpected column(s): " + ", ".join(extra))
    for col in COLUMNS:
        if not _is_canonical(col, df[col].dtype):
            raise TraceError(where, f"column {col!r} has dtype {df[col].dtype}, expected {DTYPES[col]}")
    if len(df) == 0:
        return
    for col in _STR_COLUMNS:
        if isinstance(df[col].dtype, (pd.StringDtype, pd.CategoricalDtype)):
            bad = df[col].isna().to_numpy()  # these dtypes hold only strings or missing values
        else:
            values = df[col].to_numpy(dtype=object)
            bad = np.fromiter((not isinstance(v, str) for v in values), bool, len(values))
        if bad.any():
            raise TraceError(where, f"column {col!r} holds a non-string value at {_bad_row(df, bad)}")
    start = df["start_us"].to_numpy()
    end = df["end_us"].to_numpy()
    for col, values in (("start_us", start), ("end_us", end), ("flops", df["flops"].to_numpy())):
        if not np.isfinite(values).all():
            raise TraceError(where, f"column {col!r} is NaN or infinite at {_bad_row(df, ~np.isfinite(values))}")
        if (values < 0).any():
            raise TraceError(where, f"column {col!r} is negative at {_bad_row(df, values < 0)}")
    if (end < start).any():
        i = int(np.flatnonzero(end < start)[0])
        raise TraceError(where, f"{_bad_row(df, end < start)} ends before it starts "
                                f"(end_us {end[i]!r} < start_us {start[i]!r})")
    for col, allowed in (("kind", KINDS), ("source", SOURCES)):
        bad = ~df[col].isin(allowed).to_numpy()
        if bad.any():
            raise TraceError(where, f"column {col!r} has {df[col].iloc[int(np.flatnonzero(bad)[0])]!r} "
                                    f"at {_bad_row(df, bad)} (allowed: {', '.join(allowed)})")
    for col, low in NA_VALUES.items():
        bad = df[col].to_numpy() < low
        if bad.any():
            raise TraceError(where, f"column {col!r} is below {low} at {_bad_row(df, bad)}")
    is_link = (df["kind"] == "link").to_numpy()
    rank = df["rank"].to_numpy()
    if (is_link & (rank != -1)).any() or (~is_link & (rank < 0)).any():
        bad = (is_link & (rank != -1)) | (~is_link & (rank < 0))
        raise TraceError(where, f"{_bad_row(df, bad)}: rank must be -1 on link rows and >= 0 on all others")
    _check_exclusive(df, tuple(exclusive_streams), where)


def _check_exclusive(df: pd.DataFrame, exclusive: tuple[str, ...], where: object) -> None:
    if not exclusive:
        return
    stream = df["stream"].astype(object)
    covered = stream.isin(exclusive) | stream.str.startswith(tuple(s + ":" for s in exclusive))
    sub = df.loc[covered.to_numpy(), ["rank", "stream", "start_us", "end_us", "name"]]
    if len(sub) < 2:
        return
    sub = sub.assign(stream=sub["stream"].astype(object)).sort_values(
        ["rank", "stream", "start_us", "end_us"], kind="stable")
    same_track = (sub["rank"].to_numpy()[1:] == sub["rank"].to_numpy()[:-1]) & (
        sub["stream"].to_numpy()[1:] == sub["stream"].to_numpy()[:-1])
    # Sorted by start, a track has an overlap iff some event starts before its predecessor ends.
    clash = same_track & (sub["start_us"].to_numpy()[1:] < sub["end_us"].to_numpy()[:-1])
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        a, b = sub.iloc[i], sub.iloc[i + 1]
        raise TraceError(where, f"overlapping events on exclusive track (rank {a['rank']}, stream "
                                f"{a['stream']!r}): {a['name']!r} [{a['start_us']}, {a['end_us']}] us and "
                                f"{b['name']!r} [{b['start_us']}, {b['end_us']}] us")


def _column(col: str, values: tuple) -> np.ndarray:
    dtype = DTYPES[col]
    arr = np.asarray(values)
    if dtype.startswith("int"):
        if arr.dtype.kind not in "iub" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
            raise TraceError("<recorder>", f"column {col!r} needs integers, got {arr.dtype} values")
        info = np.iinfo(dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise TraceError("<recorder>", f"column {col!r} has a value outside {dtype}")
    elif arr.dtype.kind not in "iuf":
        raise TraceError("<recorder>", f"column {col!r} needs numbers, got {arr.dtype} values")
    return arr.astype(dtype)


class EventRecorder:
    """Cheap append-only event log for hot loops: one tuple per event, one DataFrame at the end.

    ``add`` only appends a tuple (no pandas, no checks); bind it once in tight loops
    (``add = rec.add``). ``to_frame`` builds and validates the table.
    """

    __slots__ = ("source", "_rows")

    def __init__(self, source: str = "sim") -> None:
        if source not in SOURCES:
            raise ConfigError("EventRecorder.source", f"unknown source {source!r}", SOURCES)
        self.source = source
        self._rows: list[tuple] = []

    def add(self, rank: int, stream: str, kind: str, name: str, start_us: float, end_us: float,
            layer: int = -1, step: int = -1, tok_step: int = -1, nbytes: int = 0, rows: int = 0,
            peer: int = -1, flops: float = 0.0) -> None:
        """Record one interval [start_us, end_us] on track (rank, stream)."""
        self._rows.append((rank, stream, kind, name, layer, step, tok_step,
                           start_us, end_us, nbytes, rows, peer, flops))

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        """Drop every recorded event."""
        self._rows.clear()

    def to_frame(self, *, validate: bool = True,
                 exclusive_streams: Iterable[str] = DEFAULT_EXCLUSIVE) -> pd.DataFrame:
        """The canonical event table, rows in recording order; validated unless told not to."""
        if not self._rows:
            return empty_events()
        cols = list(zip(*self._rows))
        data: dict[str, Any] = {}
        for col, values in zip(_ROW_COLUMNS, cols):
            dtype = DTYPES[col]
            data[col] = pd.array(values, dtype="str") if dtype == "str" else _column(col, values)
        data["source"] = pd.array([self.source] * len(self._rows), dtype="str")
        df = pd.DataFrame({c: data[c] for c in COLUMNS})
        if validate:
            validate_events(df, exclusive_streams=exclusive_streams, where=f"<{self.source} recorder>")
        return df
