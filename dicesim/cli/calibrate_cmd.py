"""`dicesim calibrate` (traces -> profile TOML) and `dicesim accuracy` (fit, predict held-out runs, publish)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from dicesim.cli import app
from dicesim.outguard import Output, check_outputs
from dicesim.outlock import locks_output
from dicesim.progress import progress_bar
from dicesim.terminal import printable

_WHERE = typer.Option(None, "--where", help='use only runs matching this expression, e.g. "world_size == 2"')
_STREAM = typer.Option("compute", "--stream", help="compute track to fit (GPU op timings: compute or compute:graph)")


def _load(traces: list[Path], where: Optional[str]):
    from dicesim.calibrate.runs import load_runs
    from dicesim.calibrate.select import run_selector, split_runs
    from dicesim.errors import ConfigError

    if where:
        run_selector(where)  # one-line error before any trace is read
    runs = load_runs([str(t) for t in traces])
    if where:
        runs, _ = split_runs(runs, where)
        if not runs:
            raise ConfigError("where", f"{where!r} matches no trace")
    return runs


@app.command()
@locks_output()
def calibrate(
    traces: list[Path] = typer.Argument(..., help="trace directories or files (executor, simulator, Kineto JSON)"),
    out: Path = typer.Option(..., "--out", help="calibrated profile TOML to write"),
    base: Optional[str] = typer.Option(None, "--base", help="profile to start from: built-in name or TOML "
                                       "(default: the traced GPU's built-in, or a CPU stub for CPU traces)"),
    name: Optional[str] = typer.Option(None, "--name", help="name of the calibrated profile"),
    where: Optional[str] = _WHERE, stream: str = _STREAM,
    host_costs: Optional[Path] = typer.Option(
        None, "--host-costs", help="CPU host costs of the executor (traces/host/cpu-executor.toml): fit device time "
        "on compute:graph and an eager host model on --stream (GPU op timings with both tracks)"),
    collectives: Optional[Path] = typer.Option(
        None, "--collectives", help="gloo collectives microbenchmark CSV (traces/cpu-collectives/...): fit the "
        "all-gather's and ring pass's own latency and bandwidth on it (over the traces' world sizes)"),
    as_json: bool = typer.Option(False, "--json", help="print the fit summary as one JSON object"),
) -> None:
    """Fit a hardware profile (compute, collectives, interference, host) from traced runs.

    Example (the committed H100 op timings, ~3 s):

        dicesim calibrate traces/gpu/h100 --out out/h100.toml
    """
    from dicesim.calibrate.api import calibrate_runs
    from dicesim.sim.costs.profile import save_profile
    from dicesim.topology import save_toml

    # the profile, and beside it one topology per world size
    check_outputs([Output("--out", out), Output("--out", out.parent, "dir", (f"{out.stem}.topology-w*.toml",))],
                  [*traces, base, *([collectives] if collectives else [])])
    from dicesim.calibrate.fit_collectives import fit_collectives, load_bench

    bench = load_bench(collectives) if collectives is not None else None  # a bad file fails before the traces
    runs = _load(traces, where)
    coll = None if bench is None else fit_collectives(bench, {r.world_size for r in runs if r.world_size > 1},
                                                      source=str(collectives))
    cal = calibrate_runs(runs, base=base, stream=stream, name=name or out.stem,
                         host_costs=str(host_costs) if host_costs is not None else None, collectives=coll)
    save_profile(cal.profile, out)
    written = [out]
    if cal.comm is not None:
        worlds = sorted({r.world_size for r in runs if r.world_size > 1})
        for w in worlds:
            written.append(out.with_name(f"{out.stem}.topology-w{w}.toml"))
            save_toml(cal.topology(w), written[-1])
    doc = {
        "profile": str(out), "runs": len(runs), "fitted_range": cal.profile.fitted_range,
        "interference": cal.interference, "comm_interference": cal.profile.comm_interference,
        "ops": {k: {"form": f.form, "launch_us": f.roofline[0] * 1e6, "samples": f.n_samples, "sizes": f.n_configs,
                    "median_abs_err": f.roofline_rel_err_median} for k, f in cal.op_fits.items()},
        "collectives": None if cal.comm is None else {
            "a2a_latency_us": cal.comm.a2a_latency_s * 1e6, "link_bw_GBps": cal.comm.bw_Bps / 1e9,
            "count_exchange_latency_us": cal.comm.counts_latency_s * 1e6, "all_to_alls": cal.comm.n_a2a},
        "step_collectives": None if coll is None else {
            f.op: {"step_latency_us": f.latency_s * 1e6, "bw_GBps": f.bw_Bps / 1e9,
                   "rel_residuals": list(f.rel_residuals)} for f in (coll.all_gather, coll.p2p_pass)},
        "files": [str(p) for p in written],
        "host": None if cal.host is None else {
            "rho": cal.host.rho, "tau_us": cal.host.tau_s * 1e6, "op_us": {k: v * 1e6 for k, v in cal.host.model.op_s.items()},
            "expert_us": cal.host.model.expert_s * 1e6, "syncs": cal.host.model.syncs,
            "timed_op_host_us": {k: v * 1e6 for k, v in cal.host.gpu_host_s.items()}},
    }
    if as_json:
        print(json.dumps(doc, allow_nan=False))
        return
    print(f"calibrated {cal.profile.name} from {len(runs)} traces -> {out}")
    for k, f in cal.op_fits.items():
        print(f"  {k:14s} launch {f.roofline[0] * 1e6:9.1f} us  {f.n_samples:6d} samples, {f.n_configs:3d} sizes, "
              f"median |err| {f.roofline_rel_err_median:6.1%} (best form: {f.form})")
    if cal.comm is not None:
        print(f"  all-to-all     latency {cal.comm.a2a_latency_s * 1e6:.1f} us, link bandwidth "
              f"{cal.comm.bw_Bps / 1e9:.3g} GB/s; count exchange {cal.comm.counts_latency_s * 1e6:.1f} us")
    if coll is not None:
        for f in (coll.all_gather, coll.p2p_pass):
            print(f"  {f.describe()}")
    if cal.interference is not None:
        print(f"  interference   {cal.interference:.3f} (compute slow-down while communicating)")
    if cal.overlap is not None:
        print(f"  comm interf.   {cal.overlap.comm_interference:.3f} (communication slow-down while computing; "
              f"fitted on {cal.overlap.n_configs} async configurations)")
    if cal.host is not None:
        h = cal.host
        print(f"  host           {h.rho:.3g} x CPU host time + {h.tau_s * 1e6:.1f} us per launch; executor ops "
              + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in h.model.op_s.items())
              + f", {h.model.expert_s * 1e6:.0f} us per local expert")
    for p in written[1:]:
        print(f"  topology       {p}")


@app.command()
@locks_output()
def accuracy(
    traces: Optional[list[Path]] = typer.Argument(None, help="trace directories or files of executor runs "
                                                  "(with --published: published-set TOML files or directories, "
                                                  "default traces/published)"),
    fit_on: Optional[str] = typer.Option(None, "--fit-on", help="runs (figures) to fit on; the rest are predicted "
                                         "(default 'batch in (1, 4)'; with --published 'role == \"fit\"')"),
    published: bool = typer.Option(False, "--published", help="fit the NCCL model on published GPU measurements "
                                   "and predict the rest (writes only its own section of --out)"),
    paper: bool = typer.Option(False, "--paper", help="acceptance check: predict the DICE paper's own figures "
                               "(traces/acceptance/dice-paper.toml; never fitted on) and write its section of --out"),
    write_model: Optional[Path] = typer.Option(None, "--write-model", help="with --published: write the fitted "
                                               "NCCL model TOML here (dicesim/data/nccl.toml is the built-in one)"),
    nccl_page: Optional[Path] = typer.Option(None, "--nccl-page", help="with --published: write the fitted "
                                             "model's section of this page (docs/nccl.md)"),
    cross_validation: bool = typer.Option(True, "--cross-validation/--no-cross-validation",
                                          help="with --published: refit on the other splits (about a minute)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write this Markdown page and its .html figure"),
    write_accuracy_to: Optional[Path] = typer.Option(
        None, "--write-accuracy", help="record the held-out errors in this accuracy file, where error bands read "
        "them (its own level only: collective with --published, cpu with traces; dicesim/data/accuracy.toml is the "
        "built-in one)"),
    pooled: bool = typer.Option(False, "--pooled", help="one profile for all world sizes (default: one each)"),
    collectives: Optional[Path] = typer.Option(
        None, "--collectives", help="gloo collectives microbenchmark CSV (benchmarks/gloo_collectives.py, e.g. "
        "traces/cpu-collectives/gloo-collectives-v1.csv): the profiles' all-gather and ring-pass latency and "
        "bandwidth are fitted on it (default: the all-to-all's stand in)"),
    reps: str = typer.Option("median", "--reps", help="repetition representing a configuration: median or min"),
    base: Optional[str] = typer.Option(None, "--base", help="profile to start from (see calibrate)"),
    where: Optional[str] = _WHERE,
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
) -> None:
    """Fit on part of the runs, predict the rest with the simulator, report the errors.

    Example (the published GPU measurements at two levels, collective and step, with a
    cross-validation of the collective fit; about a minute, 15 s without it):

        dicesim accuracy --published

    With --paper the exit code is 1 when a figure of the paper falls outside its band.
    """
    from dicesim.calibrate.accuracy import Bench, run_accuracy
    from dicesim.calibrate.accuracy_doc import families_line, write_accuracy
    from dicesim.calibrate.select import run_selector
    from dicesim.errors import ConfigError

    # the page is rewritten in place by design (its other sections are kept): not an input here
    check_outputs([*([Output("--out", out)] if out else []),
                   *([Output("--out", out.with_suffix(".html"))] if out and not (paper or published) else []),
                   *([Output("--write-model", write_model)] if write_model else [])],
                  [*(traces or []), base, *([collectives] if collectives else [])])
    if collectives is not None and (paper or published):
        raise ConfigError("collectives", "only applies to executor traces (not with --paper or --published)")
    if paper:
        raise typer.Exit(_paper_check(traces, out, as_json))
    if published:
        from dicesim.calibrate.published.schema import DEFAULT_FIT_ON
        from dicesim.cli.published_cmd import run_published

        run_published(list(traces or []), fit_on=fit_on or DEFAULT_FIT_ON, out=out, write_model=write_model,
                      nccl_page=nccl_page, cross_validation=cross_validation, as_json=as_json,
                      write_accuracy=write_accuracy_to)
        return
    if write_model is not None or nccl_page is not None:
        raise ConfigError("write-model" if write_model is not None else "nccl-page", "only applies with --published")
    if not traces:
        raise ConfigError("traces", "give trace directories or files, or --published")
    fit_on = fit_on or "batch in (1, 4)"
    run_selector(fit_on)  # a bad expression is a one-line error before any trace is read
    bench = Bench.load(str(collectives)) if collectives is not None else None  # a bad file fails before the traces
    runs = _load(traces, where)
    with progress_bar("accuracy", unit="configurations predicted") as ticker:
        rep = run_accuracy(runs, fit_on=fit_on, per_world_size=not pooled, base=base, reps=reps, ticker=ticker,
                           collectives=bench)
    for w in rep.warnings:
        print(f"warning: {printable(w, markup=False)}", file=sys.stderr)
    if out is not None:
        parts = ["dicesim accuracy", *map(str, traces), "--fit-on", shlex.quote(fit_on), "--reps", reps]
        parts += (["--pooled"] if pooled else []) + (["--base", base] if base else [])
        parts += ["--collectives", str(collectives)] if collectives else []
        parts += (["--where", shlex.quote(where)] if where else []) + ["--out", str(out)]
        write_accuracy(rep, out, command=" ".join(parts))
    if write_accuracy_to is not None:
        _record_cpu_level(rep, write_accuracy_to, traces, fit_on, reps, pooled, collectives)
    if as_json:
        print(json.dumps({"summary": rep.summary, "rows": json.loads(rep.rows.to_json(orient="records")),
                          "rankings": json.loads(rep.rankings.to_json(orient="records"))}, allow_nan=False))
        return
    held = rep.rows[rep.rows["held_out"]]
    print(f"fit on {rep.fit_on!r}: {rep.summary['fit_configs']} configurations; predicting {len(held)} held out")
    print(f"{'configuration':42s} {'measured':>10s} {'predicted':>10s} {'error':>8s}   {'exposed meas/pred (ms)':>22s}"
          f"  {'overlap meas/pred':>17s}")
    for r in held.itertuples():
        print(f"{r.config:42s} {r.measured_step_latency_s * 1e3:7.2f} ms {r.predicted_step_latency_s * 1e3:7.2f} ms "
              f"{r.step_err:+8.1%}   {r.measured_exposed_comm_s * 1e3:9.2f} / {r.predicted_exposed_comm_s * 1e3:8.2f}"
              f"  {r.measured_overlap_frac:8.2f} / {r.predicted_overlap_frac:5.2f}")
    s = rep.summary
    print(families_line(s).replace("`", ""))
    for kind, groups in (("strategy", s["per_strategy"]), ("family", s["per_family"])):
        if kind == "family" and len(groups) < 2:
            continue
        for name, v in groups.items():
            print(f"{kind} {name:18s} {v['n']:2d} held out: step |error| median {v['median_abs_step_err']:.1%}, "
                  f"max {v['max_abs_step_err']:.1%}; exposed comm |error| (% of step) median "
                  f"{v['median_abs_exposed_err_of_step']:.1%}, max {v['max_abs_exposed_err_of_step']:.1%}")
    print(f"step latency |error|: median {s['median_abs_step_err']:.1%}, max {s['max_abs_step_err']:.1%}; "
          f"exposed comm |error| (% of step): median {s['median_abs_exposed_err_of_step']:.1%}, "
          f"max {s['max_abs_exposed_err_of_step']:.1%}")
    print(f"strategy ranking equal to measured: {s['rankings_equal']} of {s['rankings_total']} configurations "
          f"({s['rankings_equal_up_to_ties']} counting differences below {s['tie_rel']:.0%} as ties); "
          f"measured run-to-run spread (median) {s['median_rep_spread']:.1%}; "
          f"{s['held_out_in_rep_range']} of {len(held)} predictions inside the measured range over repetitions")
    if out is not None:
        print(f"wrote {out} and {out.with_suffix('.html')}")


def _record_cpu_level(rep, path: Path, traces: list[Path], fit_on: str, reps: str, pooled: bool,
                      collectives: Path | None = None) -> None:
    """The CPU executor level of the accuracy file: held-out step-latency errors, per strategy as families."""
    from dicesim.evidence import make_level, record_level

    held = rep.rows[rep.rows["held_out"]]
    err = held["step_err"].abs()
    per = {str(s): {"held_out": int(len(g)), "median_abs_err": float(g.abs().median()),
                    "max_abs_err": float(g.abs().max())} for s, g in held.groupby("strategy")["step_err"]}
    cmd = " ".join(["dicesim accuracy", *map(str, traces), "--fit-on", shlex.quote(fit_on), "--reps", reps]
                   + (["--pooled"] if pooled else []) + (["--collectives", str(collectives)] if collectives else [])
                   + ["--write-accuracy", str(path)])
    record_level(path, "cpu", make_level({"held_out": int(len(held)), "median_abs_err": float(err.median()),
                                          "max_abs_err": float(err.max())}, per, command=cmd))
    print(f"recorded the cpu level in {path}")


def _paper_check(files: Optional[list[Path]], out: Optional[Path], as_json: bool) -> int:
    """``dicesim accuracy --paper [FILE]``: the DICE paper's figures against the presets' predictions.

    Returns the exit code: 1 when a prediction on the default machine falls outside its figure's
    band (so a script can gate on it), else 0; bad input stays 2 (a ConfigError)."""
    from dicesim.calibrate.published.paper import DEFAULT_FILE, paper_markdown, run_paper_check
    from dicesim.errors import ConfigError
    from dicesim.report.marked import replace_section

    if files and len(files) > 1:
        raise ConfigError("--paper", "takes at most one acceptance file", "traces/acceptance/dice-paper.toml")
    path = files[0] if files else DEFAULT_FILE
    with progress_bar("paper check", unit="predictions") as ticker:
        check = run_paper_check(path, ticker)
    if out is not None:
        cmd = "dicesim accuracy --paper" + (f" {path}" if files else "") + f" --out {out}"
        replace_section("paper", paper_markdown(check, command=cmd), out)
    outside = check.outside()
    if as_json:
        print(json.dumps({"summary": check.summary(), "rows": json.loads(check.rows.to_json(orient="records")),
                          "outside": outside}, allow_nan=False))
        return 1 if outside else 0
    for s in check.summary():
        print(f"{printable(s['figure'], markup=False)}: paper {s['published']}; predicted {s['predicted']} "
              "on the default machine "
              f"({s['inside']} of {s['cases']} cases inside; largest gap {s['largest_gap']:+.1%})")
    if out is not None:
        print(f"wrote its section of {out}")
    print(f"paper check: {len(outside)} of {len(check.summary())} figures outside their band on the default machine"
          + (f" ({', '.join(outside)}): exit 1" if outside else ""))
    return 1 if outside else 0
