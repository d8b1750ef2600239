"""One check of every output path before anything is written; every command that writes calls it.

A command declares what it writes (:class:`Output`: a file, or a result directory with the
names it writes inside) and what it reads. :func:`check_outputs` refuses, with one line naming
the option, before any work starts:

- two outputs that are the same file (`results table --out X --report X`), however named:
  relative or absolute, through a symbolic link, a hard link or ``..``;
- an output that is one of the command's inputs (`trace merge a b --out a`), or a result
  directory whose own file names would land on an input, or that is an input directory;
- an output file that already exists as a directory or a special file (a FIFO, a device), and a
  result directory that exists as a file; a path below a file;
- a result directory holding a directory (or special file) where one of its result files goes:
  the set would be written half (a result set is written completely or not at all);
- a place that cannot be written: a read-only directory or file system, a virtual one (/proc).

Paths are compared by what they are, not how they are spelled: an existing path by its device
and inode (which sees through symbolic and hard links), a new one by its absolute path with
every existing symbolic link resolved.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dicesim.errors import DicesimError


class OutputError(DicesimError):
    """An output path that cannot or must not be written (exit code 2)."""


@dataclass(frozen=True)
class Output:
    """One thing a command writes: ``option`` names it in messages (``--out``, ``--report``).

    ``kind="dir"`` is a result directory; ``names`` are the files it writes inside, as exact
    names or glob patterns relative to it (``chunks/chunk-*.parquet``); a name ending in ``/``
    is a subdirectory it creates.
    """

    option: str
    path: Path
    kind: Literal["file", "dir"] = "file"
    names: tuple[str, ...] = ()

    def files(self) -> list[tuple[str, Path]]:
        """(label, path) of every exact file this output writes."""
        if self.kind == "file":
            return [(f"{self.option} {self.path}", self.path)]
        return [(f"{self.option} {self.path / n}", self.path / n) for n in self.names
                if not _is_glob(n) and not n.endswith("/")]


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def _identity(path: Path) -> tuple:
    """What ``path`` is: (device, inode) when it exists, else its resolved absolute path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", str(_resolved(path)))


def _resolved(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return Path(os.path.abspath(path))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # below a file: the ancestor check names it
        return None
    except OSError as exc:
        raise OutputError(f"{path}: cannot use as an output ({exc.strerror or exc})") from None


def _kind(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISREG(st.st_mode):
        return "a file"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    return "a device or special file"


def _nearest_existing(path: Path, option: str, shown: Path) -> Path:
    """The closest existing one of ``path`` and its ancestors; refused unless it is a directory
    (something would have to be created below a file)."""
    p = Path(os.path.abspath(path))
    for anc in (p, *p.parents):
        st = _lstat(anc)
        if st is None:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{option} {shown}: {anc} is {_kind(st)}, so nothing can be written below it")
        return anc
    return Path("/")


def _probe_writable(directory: Path, option: str, path: Path) -> None:
    """Create and remove a temporary file in ``directory``: permissions alone do not say (root
    passes every permission check, and a read-only or virtual file system refuses anyway)."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".dicesim-probe.", suffix=".tmp")
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            why = f"{why}; the file system or directory is not writable"
        raise OutputError(f"{option} {path}: cannot write in {directory} ({why})") from None
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass


def check_writable_place(path: Path, option: str) -> None:
    """OutputError unless something can be created beside ``path`` (where its lock goes): it is
    no special file, not below a file, and its nearest existing directory accepts a new file.
    Used before the ``--out`` lock is taken; :func:`check_outputs` then checks the rest."""
    st = _lstat(path)
    if st is not None and not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise OutputError(f"{option} {path}: is {_kind(st)}; {option} needs a file or directory path")
    _probe_writable(_nearest_existing(Path(os.path.abspath(path)).parent, option, path), option, path)


def _check_place(out: Output) -> None:
    """The output can be created where it is named: right kind, not below a file, writable."""
    st = _lstat(out.path)
    if out.kind == "file":
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{out.option} {out.path}: is {_kind(st)}; {out.option} needs a file path")
    elif st is not None and not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{out.option} {out.path}: is {_kind(st)}; {out.option} needs a directory "
                          "(a result set goes there)")
    if out.kind == "dir" and st is not None:
        for name in out.names:
            if name.endswith("/"):
                sub = out.path / name.rstrip("/")
                sub_st = _lstat(sub)
                if sub_st is not None and not stat.S_ISDIR(sub_st.st_mode):
                    raise OutputError(f"{out.option} {out.path}: {sub} is {_kind(sub_st)} where the result set "
                                      "needs a directory; nothing was written")
                continue
            targets = sorted(out.path.glob(name)) if _is_glob(name) else [out.path / name]
            for target in targets:
                tst = _lstat(target)
                if tst is not None and not stat.S_ISREG(tst.st_mode):
                    raise OutputError(f"{out.option} {out.path}: {target} is {_kind(tst)} where a result file "
                                      "goes; a result set is written completely or not at all, so nothing was "
                                      "written (remove it or choose another directory)")
    anchor = _nearest_existing(out.path if out.kind == "dir" else out.path.parent, out.option, out.path)
    _probe_writable(anchor, out.option, out.path)


def _lands_on(out: Output, inp: Path) -> bool:
    """Whether result directory ``out`` writes a file named like input ``inp`` (or is ``inp``)."""
    if out.kind != "dir":
        return False
    here, there = _resolved(out.path), _resolved(inp)
    if here == there:
        return True
    try:
        rel = there.relative_to(here).as_posix()
    except ValueError:
        return False
    return any(fnmatch.fnmatchcase(rel, n.rstrip("/")) or rel.startswith(n) and n.endswith("/") for n in out.names)


def check_outputs(outputs: Sequence[Output], inputs: Iterable[str | os.PathLike[str] | None] = ()) -> None:
    """OutputError (one line naming the option) unless every output can be written without
    destroying another output or an input; see the module docstring for the rules."""
    outs = [o for o in outputs if o.path is not None]
    files = [(label, path, _identity(path)) for o in outs for label, path in o.files()]
    seen: dict[tuple, str] = {}
    for label, _path, ident in files:
        if ident in seen:
            raise OutputError(f"{label} and {seen[ident]} are the same file; each output needs its own path")
        seen[ident] = label
    for inp in (Path(i) for i in inputs if i is not None and str(i) != ""):
        if not os.path.lexists(inp):
            continue
        ident = _identity(inp)
        for label, _path, out_ident in files:
            if ident == out_ident:
                raise OutputError(f"{label} is also an input of this command ({inp}); writing it would destroy "
                                  "the input: choose another output path")
        for o in outs:
            if _lands_on(o, inp):
                raise OutputError(f"{o.option} {o.path}: the result set would be written over the input {inp}; "
                                  "choose another directory")
    for o in outs:
        _check_place(o)

