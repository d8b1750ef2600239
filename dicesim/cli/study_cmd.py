"""`dicesim study`: strategies compared along one or two axes, one offline HTML report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from dicesim.atomic import write_parquet_atomic, write_text_atomic
from dicesim.cli import app
from dicesim.cli.tables import console as make_console, emit_frame
from dicesim.cluster import scale_out
from dicesim.errors import ConfigError
from dicesim.outguard import Output, check_outputs
from dicesim.outlock import locks_output
from dicesim.progress import progress_bar
from dicesim.strict_table import ascii_int_list



def csv_list(value: Optional[str], option: str, kind: type = str) -> Optional[tuple]:
    """``"a,b"`` -> ``("a", "b")`` (or ints); None stays None; bad items are one-line errors."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(option, "needs at least one value")
    values = ascii_int_list(value, option, "comma-separated integers") if kind is int else tuple(map(kind, items))
    dup = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if dup is not None:  # a repeated value would simulate one configuration twice
        raise ConfigError(option, f"{dup!r} is given twice", "each value once")
    return values


#: CPU seconds of one default-study configuration (XL/2 or G/2, 50 steps, 8 or 16 GPUs, every
#: family) in this process, measured: 288 configurations in 11.3 s of CPU, start-up and report
#: included (farm-bench, median of 2, load 1.7, 2026-12-07; 30.0 s before the study's caches and
#: the sequence family's window reuse)
STUDY_CONFIG_CPU_S = 0.039


@app.command()
@locks_output()
def study(
    study_file: Optional[Path] = typer.Argument(None, help="study TOML with a \\[study] table (default: the "
                                                           "built-in topologies for XL/2 and G/2 across batches)"),
    models: Optional[str] = typer.Option(None, "--models", help="comma-separated model presets, e.g. XL/2,G/2"),
    topologies: Optional[str] = typer.Option(None, "--topologies", help="comma-separated topology presets or files"),
    world_sizes: Optional[str] = typer.Option(None, "--world-sizes",
                                              help="comma-separated GPU counts (default: every GPU of each topology)"),
    batches: Optional[str] = typer.Option(None, "--batches", help="comma-separated images per GPU"),
    image_sizes: Optional[str] = typer.Option(None, "--image-sizes", help="comma-separated image sizes (px)"),
    strategies: Optional[str] = typer.Option(None, "--strategies", help="comma-separated presets (sync is added)"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="denoising steps"),
    out: Path = typer.Option(Path("out/study"), "--out", help="result directory (study.parquet, report.html)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=0,
                                          help="local Dask worker processes (0 = this process; default: as many as "
                                               "the CPUs and memory hold when the study is large enough to pay for "
                                               "the cluster, else this process)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="address of a running Dask scheduler"),
    fmt: str = typer.Option("table", "--format", help="tables as table (rich), csv or markdown; never cut"),
) -> None:
    """Compare strategies across machines, GPU counts, batches or image sizes, with a band per setting; rerun to resume.

    Example (XL/2 on PCIe vs NVSwitch at batch 8, 20 steps, ~5 s):

        dicesim study --models XL/2 --topologies 8x-rtx4090-pcie,dgx-h100 --batches 8 --steps 20
    """
    from dicesim.report.html import write_report
    from dicesim.report.study_report import TABLE_COLUMNS, plain_strings, study_digest, study_sections
    from dicesim.study import load_study, make_study, run_study, study_size, study_table
    from dicesim.sweep import RESULT_DIR_FILES

    base = load_study(study_file) if study_file else None
    given = (models, topologies, world_sizes, batches, image_sizes, strategies, steps)
    # the embedded default's name would mislabel a study made of other axes
    name = "custom" if base is None and any(v is not None for v in given) else None
    spec = make_study(base, name=name, models=csv_list(models, "--models"),
                      topologies=csv_list(topologies, "--topologies"),
                      world_sizes=csv_list(world_sizes, "--world-sizes", int),
                      batches=csv_list(batches, "--batches", int),
                      image_sizes=csv_list(image_sizes, "--image-sizes", int),
                      strategies=csv_list(strategies, "--strategies"), steps=steps)
    check_outputs([Output("--out", out, "dir", (*RESULT_DIR_FILES, "study.parquet", "study.csv", "summary.txt"))],
                  [study_file, *spec.topologies])
    n_workers = scale_out(workers, scheduler, (study_size(spec), STUDY_CONFIG_CPU_S * spec.steps / 50))
    con = make_console()
    axes = spec.axes()
    where = scheduler or ("local Dask workers" if n_workers is None else
                          f"{n_workers} local Dask workers" if n_workers else "this process")
    con.print(f"study {spec.name!r}: {', '.join(spec.models)} along {' and '.join(axes) or 'one setting'}; "
              f"strategies {', '.join(spec.all_strategies())}; on {where}")
    t0 = time.perf_counter()
    with progress_bar("study", unit="configurations") as ticker:
        outcome = run_study(spec, out, workers=n_workers, scheduler=scheduler, ticker=ticker)
    wall_s = time.perf_counter() - t0
    table = study_table(outcome.table)
    skipped = outcome.table[outcome.table["status"] != "ok"]
    write_parquet_atomic(outcome.table, out / "study.parquet")
    cols = [c for c in TABLE_COLUMNS if c in table.columns]
    write_text_atomic(table[cols].to_csv(index=False), out / "study.csv")
    table = plain_strings(table)  # written above as read; the report reads plain strings, faster
    digest = study_digest(table, axes)  # the report and the terminal show the same tables
    summary = digest.summary
    write_text_atomic("\n\n".join(summary) + "\n", out / "summary.txt")
    report = write_report(study_sections(table, axes, skipped=skipped, digest=digest),
                          out / "report.html", title=f"dicesim study: {spec.name}")
    best = digest.best
    if len(best):
        emit_frame(con, best, fmt=fmt, title="Fastest strategy per setting that fits, its error band, and what sync "
                   "waits for")
    winners = digest.winners
    if len(winners):
        emit_frame(con, winners, fmt=fmt, title="Which family wins (fastest that fits GPU memory)")
        for line in digest.family_lines:
            con.print(line, soft_wrap=False, markup=False)
    for paragraph in summary:
        con.print(paragraph, soft_wrap=False)
    con.print(f"{outcome.n_run} configurations simulated, {outcome.n_cached} reused, {len(skipped)} skipped "
              f"in {wall_s:.1f} s; wrote {out / 'study.parquet'}, {out / 'study.csv'}, {out / 'summary.txt'} and "
              f"{report}")
