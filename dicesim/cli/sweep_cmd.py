"""`dicesim sweep SWEEP.toml --out DIR`: a resumable design-space sweep on Dask."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from dicesim.cli import app
from dicesim.cli.tables import console as make_console, rich_table
from dicesim.errors import ConfigError
from dicesim.limits import MAX_LOCAL_WORKERS, MAX_SWEEP_POINTS
from dicesim.membudget import plan_workers, points_nbytes
from dicesim.outguard import Output, check_outputs
from dicesim.outlock import locks_output
from dicesim.progress import progress_bar

if TYPE_CHECKING:
    from dicesim.sweep import SweepSpec


@app.command()
@locks_output()
def sweep(
    sweep_file: Path = typer.Argument(..., help="sweep TOML: options, base scenario and one value list per axis"),
    out: Path = typer.Option(Path("out/sweep"), "--out", help="result directory (chunks/, sweep.parquet, report.html)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, max=MAX_LOCAL_WORKERS,
                                          help="local Dask worker processes (0 = run in this process; default: as many as the CPUs and memory hold)"),
    dask_scheduler: Optional[str] = typer.Option(None, "--scheduler", "--dask-scheduler",
                                                 help="address of a running Dask scheduler, e.g. tcp://host:8786"),
    max_lag: Optional[float] = typer.Option(None, "--max-lag", min=0, help="budget: weighted lag (steps)"),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", min=0, help="budget: step latency (ms)"),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", min=1, max=MAX_SWEEP_POINTS, help="configurations per result chunk"),
) -> None:
    """Evaluate the cartesian product of the axes; rerun the same command to resume.

    Example (162 configurations, ~15 s; rerun it to see the resume):

        dicesim sweep examples/sweep-xl2.toml --out out/sweep --workers 2
    """
    from dicesim.report.html import write_report
    from dicesim.report.sweep_report import best_under_budget, over_memory, sweep_sections
    from dicesim.sweep import RESULT_DIR_FILES, load_sweep, run_sweep, write_sweep_table

    if dask_scheduler and workers is not None:
        raise ConfigError("--workers", "cannot be combined with --scheduler (the cluster decides)")
    spec = load_sweep(sweep_file)
    check_outputs([Output("--out", out, "dir", (*RESULT_DIR_FILES, "sweep.parquet"))], _sweep_inputs(spec, sweep_file))
    lag_budget = spec.options.max_lag if max_lag is None else max_lag
    latency_budget = spec.options.max_latency_ms if max_latency_ms is None else max_latency_ms
    console = make_console()
    total = len(spec.points())
    n_workers = 0 if dask_scheduler else plan_workers(workers, [points_nbytes(spec.base, spec.points())], jobs=total)
    where = dask_scheduler or (f"{n_workers} local Dask workers" if n_workers else "this process")
    console.print(f"sweep {spec.options.name!r}: {total} configurations on {where}, results in {out}")
    done = [0]

    def on_chunk(path: Path, rows: list[dict]) -> None:
        done[0] += len(rows)
        ok = sum(r["status"] == "ok" for r in rows)
        console.print(f"  {path.name}: {len(rows)} configurations ({ok} simulated), {done[0]} new so far")

    t0 = time.perf_counter()
    with progress_bar("sweep", unit="configurations") as ticker:
        outcome = run_sweep(spec, out, workers=n_workers, scheduler=dask_scheduler, chunk_size=chunk_size,
                            on_chunk=on_chunk, ticker=ticker)
    wall_s = time.perf_counter() - t0
    table_path = write_sweep_table(outcome.table, out)
    report_path = write_report(sweep_sections(outcome.table, max_lag=lag_budget, max_latency_ms=latency_budget),
                               out / "report.html", title=f"dicesim sweep: {spec.options.name}")
    status = outcome.table["status"].value_counts()
    console.print(f"{outcome.n_run} configurations evaluated, {outcome.n_cached} reused from earlier runs "
                  f"in {wall_s:.1f} s; {int(status.get('ok', 0))} simulated, {int(status.get('skipped', 0))} "
                  f"skipped, {int(status.get('error', 0))} failed")
    big = int((over_memory(outcome.table) & (outcome.table["status"] == "ok")).sum())
    if big:
        console.print(f"{big} simulated configurations do not fit their GPUs' memory: never the best "
                      "(report.html lists them with what they need)")
    best = best_under_budget(outcome.table, max_lag=lag_budget, max_latency_ms=latency_budget)
    if len(best):
        budget = [f"weighted lag <= {lag_budget} steps" if lag_budget is not None else "",
                  f"step latency <= {latency_budget} ms" if latency_budget is not None else ""]
        title = "Best strategy per topology and world size" + (
            f" ({', '.join(b for b in budget if b)})" if any(budget) else "")
        console.print(rich_table(best, title=title))
    from dicesim.quality_model import quality_columns

    basis = quality_columns(spec.base.strategy, spec.base.preset().depth, spec.base.steps)["quality_basis"]
    console.print(f"pred_fd_change / pred_deviation: {basis}")
    console.print(f"wrote {table_path} and {report_path}")
    if int(status.get("error", 0)):
        first = outcome.table.loc[outcome.table["status"] == "error", "reason"].iloc[0]
        console.print(f"[yellow]{int(status['error'])} configurations failed (first: {first}); "
                      "rerun to retry them[/yellow]")


def _sweep_inputs(spec: SweepSpec, sweep_file: Path) -> list[str]:
    """Every file a sweep reads, for the output check: the sweep file, its base scenario and the
    files its configurations name (topologies, profiles, the router histogram)."""
    from dicesim.content_key import is_file_reference, scenario_files
    from dicesim.sweep import FILE_AXES

    files = [str(sweep_file)]
    if spec.options.base:
        files.append(str(sweep_file.parent / spec.options.base))
    files += scenario_files(spec.base.model_dump())
    files += [v for name in FILE_AXES for v in spec.axes.get(name, ()) if is_file_reference(v)]
    return files
