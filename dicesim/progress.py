"""Progress of long commands: one rich bar on the terminal, nothing anywhere else.

Library functions that run many independent pieces of work (a study's configurations, a
search's timing classes, a quality study's samples, training steps) take a :class:`Ticker`
and report to it: ``expect(n)`` when they learn that ``n`` more pieces are coming (a resumed
sweep knows only after reading its cache; a search learns round by round), ``advance(n)``
when ``n`` are done. The CLI passes the bar from :func:`progress_bar`; everything else gets
:data:`NO_PROGRESS`. The bar goes to stderr, so piped results stay clean, and it is drawn
only when stderr is a terminal (CI logs and redirected runs get no bar).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Ticker(Protocol):
    """What long-running library code reports its progress to."""

    def expect(self, n: int) -> None:
        """``n`` more pieces of work are coming."""

    def advance(self, n: int = 1) -> None:
        """``n`` pieces of work are done."""


class _Silent:
    def expect(self, n: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


#: the ticker of code that reports to no one
NO_PROGRESS: Ticker = _Silent()


class _Bar:
    def __init__(self, progress: Progress, description: str) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=0)
        self._total = 0

    def expect(self, n: int) -> None:
        self._total += n
        self._progress.update(self._task, total=self._total)

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress_bar(description: str, *, unit: str = "done", console: Console | None = None) -> Iterator[Ticker]:
    """A progress bar labelled ``description`` ("configurations", "classes", ...) while the block runs.

    ``unit`` follows the count (``12/180 simulated``). The bar disappears when the block ends;
    the command prints its own summary after it.
    """
    con = console or Console(stderr=True)
    if not con.is_terminal:
        yield NO_PROGRESS
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn(unit), TimeElapsedColumn())
    with Progress(*columns, console=con, transient=True) as progress:
        yield _Bar(progress, description)
