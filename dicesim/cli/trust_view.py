"""What `simulate`, `compare` and `recommend` print after their tables: how far to trust the answer.

In order: the verdict or band, the accuracy it rests on, the assumptions on the bottleneck (with
status and source), what the run does (groups, links, network), a what-if note, and the
sensitivity verdict. Pure printing of what :mod:`dicesim.trust` computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from rich.console import Console

from dicesim.cli.tables import emit_frame, print_notes
from dicesim.evidence import Assumption, ErrorBand
from dicesim.trust import Sensitivity, band_text


def assumption_lines(assumptions: Sequence[Assumption], *, all_of_them: bool = False) -> list[str]:
    """The assumptions on the bottleneck (or all), bottleneck first, one line each."""
    items = sorted(assumptions, key=lambda a: not a.on_bottleneck)
    if not all_of_them:
        items = [a for a in items if a.on_bottleneck or a.status == "assumed"]
    return [f"{'[critical path] ' if a.on_bottleneck else ''}{a.parameter}: {a.value}; {a.status} ({a.source})"
            for a in items]


def print_trust(con: Console, *, band: ErrorBand | None, assumptions: Sequence[Assumption], facts: Sequence[str],
                verdict: str = "", what_if: str = "", sens: Sensitivity | None = None, fmt: str = "table") -> None:
    """The trust sections (see the module docstring)."""
    if verdict:
        print_notes(con, "Verdict", [verdict])
    elif band is not None:
        print_notes(con, "Error band", [f"step latency {band_text(band)}"])
    if band is not None:
        print_notes(con, "Accuracy it rests on", [band.statement, "docs/trust.md explains the band; "
                                                  "docs/accuracy.md the held-out errors"])
    lines = assumption_lines(assumptions)
    if lines:
        print_notes(con, "Assumptions (status: measured, fitted, cited, assumed)", lines)
    if facts:
        print_notes(con, "What the run does", list(facts))
    if what_if:
        print_notes(con, "What-if", [what_if])
    if sens is not None:
        print_notes(con, "Sensitivity", [sens.verdict()])
        rows = sens.rows()
        if rows and len(sens.strategies) > 1:
            df = pd.DataFrame(rows)[["parameter", "status", "factor", "value", "fastest"]]
            emit_frame(con, df, fmt=fmt, title="Fastest strategy at each point of the ranges")
