"""`dicesim simulate` (one scenario) and `dicesim compare` (every strategy side by side)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from dicesim.atomic import write_parquet_atomic, write_text_atomic
from dicesim.cli import app
from dicesim.cli.tables import console as make_console, metric_table, rich_table
from dicesim.limits import MAX_LOCAL_WORKERS
from dicesim.outlock import locks_output
from dicesim.progress import progress_bar

_SCENARIO_HELP = "scenario TOML (default: XL/2 on 8x-rtx4090-pcie, 8 GPUs, batch 32, 256 px, 50 steps)"
# Option metadata shared by both commands; each flag overrides the scenario file's value.
_MODEL = typer.Option(None, "--model", help="model preset: tiny, small, digits, S/2, B/2, XL/2, G/2")
_TOPOLOGY = typer.Option(None, "--topology", help="topology preset or .toml/.graphml file")
_WORLD = typer.Option(None, "--world-size", min=1, help="number of GPUs")
_BATCH = typer.Option(None, "--batch", min=1, help="images per GPU")
_IMAGE = typer.Option(None, "--image-size", min=1, help="image size (px; digits: 8)")
_STEPS = typer.Option(None, "--steps", min=1, help="denoising steps")
_PROFILE = typer.Option(None, "--profile", help="hardware profile TOML or built-in name")
_ROUTING = typer.Option(None, "--routing", help="expert load: uniform, zipf or histogram")
_HIST = typer.Option(None, "--histogram",
                     help="measured router histogram: executor trace file/directory, .npy or .csv (layers x experts)")
_ALPHA = typer.Option(None, "--zipf-alpha", min=0, help="Zipf exponent of the expert load")
_DTYPE = typer.Option(None, "--dtype", help="activation precision: bf16, fp16 or fp32 (sets bytes moved and held)")
_JSON = typer.Option(False, "--json", help="print one JSON object on stdout and nothing else")
_INTERFERENCE = typer.Option(None, "--interference/--no-interference",
                             help="compute-communication interference on (the profile's factors) or off (both 0)")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    return value


def _print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps({k: _finite(v) if not isinstance(v, (list, dict)) else v for k, v in obj.items()},
                                allow_nan=False) + "\n")


def profile_line(result) -> str:
    """Which profile timed a simulated run and what it rests on (one line for the text outputs)."""
    what = {"measured": "measured: fitted from traces", "datasheet": "datasheet figures and stated assumptions"}
    off = "; interference off" if result.extra.get("interference") is False else ""
    return f"{result.profile} ({what.get(result.profile_basis, result.profile_basis)}){off}"


def _warn_profile_range(sc) -> None:
    """One stderr line when a calibrated profile is used outside the sizes it was fitted on."""
    if sc.profile:
        from dicesim.calibrate import warn_outside_range
        from dicesim.sim.costs.profile import get_profile

        warn_outside_range(get_profile(sc.profile), sc)


@app.command()
@locks_output()
def simulate(
    scenario: Optional[Path] = typer.Argument(None, help=_SCENARIO_HELP),
    model: Optional[str] = _MODEL, topology: Optional[str] = _TOPOLOGY, world_size: Optional[int] = _WORLD,
    batch: Optional[int] = _BATCH, image_size: Optional[int] = _IMAGE, steps: Optional[int] = _STEPS,
    strategy: Optional[str] = typer.Option(None, "--strategy", help="strategy preset, e.g. sync, displaced, dice"),
    profile: Optional[str] = _PROFILE, routing: Optional[str] = _ROUTING, zipf_alpha: Optional[float] = _ALPHA,
    histogram: Optional[str] = _HIST, dtype: Optional[str] = _DTYPE, interference: Optional[bool] = _INTERFERENCE,
    out: Optional[Path] = typer.Option(None, "--out", help="write tables, Perfetto trace and report.html here"),
    as_json: bool = _JSON,
) -> None:
    """Simulate one scenario: latency, overlap, exposed communication, staleness, buffer memory.

    Example (G/2 with DICE on a DGX H100):

        dicesim simulate --model G/2 --topology dgx-h100 --world-size 8 --strategy dice
    """
    from dicesim.compare import default_timeline_steps, resolve_scenario, run_strategy, trace_stem
    from dicesim.report.html import write_report
    from dicesim.report.run_report import busiest_links, simulation_sections, summary_frame

    sc = resolve_scenario(scenario, model=model, topology=topology, world_size=world_size, batch=batch,
                          image_size=image_size, steps=steps, strategy=strategy, profile=profile, routing=routing,
                          zipf_alpha=zipf_alpha, histogram=histogram, dtype=dtype, interference=interference)
    _warn_profile_range(sc)
    t0 = time.perf_counter()
    run = run_strategy(sc, trace_dir=out, timeline_steps=default_timeline_steps(sc.steps) if out else (),
                       record=out is not None)
    wall_s = time.perf_counter() - t0
    written: list[Path] = []
    if out is not None:
        for name, table in (("per_step", run.per_step), ("lags", run.lags), ("links", run.links)):
            written.append(write_parquet_atomic(table, out / f"{name}.parquet"))
        written.append(write_text_atomic(run.result.to_json(indent=2) + "\n", out / "summary.json"))
        written.append(write_report(simulation_sections(run), out / "report.html", title=f"dicesim: {sc.label()}"))
        if run.trace_path is not None:
            written.insert(0, run.trace_path)
    if as_json:
        sys.stdout.write(run.result.to_json() + "\n")
        return
    con = make_console()
    con.print(f"{sc.label()}  ({sc.strategy.describe()}; simulated in {wall_s:.2f} s)")
    con.print(f"hardware profile: {profile_line(run.result)}")
    if run.summary.get("memory_note"):
        con.print(run.summary["memory_note"], markup=False, highlight=False)
    con.print(metric_table(summary_frame(run.summary).iloc[0].to_dict(), title="Summary"))
    if sc.strategy.lag_subject != "expert output":  # the lag and buffer rows mean something else for this family
        con.print(f"lags: of the {sc.strategy.lag_subject}; peak buffer: the K/V buffers held across steps")
    con.print(f"predicted quality: {run.summary['quality_basis']}")
    if len(run.links):
        con.print(rich_table(busiest_links(run.links, 5), title="Busiest links"))
    if written:
        con.print("wrote " + ", ".join(str(p) for p in written))
    elif out is None:
        con.print(f"(no files written; add --out DIR for tables, a Perfetto trace {trace_stem(sc.strategy.name)}"
                  ".trace.json and report.html)")


@app.command()
@locks_output()
def compare(
    scenario: Optional[Path] = typer.Argument(None, help=_SCENARIO_HELP),
    strategies: Optional[str] = typer.Option(None, "--strategies",
                                             help="comma-separated presets (default: every family's "
                                                  "comparison presets, `dicesim presets`)"),
    model: Optional[str] = _MODEL, topology: Optional[str] = _TOPOLOGY, world_size: Optional[int] = _WORLD,
    batch: Optional[int] = _BATCH, image_size: Optional[int] = _IMAGE, steps: Optional[int] = _STEPS,
    profile: Optional[str] = _PROFILE, routing: Optional[str] = _ROUTING, zipf_alpha: Optional[float] = _ALPHA,
    histogram: Optional[str] = _HIST, dtype: Optional[str] = _DTYPE, interference: Optional[bool] = _INTERFERENCE,
    out: Path = typer.Option(Path("out/compare"), "--out", help="summary.csv/.parquet, traces, report.html"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, max=MAX_LOCAL_WORKERS,
                                          help="parallel processes (default: CPUs)"),
    as_json: bool = _JSON,
) -> None:
    """Simulate several strategies on one scenario and put them side by side.

    Example (XL/2 at batch 8 on a DGX H100, 20 steps, ~10 s):

        dicesim compare --model XL/2 --topology dgx-h100 --batch 8 --steps 20
    """
    from dicesim.compare import compare_strategies, resolve_scenario
    from dicesim.report.html import write_report
    from dicesim.report.run_report import comparison_sections
    from dicesim.strategy import COMPARE_DEFAULT

    sc = resolve_scenario(scenario, model=model, topology=topology, world_size=world_size, batch=batch,
                          image_size=image_size, steps=steps, profile=profile, routing=routing, zipf_alpha=zipf_alpha,
                          histogram=histogram, dtype=dtype, interference=interference)
    _warn_profile_range(sc)
    names = [s.strip() for s in strategies.split(",")] if strategies else list(COMPARE_DEFAULT)
    n_workers = workers or min(os.cpu_count() or 1, len(names))
    t0 = time.perf_counter()
    with progress_bar("compare", unit="strategies") as ticker:
        cmp = compare_strategies(sc, names, trace_dir=out, workers=n_workers, ticker=ticker)
    table = cmp.table
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(table.to_csv(index=False), out / "summary.csv")
    write_parquet_atomic(table, out / "summary.parquet")
    report = write_report(comparison_sections(cmp), out / "report.html", title=f"dicesim compare: {sc.setup_label()}")
    wall_s = time.perf_counter() - t0
    if as_json:
        rows = [{k: _finite(v) for k, v in row.items()} for row in table.to_dict(orient="records")]
        _print_json({"label": sc.setup_label(), "strategies": rows})
        return
    con = make_console()
    title = (f"{sc.model} on {sc.world_size} GPUs ({sc.topology}), batch {sc.batch}, {sc.image_size} px, "
             f"{sc.steps} steps")
    # memory is in the files; on screen one line (a table this wide would fold its headers), and a
    # line for each strategy that does not fit
    con.print(rich_table(table, title=title, columns=[c for c in table.columns
                                                      if c not in ("peak_memory_bytes", "fits")]))
    mem = [(r.strategy, r.summary.get("peak_memory_bytes")) for r in cmp.runs]
    cap = cmp.runs[0].summary.get("memory_capacity_bytes") if cmp.runs else None
    if mem and all(v is not None for _, v in mem):
        of = f" of {cap / 2**30:.1f} GiB" if cap is not None and math.isfinite(cap) else ""
        con.print("memory per GPU" + of + ": " + ", ".join(f"{n} {v / 2**30:.1f} GiB" for n, v in mem),
                  markup=False, highlight=False)
    for r in cmp.runs:
        if r.summary.get("fits") is False:
            con.print(f"{r.strategy}: {r.summary['memory_note']}", markup=False, highlight=False)
    if cmp.runs:
        con.print(f"hardware profile: {profile_line(cmp.runs[0].result)}")
    if cmp.runs:
        con.print(f"predicted quality: {cmp.runs[0].summary['quality_basis']}")
    traces = ", ".join(r.trace_path.name for r in cmp.runs if r.trace_path is not None)
    con.print(f"wrote {out / 'summary.csv'}, {out / 'summary.parquet'}, {report} and traces {traces} "
              f"({wall_s:.1f} s)")
