"""One writer per output: a lock beside ``--out`` so two runs never write into the same place.

The lock is an ``flock`` on ``.<name>.lock`` next to the output file or directory, holding
the owner's pid. The kernel drops it when its process ends, however it ends (a killed run
leaves at most an unlocked file, which the next run takes over), and a second run that
finds it held stops at once with one line naming the pid, before writing anything.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from dicesim.atomic import remove_stale_temps
from dicesim.errors import DicesimError
from dicesim.outguard import OutputError, check_writable_place

F = TypeVar("F", bound=Callable[..., Any])


class OutputInUse(DicesimError):
    """Another process holds the lock of an output path."""


def lock_path(out: str | os.PathLike[str]) -> Path:
    """The lock file of output ``out`` (a file or a directory), beside what ``out`` really is:
    symbolic links are resolved, so a second name for the same directory finds the same lock."""
    p = Path(os.path.realpath(out))
    return p.parent / f".{p.name}.lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "another process (pid not yet written)"


def _open_locked(path: Path, out: Path, option: str) -> int:
    """An fd holding the exclusive lock of ``path``; OutputInUse if another process has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputInUse(f"{option} {out} is in use by {holder}, another dicesim run writing there; "
                              f"wait for it to finish or choose another {option}") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        # the previous holder removed the file between our open and our lock: lock the new one
        os.close(fd)


@contextmanager
def output_lock(out: str | os.PathLike[str], *, option: str = "--out") -> Iterator[Path]:
    """Hold the lock of output ``out`` for the ``with`` block; OutputInUse (exit 2) when taken.

    Creates the parent directory of ``out`` if needed; removes the lock file on exit.
    """
    out_path = Path(out)
    path = lock_path(out_path)
    check_writable_place(out_path, option)  # below a file, read-only, /proc: one line naming why
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path, out_path, option)
    except OSError as exc:  # below a file, read-only, a virtual file system: one line, nothing written
        raise OutputError(f"{option} {out_path}: cannot write there ({exc.strerror or exc})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        remove_stale_temps(out_path)  # what a killed earlier writer left; nobody else writes now
        yield path
    finally:
        path.unlink(missing_ok=True)  # unlink before unlocking: a waiter then retries on a fresh file
        os.close(fd)


def locks_output(param: str = "out", *, option: str = "--out") -> Callable[[F], F]:
    """Decorate a CLI command so that it holds :func:`output_lock` of its ``param`` argument
    (when given) for the whole call."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            out = kwargs.get(param)
            if out is None:
                return fn(*args, **kwargs)
            with output_lock(out, option=option):
                return fn(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap
