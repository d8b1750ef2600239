"""Atomic result files: write to a temp file beside the target, then ``os.replace``.

A crash, a full disk or an exception while serialising never leaves a partial file under
the final name, and a previous version stays intact until the new one is complete.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

#: names ``write_all_atomic`` gives its temp files: ``.<target>.<mkstemp's 8 characters>.tmp``
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def write_atomic(path: str | Path, dump: Callable[[Path], None]) -> Path:
    """Call ``dump(tmp_path)`` for a temp file in ``path``'s directory, then move it to ``path``."""
    write_all_atomic([(Path(path), dump)])
    return Path(path)


def write_all_atomic(targets: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write every target to a temp file first, then move them all into place.

    If any ``dump`` raises, no target is touched (old versions survive) and no temp file stays.
    A file system that refuses (read-only, full, a directory in the way) is one line naming the
    file (:class:`~dicesim.outguard.OutputError`), not a traceback.
    """
    from dicesim.outguard import OutputError

    temps: list[Path] = []
    path = targets[0][0] if targets else Path()
    try:
        for path, dump in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            temps.append(Path(name))
            dump(temps[-1])
            os.chmod(temps[-1], 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        for tmp, (path, _) in zip(temps, targets):
            os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_parquet_atomic(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` (without its index) as Parquet to ``path`` atomically."""
    return write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def remove_stale_temps(out: str | Path) -> int:
    """Delete the temp files that writers killed mid-write left for ``out`` (a result file, or
    a result directory and its direct subdirectories); returns how many. Only for the holder
    of ``out``'s output lock (:mod:`dicesim.outlock`): a live writer's temp file would go too."""
    p = Path(out)
    dirs = [p, *(d for d in p.iterdir() if d.is_dir())] if p.is_dir() else [p.parent]
    prefix = "." if p.is_dir() else f".{p.name}."
    stale = [t for d in dirs for t in d.glob(f"{prefix}*.tmp") if _TEMP_NAME.match(t.name) and t.is_file()]
    for t in stale:
        t.unlink(missing_ok=True)
    return len(stale)
