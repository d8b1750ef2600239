"""Progress bars: drawn on a terminal with the real counts, silent elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from dicesim.progress import NO_PROGRESS, progress_bar
from dicesim.study import make_study, run_study


class Counting:
    def __init__(self) -> None:
        self.expected = self.done = 0

    def expect(self, n: int) -> None:
        self.expected += n

    def advance(self, n: int = 1) -> None:
        self.done += n


def test_a_bar_on_a_terminal_counts_to_the_total():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=100)
    with progress_bar("study", unit="configurations", console=con) as tick:
        tick.expect(3)
        tick.advance()
        tick.advance(2)
        tick._progress.refresh()  # noqa: SLF001 -- render once before the transient bar goes
    assert "3/3" in buf.getvalue() and "configurations" in buf.getvalue()


def test_no_bar_off_a_terminal():
    buf = io.StringIO()
    with progress_bar("study", console=Console(file=buf, force_terminal=False)) as tick:
        assert tick is NO_PROGRESS
        tick.expect(1)
        tick.advance()
    assert buf.getvalue() == ""


def test_a_study_reports_every_configuration_it_runs_and_none_it_reuses(tmp_path):
    spec = make_study(None, models=("tiny",), topologies=("dgx-h100",), world_sizes=(4,), batches=(2, 4),
                      strategies=("dice",), steps=4)
    first = Counting()
    out = run_study(spec, tmp_path, ticker=first)
    assert first.expected == first.done == out.n_run > 0
    again = Counting()
    out2 = run_study(spec, tmp_path, ticker=again)  # resumed: everything is reused
    assert out2.n_cached == out.n_run and again.expected == again.done == 0
