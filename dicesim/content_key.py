"""What a simulated result depends on, by content: the key of the sweep and study cache.

A resumed sweep reuses a stored result only when everything that determined it is unchanged.
A configuration's key (:func:`dicesim.sweep.config_key`) therefore covers, besides the
scenario's fields and the axis values:

- every file the configuration reads (a topology, a profile, a router histogram, or each file
  of a trace directory) by its SHA-256, not by its name: the same path with new content is a
  new configuration;
- the built-in data files (``dicesim/data``: profiles, the NCCL model, the quality table);
- the result-schema versions of the code (:data:`dicesim.results.RESULT_SCHEMA` and the sweep's
  own format), bumped when a result's meaning changes.

Digests are computed once per run (:class:`Digests`, owned by the caller; no module state).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_CHUNK_BYTES = 1 << 20
_DATA_DIR = Path(__file__).parent / "data"


def is_file_reference(value: object) -> bool:
    """Whether a topology, profile or histogram value names a file (not a built-in name)."""
    if not isinstance(value, str) or not value:
        return False
    return value.endswith((".toml", ".graphml", ".npy", ".csv", ".json", ".gz", ".parquet")) or os.sep in value


def scenario_files(fields: Mapping[str, Any]) -> list[str]:
    """The files a scenario's fields (``Scenario.model_dump()``, possibly with axis values on top)
    reference: its topology and profile when they are files, and its router histogram."""
    routing = fields.get("routing") or {}
    hist = routing.get("histogram") if isinstance(routing, Mapping) else getattr(routing, "histogram", None)
    # a name without a suffix or a directory is still read as a file when one exists under it
    out = [v for v in (fields.get("topology"), fields.get("profile"))
           if is_file_reference(v) or (isinstance(v, str) and v and os.path.isfile(v))]
    if hist:
        out.append(str(hist))
    return out


def _hash_file(h: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            h.update(chunk)


def _hash_tree(root: Path) -> str:
    """SHA-256 over the relative names and contents of the regular files under ``root``."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if name.startswith(".") or not p.is_file():  # locks and temp files are not content
                continue
            h.update(p.relative_to(root).as_posix().encode("utf-8", "surrogateescape") + b"\0")
            _hash_file(h, p)
            h.update(b"\0")
    return h.hexdigest()


def content_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (or of a directory's files); ``missing`` when there is nothing to read
    (the evaluation then reports the missing file itself)."""
    p = Path(path)
    try:
        if p.is_dir():
            return _hash_tree(p)
        h = hashlib.sha256()
        _hash_file(h, p)
        return h.hexdigest()
    except OSError:
        return "missing"


class Digests:
    """Content digests for one run: each file is read once however many configurations use it."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def of(self, paths: Iterable[str]) -> dict[str, str]:
        """``{path: digest}`` for ``paths`` (absolute paths as keys: the content is what counts,
        but two files of one configuration must stay apart)."""
        out = {}
        for raw in paths:
            key = os.path.abspath(raw)
            if key not in self._seen:
                self._seen[key] = content_digest(key)
            out[key] = self._seen[key]
        return out

    def builtin_data(self) -> str:
        """One digest of ``dicesim/data`` (built-in profiles, the NCCL model, the quality table)."""
        if "<data>" not in self._seen:
            self._seen["<data>"] = _hash_tree(_DATA_DIR)
        return self._seen["<data>"]
