"""`dicesim results table` (predicted and measured runs in one table) and `dicesim results report`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from dicesim.atomic import write_parquet_atomic, write_text_atomic
from dicesim.cli import app
from dicesim.cli.tables import console as make_console, rich_table
from dicesim.errors import ConfigError
from dicesim.outguard import Output, check_outputs

results_app = typer.Typer(help="Result files in the shared schema (dicesim-result/1): tables and reports.",
                          no_args_is_help=True)
app.add_typer(results_app, name="results")

#: what `results table` prints (the file holds every column)
SHOWN = ("source", "strategy", "model", "world_size", "batch", "steps", "step_latency_s", "steady_step_latency_s",
         "exposed_comm_step_s", "mean_lag_steps", "weighted_lag_steps", "max_lag_steps", "peak_buffer_bytes")


def _write_table(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        return write_parquet_atomic(df, path)
    if path.suffix == ".csv":
        return write_text_atomic(df.to_csv(index=False), path)
    raise ConfigError("--out", f"unknown table format {path.suffix!r}", (".csv", ".parquet"))


@results_app.command("table")
def table(
    files: list[Path] = typer.Argument(..., help="result files: `simulate --json` / `validate run --json` output, "
                                                 "summary.json, or trace files (.trace.json, .events.parquet)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the table (.csv or .parquet)"),
    report: Optional[Path] = typer.Option(None, "--report", help="write an HTML report (table and plots)"),
    as_json: bool = typer.Option(False, "--json", help="print the records (JSON lines) instead of a table"),
) -> None:
    """Put predicted and measured runs in one table (and one report).

    Example (a CPU executor run and its prediction, committed):

        dicesim results table traces/side-by-side/executor-small-w2-b2-dice.trace.json traces/side-by-side/sim-small-w2-b2-dice.trace.json --out out/both.csv
    """
    from dicesim.report.html import write_report
    from dicesim.report.results_report import results_sections
    from dicesim.result_files import load_results
    from dicesim.results import results_frame

    check_outputs([*([Output("--out", out)] if out else []), *([Output("--report", report)] if report else [])],
                  files)
    runs = [r for f in files for r in load_results(f)]
    df = results_frame(runs)
    if out is not None:
        _write_table(df, out)
    if report is not None:
        write_report(results_sections(runs), report, title="dicesim results")
    if as_json:
        for r in runs:
            sys.stdout.write(r.to_json() + "\n")
        return
    con = make_console()
    con.print(rich_table(df[[c for c in SHOWN if c in df.columns and df[c].notna().any()]],
                         title=f"{len(runs)} runs ({', '.join(sorted(set(df['source'])))})"))
    written = [str(p) for p in (out, report) if p is not None]
    if written:
        con.print("wrote " + ", ".join(written))


@results_app.command("report")
def report_cmd(
    table_file: Path = typer.Argument(..., help="a result table: sweep.parquet, study.parquet, candidates.parquet, "
                                                "or a `results table --out` file"),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default: beside the table, .html)"),
    x: str = typer.Option("weighted_lag_steps", "--x", help="metric on the x axis"),
    y: str = typer.Option("step_latency_s", "--y", help="metric on the y axis"),
) -> None:
    """An interactive Pareto explorer of any result table, with a filter per axis (works offline).

    Example (after the `dicesim study` example, which writes out/study/study.parquet):

        dicesim results report out/study/study.parquet
    """
    from dicesim.report.html import write_report
    from dicesim.report.results_report import table_sections
    from dicesim.result_files import load_result_table

    target = out or table_file.with_suffix(".html")
    check_outputs([Output("--out", target)], [table_file])
    df = load_result_table(table_file)
    path = write_report(table_sections(df, x=x, y=y), target,
                        title=f"dicesim: {table_file.name}")
    make_console().print(f"wrote {path}")
