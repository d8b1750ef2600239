"""`dicesim simulate` (one scenario) and `dicesim compare` (every strategy side by side)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from dicesim.atomic import write_parquet_atomic, write_text_atomic
from dicesim.cli import app
from dicesim.cli.tables import console as make_console, emit_frame, metric_table
from dicesim.cli.trust_view import print_trust
from dicesim.limits import MAX_LOCAL_WORKERS
from dicesim.content_key import scenario_files
from dicesim.membudget import plan_workers, scenario_nbytes
from dicesim.outguard import Output, check_outputs
from dicesim.outlock import locks_output
from dicesim.progress import progress_bar
from dicesim.terminal import printable

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
#: what `simulate --out` writes besides its trace
RUN_FILES = ("per_step.parquet", "lags.parquet", "links.parquet", "summary.json", "report.html")
_EXPERTS = typer.Option(None, "--num-experts", min=1, help="what-if: routed experts of the model (a divisor or "
                        "multiple of the GPU count); the output says when it changed nothing, and why")
_PLACEMENT = typer.Option(None, "--placement", help="with more GPUs than experts, how expert-parallel groups are "
                          "formed: contiguous (inside a server) or strided (one GPU per server in turn)")
_SENSITIVITY = typer.Option(False, "--sensitivity", help="vary each unmeasured parameter on the bottleneck (links "
                            "x0.5..x2, fitted efficiencies within their held-out error, datasheet compute x0.5..x2) "
                            "and say whether the answer holds or where it flips (docs/trust.md)")
_FORMAT = typer.Option("table", "--format", help="tables as table (rich), csv or markdown; tables are never cut")
_TRACES = typer.Option("gz", "--traces", help="Perfetto traces: gz (compressed, Perfetto opens it), json or none")
_ACCURACY = typer.Option(None, "--accuracy", help="accuracy file the error bands read (written by `dicesim accuracy "
                         "... --write-accuracy FILE`, e.g. on your own traces; default: the built-in one)")
_WHAT_IF = ("num_experts", "placement", "dtype")
_SAMPLE_STEPS = typer.Option(True, "--sample-steps/--every-step", help="with sampled (multinomial) routing, simulate "
                             "the warm-up and a sample of the steady steps and predict the rest with a 95%% interval "
                             "(step_latency_low_s/_high_s, steps_simulated; docs/model.md), or every step (exact)")
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


def sampling_line(summary: dict, steps: int) -> str | None:
    """What of a drawn run was simulated and the step latency's 95% sampling interval (from the result's
    ``extra``: the top-level low/high are the error band); None for an exact run."""
    from dicesim.compare import sampling_facts

    facts = sampling_facts(summary)
    if not facts:
        return None
    low_ms, high_ms = 1e3 * facts["sampled_step_low_s"], 1e3 * facts["sampled_step_high_s"]
    if "steps_simulated" in facts:
        what, off = f"{facts['steps_simulated']} of {steps} steps simulated", " (--every-step: simulate all)"
    else:
        what, off = f"{facts['groups_simulated']} alike groups simulated", ""
    return f"sampled: {what}, the rest predicted; step latency 95% interval [{low_ms:.3f}, {high_ms:.3f}] ms{off}"


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


def _base_of(scenario: Optional[Path], fields: dict) -> Any:
    """The scenario without the what-if flags (the file or the default with the other flags)."""
    from dicesim.compare import resolve_scenario

    return resolve_scenario(scenario, **{k: v for k, v in fields.items() if k not in _WHAT_IF})


@app.command()
@locks_output()
def simulate(
    scenario: Optional[Path] = typer.Argument(None, help=_SCENARIO_HELP),
    model: Optional[str] = _MODEL, topology: Optional[str] = _TOPOLOGY, world_size: Optional[int] = _WORLD,
    batch: Optional[int] = _BATCH, image_size: Optional[int] = _IMAGE, steps: Optional[int] = _STEPS,
    strategy: Optional[str] = typer.Option(None, "--strategy", help="strategy preset, e.g. sync, displaced, dice"),
    profile: Optional[str] = _PROFILE, routing: Optional[str] = _ROUTING, zipf_alpha: Optional[float] = _ALPHA,
    histogram: Optional[str] = _HIST, dtype: Optional[str] = _DTYPE, num_experts: Optional[int] = _EXPERTS,
    placement: Optional[str] = _PLACEMENT, interference: Optional[bool] = _INTERFERENCE,
    out: Optional[Path] = typer.Option(None, "--out", help="write tables, Perfetto trace and report.html here"),
    traces: str = _TRACES, sensitivity: bool = _SENSITIVITY, fmt: str = _FORMAT,
    accuracy: Optional[Path] = _ACCURACY, as_json: bool = _JSON, sample_steps: bool = _SAMPLE_STEPS,
) -> None:
    """Simulate one scenario: latency with its error band, overlap, exposed communication, staleness, buffer
    memory, the assumptions on the bottleneck and what the run does.

    Example (G/2 with DICE on a DGX H100):

        dicesim simulate --model G/2 --topology dgx-h100 --world-size 8 --strategy dice --sensitivity
    """
    from dicesim.compare import default_timeline_steps, resolve_scenario, run_strategy, runs_sensitivity, trace_stem
    from dicesim.compare import what_if_text
    from dicesim.report.html import write_report
    from dicesim.report.run_report import busiest_links, simulation_sections, summary_frame

    fields = dict(model=model, topology=topology, world_size=world_size, batch=batch, image_size=image_size,
                  steps=steps, strategy=strategy, profile=profile, routing=routing, zipf_alpha=zipf_alpha,
                  histogram=histogram, dtype=dtype, num_experts=num_experts, placement=placement,
                  interference=interference)
    sc = resolve_scenario(scenario, **fields)
    if out is not None:
        stem = trace_stem(sc.strategy.name)
        check_outputs([Output("--out", out, "dir", (*RUN_FILES, f"{stem}.trace.json", f"{stem}.trace.json.gz",
                                                     f"{stem}.events.parquet"))],
                      [scenario, *scenario_files(sc.model_dump())])
    _warn_profile_range(sc)
    from dicesim.scenario import check_run_size

    check_run_size(sc, record=out is not None)  # the documented limits first, then this machine's memory
    plan_workers(0, [scenario_nbytes(sc, record=out is not None)], jobs=1)  # one run that fits in memory
    t0 = time.perf_counter()
    run = run_strategy(sc, trace_dir=out, timeline_steps=default_timeline_steps(sc.steps) if out else (),
                       record=out is not None, trace_format=traces, accuracy=accuracy, sample_steps=sample_steps)
    wall_s = time.perf_counter() - t0
    step_s = float(run.summary["step_latency_s"])
    what_if = what_if_text(_base_of(scenario, fields), sc, step_s) if any(fields[k] is not None for k in _WHAT_IF) \
        else ""
    sens = runs_sensitivity([run], accuracy=accuracy) if sensitivity else None
    extra = {**run.result.extra, **({"what_if": what_if} if what_if else {}),
             **({"sensitivity": {"verdict": sens.verdict(), "rows": sens.rows()}} if sens else {})}
    result = run.result.model_copy(update={"extra": extra})
    written: list[Path] = []
    if out is not None:
        for name, table in (("per_step", run.per_step), ("lags", run.lags), ("links", run.links)):
            written.append(write_parquet_atomic(table, out / f"{name}.parquet"))
        written.append(write_text_atomic(result.to_json(indent=2) + "\n", out / "summary.json"))
        written.append(write_report(simulation_sections(run, what_if=what_if, sensitivity=sens),
                                    out / "report.html", title=f"dicesim: {sc.label()}"))
        if run.trace_path is not None:
            written.insert(0, run.trace_path)
    if as_json:
        sys.stdout.write(result.to_json() + "\n")
        return
    con = make_console()
    con.print(f"{printable(sc.label())}  ({sc.strategy.describe()}; simulated in {wall_s:.2f} s)")
    con.print(f"hardware profile: {profile_line(run.result)}")
    if run.summary.get("memory_note"):
        con.print(run.summary["memory_note"], markup=False, highlight=False)
    if (line := sampling_line(result.extra, sc.steps)) is not None:
        con.print(line, markup=False, highlight=False)
    if fmt == "table":
        con.print(metric_table(summary_frame(run.summary).iloc[0].to_dict(), title="Summary"))
    else:
        emit_frame(con, summary_frame(run.summary), fmt=fmt, title="Summary")
    if sc.strategy.lag_subject != "expert output":  # the lag and buffer rows mean something else for this family
        con.print(f"lags: of the {sc.strategy.lag_subject}; peak buffer: the K/V buffers held across steps")
    con.print(f"predicted quality: {run.summary['quality_basis']}")
    if len(run.links):
        emit_frame(con, busiest_links(run.links, 5), fmt=fmt, title="Busiest links (by utilisation of capacity)")
    a = run.assessment
    print_trust(con, band=result.error_band, assumptions=result.assumptions, facts=a.facts.sentences() if a else (),
                what_if=what_if, sens=sens, fmt=fmt)
    if written:
        con.print("wrote " + ", ".join(str(p) for p in written))
    elif out is None:
        con.print(f"(no files written; add --out DIR for tables, a Perfetto trace {trace_stem(sc.strategy.name)}"
                  ".trace.json.gz and report.html)")


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
    histogram: Optional[str] = _HIST, dtype: Optional[str] = _DTYPE, num_experts: Optional[int] = _EXPERTS,
    placement: Optional[str] = _PLACEMENT, interference: Optional[bool] = _INTERFERENCE,
    out: Path = typer.Option(Path("out/compare"), "--out", help="summary.csv/.parquet, traces, report.html"),
    traces: str = _TRACES, sensitivity: bool = _SENSITIVITY, fmt: str = _FORMAT, accuracy: Optional[Path] = _ACCURACY,
    workers: Optional[int] = typer.Option(None, "--workers", min=1, max=MAX_LOCAL_WORKERS,
                                          help="parallel processes (default: as many as the CPUs and memory hold)"),
    as_json: bool = _JSON,
) -> None:
    """Simulate several strategies on one scenario and put them side by side, with a verdict on their
    order (error bands), the assumptions on the bottleneck and what the run does.

    Example (8 L40S on PCIe with P2P, XL/2 at 512 px, batch 16, 20 steps; is the winner robust?):

        dicesim compare --topology 8x-l40s-pcie --image-size 512 --batch 16 --steps 20 --sensitivity

    Your own machine: `dicesim topology derive 8x-rtx4090-pcie --gpu l40s --p2p --name my-box`, then
    `--topology my-box.toml`.
    """
    from dicesim.compare import compare_strategies, resolve_scenario, runs_sensitivity, trace_stem, what_if_text
    from dicesim.report.html import write_report
    from dicesim.report.run_report import comparison_sections
    from dicesim.strategy import COMPARE_DEFAULT
    from dicesim.topology import machine_name

    fields = dict(model=model, topology=topology, world_size=world_size, batch=batch, image_size=image_size,
                  steps=steps, profile=profile, routing=routing, zipf_alpha=zipf_alpha, histogram=histogram,
                  dtype=dtype, num_experts=num_experts, placement=placement,
                  interference=interference)
    sc = resolve_scenario(scenario, **fields)
    _warn_profile_range(sc)
    # without --strategies: the default presets the scenario can run (compare_strategies names the others)
    chosen = [s.strip() for s in strategies.split(",")] if strategies else None
    names = chosen if chosen is not None else list(COMPARE_DEFAULT)
    stems = [trace_stem(n) for n in names if n]
    check_outputs([Output("--out", out, "dir", ("summary.csv", "summary.parquet", "report.html",
                                                *(f"{s}{x}" for s in stems
                                                  for x in (".trace.json", ".trace.json.gz", ".events.parquet"))))],
                  [scenario, *scenario_files(sc.model_dump())])
    # several recorded simulations at once: as many as the CPUs and the memory hold (membudget)
    from dicesim.scenario import check_run_size

    check_run_size(sc, record=True)
    n_workers = plan_workers(workers, [scenario_nbytes(sc, record=True)], jobs=len(names))
    t0 = time.perf_counter()
    with progress_bar("compare", unit="strategies") as ticker:
        cmp = compare_strategies(sc, chosen, trace_dir=out, workers=n_workers, ticker=ticker, trace_format=traces,
                                 accuracy=accuracy)
    sync = next((r for r in cmp.runs if r.strategy == "sync"), None)
    what_if = ""
    if any(fields[k] is not None for k in _WHAT_IF):
        ref = sync or cmp.runs[0]
        what_if = what_if_text(_base_of(scenario, fields), ref.scenario, float(ref.summary["step_latency_s"]))
    sens = runs_sensitivity(cmp.runs, workers=n_workers, accuracy=accuracy) if sensitivity else None
    table = cmp.table
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(table.to_csv(index=False), out / "summary.csv")
    write_parquet_atomic(table, out / "summary.parquet")
    report = write_report(comparison_sections(cmp, what_if=what_if, sensitivity=sens), out / "report.html",
                          title=f"dicesim compare: {sc.setup_label()}")
    wall_s = time.perf_counter() - t0
    fastest = cmp.fastest_run
    facts = fastest.assessment.facts.sentences() if fastest.assessment else []
    if as_json:
        rows = [{k: _finite(v) for k, v in row.items()} for row in table.to_dict(orient="records")]
        for row, run in zip(rows, cmp.runs):
            row["error_band"] = run.result.error_band.model_dump() if run.result.error_band else None
        _print_json({"label": sc.setup_label(), "strategies": rows,
                     "verdict": cmp.verdict.sentence if cmp.verdict else "", "fastest": fastest.strategy,
                     "order_resolved": cmp.verdict.resolved if cmp.verdict else None,
                     "assumptions": [a.model_dump() for a in fastest.result.assumptions], "run_facts": facts,
                     "what_if": what_if,
                     "sensitivity": {"verdict": sens.verdict(), "robust": sens.robust, "rows": sens.rows()}
                     if sens else None})
        return
    con = make_console()
    title = (f"{sc.model} on {sc.world_size} GPUs ({machine_name(sc.topology)}), batch {sc.batch}, {sc.image_size} "
             f"px, {sc.steps} steps" + "".join(f", {o}" for o in sc.overrides())
             + (f", {sc.preset().num_experts} experts" if sc.num_experts else ""))
    # memory is in the files (and in csv/markdown); on screen one line (a table this wide would fold its
    # headers), and a line for each strategy that does not fit
    emit_frame(con, table if fmt != "table" else table.drop(columns=["peak_memory_bytes", "fits"], errors="ignore"),
               fmt=fmt, title=title)
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
    print_trust(con, band=fastest.result.error_band, assumptions=fastest.result.assumptions, facts=facts,
                verdict=cmp.verdict.sentence if cmp.verdict else "", what_if=what_if, sens=sens, fmt=fmt)
    traces_written = ", ".join(r.trace_path.name for r in cmp.runs if r.trace_path is not None)
    con.print(f"wrote {out / 'summary.csv'}, {out / 'summary.parquet'}, {report}"
              + (f" and traces {traces_written}" if traces_written else " (no traces: --traces gz or json)")
              + f" ({wall_s:.1f} s)")
