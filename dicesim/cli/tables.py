"""Result tables for the terminal: rich tables whose headers carry units."""

from __future__ import annotations

import os
import sys
import textwrap

import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
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


def compact_table(df: pd.DataFrame, short: dict[str, str], *, title: str | None = None) -> tuple[Table, str]:
    """A narrow table (one line per row in about 100 columns) and the legend of its short headers.

    ``short`` maps each column to print onto a header of a few characters; the legend gives
    every short header its full label and unit (``ms/step: step latency (ms)``).
    """
    cols = [c for c in short if c in df.columns]
    shown = display_frame(df, cols)
    table = Table(title=None if title is None else printable(title), box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False)
    legend = []
    for src, full in zip(cols, shown.columns):
        numeric = pd.api.types.is_numeric_dtype(df[src]) and not pd.api.types.is_bool_dtype(df[src])
        longest = int(shown[full].astype(str).str.len().max()) if len(shown) else 0
        table.add_column(short[src], justify="right" if numeric else "left", no_wrap=numeric,
                         min_width=None if numeric else longest, overflow="fold")
        if numeric and short[src] != full:
            legend.append(f"{short[src]}: {full}")
    for row in shown.itertuples(index=False):
        table.add_row(*[printable(v) for v in row])  # names read from files are escaped
    return table, "; ".join(legend)


def metric_table(values: dict, *, title: str | None = None) -> Table:
    """A two-column (metric with unit, value) table of one run's headline numbers."""
    shown = display_frame(pd.DataFrame([values]))
    table = Table(title=title)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    for header in shown.columns:
        table.add_row(str(header), str(shown[header].iloc[0]))
    return table


def print_notes(con: Console, title: str, notes: list[str]) -> None:
    """A titled list of sentences, each wrapped to the console with a hanging indent."""
    con.print(f"[bold]{printable(title)}[/bold]")
    for note in notes:
        # the note is escaped before it is wrapped: the wrap's own line breaks must stay line breaks
        con.print(escape(textwrap.fill(printable(note, markup=False), width=con.width, initial_indent="  ",
                                       subsequent_indent="    ", break_on_hyphens=False)), soft_wrap=True)


#: how a command prints its tables: rich tables for people, or whole CSV / Markdown for files and scripts
FORMATS: tuple[str, ...] = ("table", "csv", "markdown")


def print_table(con: Console, table: Table) -> None:
    """Print ``table`` whole: when it needs more columns than the console has, it is drawn at its own
    width (a terminal then wraps the long lines; a file or pipe receives them as they are), never cut."""
    from rich.measure import Measurement

    need = Measurement.get(con, con.options.update_width(1 << 16), table)
    width = need.maximum if not con.is_terminal else need.minimum
    if width > con.width:
        Console(file=con.file, width=width, force_terminal=con.is_terminal, no_color=con.no_color).print(table)
    else:
        con.print(table)


def markdown_table(df: pd.DataFrame) -> str:
    """``df`` as a Markdown table in display units (headers carry them)."""
    shown = display_frame(df)
    head = "| " + " | ".join(map(str, shown.columns)) + " |\n|" + "---|" * len(shown.columns) + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False))


def emit_frame(con: Console, df: pd.DataFrame, *, fmt: str = "table", title: str | None = None) -> None:
    """One result table in ``fmt`` (:data:`FORMATS`): a rich table, CSV in SI units (the column names
    carry them), or Markdown in display units."""
    from dicesim.errors import ConfigError

    if fmt not in FORMATS:
        raise ConfigError("--format", f"unknown format {fmt!r}", FORMATS)
    if fmt == "csv":
        con.file.write(df.to_csv(index=False))
    elif fmt == "markdown":
        con.file.write((f"**{title}**\n\n" if title else "") + markdown_table(df) + "\n\n")
    else:
        print_table(con, rich_table(df, title=title))


def console(*, stderr: bool = False, min_width: int = 0) -> SafeConsole:
    """A console for result tables: the terminal's width (``COLUMNS`` when set), and 160 columns
    when output goes to a file or pipe with no ``COLUMNS``; at least ``min_width`` columns (wide
    tables are then wrapped by the terminal, never cut)."""
    stream = sys.stderr if stderr else sys.stdout
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isascii() and columns.isdigit() and int(columns) >= 40 else None
    if width is None and not stream.isatty():
        width = 160
    if min_width and (width or Console(stderr=stderr).width) < min_width:
        width = min_width
    return SafeConsole(stderr=stderr, width=width)
