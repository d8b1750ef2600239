"""Result tables for the terminal: rich tables whose headers carry units."""

from __future__ import annotations

import sys

import pandas as pd
from rich.table import Table

from dicesim.report.units import display_frame
from dicesim.terminal import SafeConsole, printable


def rich_table(df: pd.DataFrame, *, title: str | None = None, columns: list[str] | None = None) -> Table:
    """A rich Table of ``df`` with values scaled to display units (ms, %, MiB, GB/s)."""
    cols = list(df.columns) if columns is None else columns
    shown = display_frame(df, cols)
    table = Table(title=None if title is None else printable(title))
    for src, header in zip(cols, shown.columns):
        numeric = pd.api.types.is_numeric_dtype(df[src]) and not pd.api.types.is_bool_dtype(df[src])
        # names (strategies, links) must stay legible: give them width, fold what is longer
        longest = int(shown[header].astype(str).str.len().max()) if len(shown) else 0
        table.add_column(str(header), justify="right" if numeric else "left",
                         min_width=None if numeric else min(longest, 28), overflow="fold")
    for row in shown.itertuples(index=False):
        # labels such as "dice[cond_interval=4]" are not markup, and names read from files are escaped
        table.add_row(*[printable(v) for v in row])
    return table


def metric_table(values: dict, *, title: str | None = None) -> Table:
    """A two-column (metric with unit, value) table of one run's headline numbers."""
    shown = display_frame(pd.DataFrame([values]))
    table = Table(title=title)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    for header in shown.columns:
        table.add_row(str(header), str(shown[header].iloc[0]))
    return table


def console(*, stderr: bool = False) -> SafeConsole:
    """A console that is wide enough for result tables when output goes to a file or pipe."""
    stream = sys.stderr if stderr else sys.stdout
    return SafeConsole(stderr=stderr, width=None if stream.isatty() else 160)
