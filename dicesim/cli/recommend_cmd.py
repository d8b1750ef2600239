"""`dicesim recommend`: the strategy and modifiers that meet your limits, ranked, with the reasons."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.markup import escape

from dicesim.atomic import write_parquet_atomic, write_text_atomic
from dicesim.cli import app
from dicesim.cli.simulate_cmd import (
    _ALPHA,
    _BATCH,
    _DTYPE,
    _EXPERTS,
    _HIST,
    _IMAGE,
    _MODEL,
    _PLACEMENT,
    _PROFILE,
    _ROUTING,
    _SCENARIO_HELP,
    _STEPS,
    _TOPOLOGY,
    _WORLD,
)
from dicesim.cli.study_cmd import csv_list
from dicesim.cluster import scale_out
from dicesim.collector import collector_paused
from dicesim.cli.tables import compact_table, console as make_console, print_notes, rich_table
from dicesim.cli.trust_view import print_trust
from dicesim.content_key import scenario_files
from dicesim.outguard import Output, check_outputs
from dicesim.outlock import locks_output
from dicesim.progress import progress_bar

if TYPE_CHECKING:
    from dicesim.recommend import Recommendation


@app.command()
@locks_output()
def recommend(
    scenario: Optional[Path] = typer.Argument(None, help=_SCENARIO_HELP),
    model: Optional[str] = _MODEL, topology: Optional[str] = _TOPOLOGY, world_size: Optional[int] = _WORLD,
    batch: Optional[int] = _BATCH, image_size: Optional[int] = _IMAGE, steps: Optional[int] = _STEPS,
    profile: Optional[str] = _PROFILE, routing: Optional[str] = _ROUTING, zipf_alpha: Optional[float] = _ALPHA,
    histogram: Optional[str] = _HIST,
    max_lag: Optional[float] = typer.Option(None, "--max-lag", min=0,
                                            help="limit: largest lag of any expert output (steps)"),
    max_weighted_lag: Optional[float] = typer.Option(None, "--max-weighted-lag", min=0,
                                                     help="limit: router-weighted mean lag (steps)"),
    max_buffer_gib: Optional[float] = typer.Option(None, "--max-buffer-gib", min=0,
                                                   help="limit: stale-buffer memory per GPU (GiB)"),
    max_fd_change: Optional[float] = typer.Option(
        None, "--max-fd-change", min=0,
        help="limit on predicted quality: FD increase over sync the quality model predicts (docs/quality.md)"),
    latency_target_ms: Optional[float] = typer.Option(None, "--latency-target-ms", min=0,
                                                      help="limit: step latency (ms)"),
    schemes: Optional[str] = typer.Option(None, "--schemes", help="asynchronous schemes to search "
                                                                  "(default: displaced,interweaved)"),
    block_sizes: Optional[str] = typer.Option(None, "--block-sizes",
                                              help="sizes of the synchronous deep blocks (default: every 1/8 of "
                                                   "the depth)"),
    cond_intervals: Optional[str] = typer.Option(None, "--cond-intervals", help="default: 1,2,4"),
    cond_policies: Optional[str] = typer.Option(None, "--cond-policies", help="default: low,high,random"),
    warmups: Optional[str] = typer.Option(None, "--warmups", help="warm-up steps (default: 1,2,4)"),
    alternatives: Optional[str] = typer.Option(None, "--alternatives",
                                               help="presets weighed beside the modifier space, or 'none' "
                                                    "(default: data_parallel and the other families' presets)"),
    exhaustive: bool = typer.Option(False, "--exhaustive", help="simulate every screened candidate (no bounds)"),
    top: int = typer.Option(10, "--top", min=1, help="candidates to list"),
    wide: bool = typer.Option(False, "--wide", help="full tables with the reasons in a column (needs ~200 columns); "
                              "default: tables that fit 100 columns, reasons listed below them"),
    num_experts: Optional[int] = _EXPERTS, placement: Optional[str] = _PLACEMENT, dtype: Optional[str] = _DTYPE,
    sensitivity: bool = typer.Option(False, "--sensitivity", help="re-run the top candidates with each unmeasured "
                                     "parameter on their bottleneck varied (docs/trust.md) and prefer the robust "
                                     "choice: the one that falls least behind the fastest anywhere in the ranges"),
    robust_top: int = typer.Option(5, "--robust-top", min=2, help="candidates the band and sensitivity look at"),
    out: Path = typer.Option(Path("out/recommend"), "--out", help="candidates.parquet/.csv and report.html"),
    workers: Optional[int] = typer.Option(None, "--workers", min=0,
                                          help="local Dask worker processes (default 0: this process)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="address of a running Dask scheduler"),
) -> None:
    """Search strategies and their modifiers under limits; rank them with error bands and show the Pareto front.

    Example (XL/2 on a DGX H100, 20 steps, no expert output more than 1 step stale, ~15 s):

        dicesim recommend --model XL/2 --topology dgx-h100 --steps 20 --max-lag 1
    """
    with collector_paused():  # imports: objects made to stay (dicesim/collector.py)
        from dicesim.compare import resolve_scenario
        from dicesim.recommend import make_limits, search
        from dicesim.report.html import write_report
        from dicesim.report.recommend_report import recommend_sections
        from dicesim.report.units import unit_for
        from dicesim.robust import trust_ranked
        from dicesim.search_space import make_space

    sc = resolve_scenario(scenario, model=model, topology=topology, world_size=world_size, batch=batch,
                          image_size=image_size, steps=steps, profile=profile, routing=routing,
                          zipf_alpha=zipf_alpha, histogram=histogram, num_experts=num_experts, placement=placement,
                          dtype=dtype)
    limits = make_limits(max_lag_steps=max_lag, max_weighted_lag_steps=max_weighted_lag,
                         max_buffer_bytes=None if max_buffer_gib is None else max_buffer_gib * 2**30,
                         max_fd_change=max_fd_change,
                         max_step_latency_s=None if latency_target_ms is None else latency_target_ms / 1e3)
    space = make_space(schemes=csv_list(schemes, "--schemes"), block_sizes=csv_list(block_sizes, "--block-sizes", int),
                       cond_intervals=csv_list(cond_intervals, "--cond-intervals", int),
                       cond_policies=csv_list(cond_policies, "--cond-policies"),
                       warmups=csv_list(warmups, "--warmups", int),
                       alternatives=() if alternatives == "none" else csv_list(alternatives, "--alternatives"))
    # by default in this process: the search simulates in rounds of a few classes each (the default
    # search: 88 in 19 rounds), too few at a time to pay for a cluster (measured on 2 CPUs: 21 s of CPU
    # here against 38 s with 2 workers, and twice the wall time)
    n_workers = scale_out(workers, scheduler, (0, 0.0))
    check_outputs([Output("--out", out, "dir", ("candidates.parquet", "candidates.csv", "report.html"))],
                  [scenario, *scenario_files(sc.model_dump())])
    con = make_console(min_width=200 if wide else 0)
    con.print(f"{sc.setup_label()}; limits: {limits.describe()}")
    t0 = time.perf_counter()
    with progress_bar("recommend", unit="timing classes simulated") as ticker:
        rec = search(sc, space, limits, exhaustive=exhaustive, workers=n_workers, scheduler=scheduler, ticker=ticker)
    robust = trust_ranked(rec, top=robust_top, sensitivity=sensitivity, workers=max(n_workers, 1))
    wall_s = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(rec.table, out / "candidates.parquet")
    write_text_atomic(rec.table.to_csv(index=False), out / "candidates.csv")
    report = write_report(recommend_sections(rec, robust=robust), out / "report.html",
                          title=f"dicesim recommend: {sc.setup_label()}")
    best = rec.best
    if best is not None:
        pick = robust.choice if robust is not None and robust.choice else str(best["strategy"])
        row = rec.table[rec.table["strategy"] == pick].iloc[0]
        why = "most robust over the sensitivity ranges" if pick != best["strategy"] else str(best["reason"])
        con.print(f"[bold]Recommended: {escape(pick)}[/bold] - {escape(why)}; "
                  f"{unit_for('step_latency_s').show(row['step_latency_s'])} ms per step"
                  + (f", {row['speedup']:.2f}x over sync" if row["speedup"] == row["speedup"] else ""))
    else:
        con.print("[bold]No candidate meets every limit.[/bold]")
    print_recommendation(con, rec, top=top, wide=wide)
    if robust is not None:
        first = next(r for r in robust.runs if r.strategy == (robust.choice or robust.runs[0].strategy))
        notes = [robust.verdict.sentence] + ([robust.sentence] if robust.sentence else [])
        print_notes(con, f"How far to trust it (the top {len(robust.runs)} candidates re-run)", notes)
        print_trust(con, band=first.result.error_band, assumptions=first.result.assumptions,
                    facts=first.assessment.facts.sentences() if first.assessment else (), sens=robust.sensitivity)
    if rec.violations:
        first = escape(f"{rec.violations[0][0]} slower than {rec.violations[0][1]}")
        con.print(f"[yellow]the order the bounds assume failed for {len(rec.violations)} pairs (first: {first}); "
                  "rerun with --exhaustive[/yellow]")
    con.print(f"{len(rec.table)} candidates, {rec.n_classes} timing classes within the limits, {rec.n_simulated} "
              f"simulated in {rec.rounds} rounds ({wall_s:.1f} s); wrote {out / 'candidates.csv'} and {report}")


#: the columns of the narrow ranking table and their short headers (the legend gives units)
_SHORT = {"rank": "#", "strategy": "strategy", "step_latency_s": "ms", "speedup": "x",
          "weighted_lag_steps": "wlag", "max_lag_steps": "max", "peak_buffer_bytes": "MiB", "pred_fd_change": "FD+"}


_RANK_PREFIX = re.compile(r"^#\d+: ")


def print_recommendation(con: Console, rec: Recommendation, *, top: int, wide: bool) -> None:
    """The ranking, the Pareto front and the exclusions. By default each table row is one line
    in 100 columns: the strategy with its numbers, the reasons as a numbered list below."""
    from dicesim.report.recommend_report import exclusion_table, front_table, ranking_table

    ranked = ranking_table(rec, top)
    title = f"The {min(top, len(rec.ranked))} fastest within the limits"
    if len(ranked):
        if wide:
            con.print(rich_table(ranked, title=title))
            con.print(rich_table(front_table(rec),
                                 title="Pareto front: step latency vs weighted lag vs memory per GPU"))
        else:
            table, legend = compact_table(ranked, _SHORT, title=title)
            con.print(table)
            con.print(escape(legend), style="dim")
            reasons = [_RANK_PREFIX.sub("", str(r)) for r in ranked["reason"]]
            print_notes(con, "Why each placed where it did",
                        [f"#{rank}: {why}" for rank, why in zip(ranked["rank"], reasons)])
            front = front_table(rec)
            con.print(f"Pareto front (step latency vs weighted lag vs memory per GPU): {len(front)} candidates, ranks "
                      + ", ".join(str(r) for r in front["rank"].tolist())
                      + " (table: --wide, or report.html)", soft_wrap=False)
    out = exclusion_table(rec)
    if wide:
        con.print(rich_table(out, title="Why the others are out"))
    elif len(out):
        print_notes(con, "Why the others are out", [f"{r.status}, {r.candidates} candidates: {r.why} (e.g. {r.example})"
                                                    for r in out.itertuples()])
