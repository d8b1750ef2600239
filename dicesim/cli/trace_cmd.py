"""`dicesim trace`: summarise traces and merge a simulated and an executed one for Perfetto."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from dicesim.cli import app
from dicesim.errors import ConfigError
from dicesim.outguard import Output, check_outputs
from dicesim.terminal import SafeConsole, printable

trace_app = typer.Typer(help="Inspect and combine traces.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")


def _single(path: Path):
    from dicesim.trace import read_trace

    df, meta = read_trace(path)
    if isinstance(meta, list):
        meta = meta[0]
    return df, meta


@trace_app.command("summary")
def summary(path: Path = typer.Argument(..., help="trace .json/.parquet or a directory")) -> None:
    """Per-step time, compute busy and exposed communication (mean over ranks), in ms.

    Example:

        dicesim trace summary traces/side-by-side/sim-small-w2-b2-dice.trace.json
    """
    from dicesim.trace import per_step_table

    df, meta = _single(path)
    steps = per_step_table(df[df["rank"] >= 0]).groupby("step").mean(numeric_only=True)
    table = Table(title=printable(f"{path.name}: {meta.source} {meta.model} {meta.strategy} x{meta.world_size} "
                                  f"{meta.backend}"))  # metadata is the file's text: printed escaped
    for col in ("step", "duration (ms)", "compute busy (ms)", "comm busy (ms)", "exposed comm (ms)"):
        table.add_column(col, justify="right")
    for step, row in steps.iterrows():
        table.add_row(str(step), f"{row.duration_us / 1e3:.3f}", f"{row.compute_busy_us / 1e3:.3f}",
                      f"{row.comm_busy_us / 1e3:.3f}", f"{row.comm_exposed_us / 1e3:.3f}")
    SafeConsole().print(table)


@trace_app.command("merge")
def merge(
    paths: list[Path] = typer.Argument(..., help="two or more traces (.json/.parquet)"),
    out: Path = typer.Option(..., "--out", help="merged Chrome JSON to write"),
    labels: Optional[str] = typer.Option(None, help="comma-separated labels, one per trace (default: source)"),
) -> None:
    """Merge traces into one Perfetto file: each input becomes its own group of ranks, from t=0.

    Example (open the output in https://ui.perfetto.dev):

        dicesim trace merge traces/side-by-side/executor-small-w2-b2-dice.trace.json traces/side-by-side/sim-small-w2-b2-dice.trace.json --out out/merged.trace.json
    """
    from dicesim.trace.merge import write_merged

    if len(paths) < 2:
        raise ConfigError("trace merge", "needs at least two traces")
    check_outputs([Output("--out", out)], paths)  # merging into one of its own inputs would destroy it
    names = labels.split(",") if labels else None
    if names is not None and len(names) != len(paths):
        raise ConfigError("--labels", f"{len(names)} labels for {len(paths)} traces", "one label per trace")
    traces = []
    for i, p in enumerate(paths):
        df, meta = _single(p)
        traces.append((names[i] if names else f"{meta.source}{i}", df, meta))
    write_merged(traces, out)
    typer.echo(f"wrote {out} ({sum(len(t[1]) for t in traces)} events from {len(paths)} traces)")
