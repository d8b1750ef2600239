"""Render an :class:`~dicesim.calibrate.accuracy.AccuracyReport`: a figure, a Markdown page, an HTML page.

Pure functions from the report to text / figures (:func:`fig_accuracy`, :func:`accuracy_markdown`);
:func:`write_accuracy` is the only writer (both files atomically, the HTML beside the
Markdown with the same stem).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dicesim.atomic import write_text_atomic
from dicesim.calibrate.accuracy import AccuracyReport
from dicesim.calibrate.timeline import COLL_NAMES
from dicesim.report.marked import carry_sections, read_page
from dicesim.report.html import Section, render_report


def fig_accuracy(rows: pd.DataFrame) -> go.Figure:
    """Measured vs predicted step latency and exposed communication (ms), one marker per configuration."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("step latency (ms)", "exposed communication per step (ms)"))
    for col, metric in ((1, "step_latency_s"), (2, "exposed_comm_s")):
        lo = min(rows[f"measured_{metric}"].min(), rows[f"predicted_{metric}"].min()) * 1e3
        hi = max(rows[f"measured_{metric}"].max(), rows[f"predicted_{metric}"].max()) * 1e3
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#999", dash="dash"),
                                 name="predicted = measured", showlegend=col == 1), row=1, col=col)
        for (strategy, held), g in rows.groupby(["strategy", "held_out"]):
            fig.add_trace(go.Scatter(
                x=g[f"measured_{metric}"] * 1e3, y=g[f"predicted_{metric}"] * 1e3, mode="markers",
                name=f"{strategy} ({'held out' if held else 'fitted'})", legendgroup=f"{strategy}{held}",
                showlegend=col == 1, marker=dict(symbol="circle" if held else "circle-open", size=9),
                text=g["config"], hovertemplate="%{text}<br>measured %{x:.2f} ms<br>predicted %{y:.2f} ms"),
                row=1, col=col)
        fig.update_xaxes(title_text="measured (ms)", row=1, col=col)
        fig.update_yaxes(title_text="predicted (ms)", row=1, col=col)
    fig.update_layout(height=520, template="plotly_white", legend=dict(font=dict(size=10)))
    return fig


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False))


def _rows_table(rows: pd.DataFrame) -> str:
    t = pd.DataFrame({
        "configuration": rows["config"], "strategy": rows["strategy"],
        "world size": rows["world_size"], "batch/rank": rows["batch"], "reps": rows["reps"],
        "rep spread": rows["rep_spread"].map(_pct),
        "in rep range": rows["in_rep_range"].map({True: "yes", False: "no"}),
        "measured step (ms)": (rows["measured_step_latency_s"] * 1e3).map("{:.2f}".format),
        "predicted step (ms)": (rows["predicted_step_latency_s"] * 1e3).map("{:.2f}".format),
        "step error": rows["step_err"].map(lambda v: f"{v * 100:+.1f}%"),
        "measured exposed (ms)": (rows["measured_exposed_comm_s"] * 1e3).map("{:.2f}".format),
        "predicted exposed (ms)": (rows["predicted_exposed_comm_s"] * 1e3).map("{:.2f}".format),
        "exposed error (% of step)": rows["exposed_err_of_step"].map(lambda v: f"{v * 100:+.1f}%"),
        "measured overlap": rows["measured_overlap_frac"].map("{:.2f}".format),
        "predicted overlap": rows["predicted_overlap_frac"].map("{:.2f}".format),
    })
    return _table(t)


def _errors_table(groups: dict[str, dict], by: str) -> pd.DataFrame:
    """Held-out errors per strategy (with its family) or per family: step latency and exposed communication."""
    return pd.DataFrame([{by: k, **({"family": v["family"]} if "family" in v else {}), "held-out configs": v["n"],
                          "median abs step error": _pct(v["median_abs_step_err"]),
                          "max abs step error": _pct(v["max_abs_step_err"]),
                          "median abs exposed-comm error (% of step)": _pct(v["median_abs_exposed_err_of_step"]),
                          "max abs exposed-comm error (% of step)": _pct(v["max_abs_exposed_err_of_step"])}
                         for k, v in groups.items()])


def families_line(summary: dict) -> str:
    """Which strategy families the profiles were fitted on and which were predicted (one sentence)."""
    fit, held = summary["fit_families"], summary["held_out_families"]
    never = [f for f in held if f not in fit]
    text = (f"Strategy families fitted on: {', '.join(f'`{f}`' for f in fit)}; "
            f"held out: {', '.join(f'`{f}`' for f in held)}.")
    if never:
        text += (f" Nothing of the {', '.join(f'`{f}`' for f in never)} "
                 f"famil{'ies' if len(never) > 1 else 'y'} was fitted: every run of it is predicted "
                 "from the other families' profiles.")
    return text


def accuracy_markdown(rep: AccuracyReport, *, command: str, html_name: str) -> str:
    """The Markdown page: how it was measured, the headline numbers, every held-out configuration."""
    s = rep.summary
    held = rep.rows[rep.rows["held_out"]]
    per = _errors_table(s["per_strategy"], "strategy")
    fam = _errors_table(s["per_family"], "family")
    fam_md = f"\n### Per strategy family\n\n{_table(fam)}\n" if len(fam) > 1 else ""
    rk = rep.rankings.assign(equal=rep.rankings["equal"].map({True: "yes", False: "no"}),
                             equal_up_to_ties=rep.rankings["equal_up_to_ties"].map({True: "yes", False: "no"}),
                             kendall_tau=rep.rankings["kendall_tau"].map("{:.2f}".format))
    cals = "\n".join(f"- world size {w}: `{c.profile.name}` (interference {c.profile.interference:.3f}, "
                     f"comm_interference {c.profile.comm_interference:.3f}), fitted range `{c.profile.fitted_range}`"
                     + (f"; {c.collectives.all_gather.describe()}; {c.collectives.p2p_pass.describe()} (fitted on "
                        f"`{c.collectives.source}`, not on these runs)" if c.collectives is not None else "")
                     for w, c in rep.calibrations.items())
    warn = "\n".join(f"- {w}" for w in rep.warnings) or "- none"
    return f"""# Simulator accuracy against measured executor runs

Generated by `{command}` on {_dt.datetime.now(_dt.UTC).date().isoformat()}.
Interactive figure: [{html_name}]({html_name}).

**Method.** The runs selected by `--fit-on {rep.fit_on}` calibrate the simulator (one profile per
world size: per-op compute times as functions of FLOPs and bytes, all-to-all latency and
bandwidth from the synchronous layers' collectives, count-exchange latency, compute slowed by
communication (`interference`), and communication slowed by compute (`comm_interference`,
fitted on the step latency of the configurations with asynchronous layers); see
`dicesim/calibrate/`). Every configuration is then
rebuilt as a scenario from its trace metadata (model, batch, world size, steps, strategy),
on a CPU topology made from the fitted link parameters, with the *measured* routing (the
router histogram of each rank, step and layer), and simulated. Repetitions of a
configuration are one measurement: the repetition with the {rep.summary['reps_policy']} step latency
represents it, in the fit and in the comparison. Step latency is the mean over steps 1..T-1
of the slowest rank's step-to-step time; exposed communication is the time the compute track
waits for communication, including the host work around the blocking count exchange (the
simulator counts that as part of the exchange); overlap is the share of communication time
during which a compute op runs (measured over the collectives {", ".join(f"`{n}`" for n in COLL_NAMES)} only,
`dicesim/calibrate/timeline.py`: a run with none of them measures 0). {families_line(s)}

## Summary (held-out configurations)

| number | value |
|---|---|
| held-out / fitted configurations | {s['held_out_configs']} / {s['fit_configs']} |
| median abs step-latency error | {_pct(s['median_abs_step_err'])} |
| max abs step-latency error | {_pct(s['max_abs_step_err'])} |
| median abs exposed-comm error (% of step time) | {_pct(s['median_abs_exposed_err_of_step'])} |
| max abs exposed-comm error (% of step time) | {_pct(s['max_abs_exposed_err_of_step'])} |
| median abs overlap-fraction error | {s['median_abs_overlap_err']:.2f} |
| strategy ranking equal to measured (strict) | {s['rankings_equal']} of {s['rankings_total']} |
| ... counting measured differences below {_pct(s['tie_rel'])} as ties | {s['rankings_equal_up_to_ties']} of {s['rankings_total']} |
| median abs step-latency error on the fitted configurations | {_pct(s['fit_median_abs_step_err'])} |
| median run-to-run spread of measured step latency (max-min over reps, / median) | {_pct(s['median_rep_spread'])} |
| held-out predictions inside the measured min..max over reps | {s['held_out_in_rep_range']} of {s['held_out_configs']} |

The last two lines are the floor: a prediction cannot be checked more finely than the
measurement repeats. What limits the accuracy on a CPU box shared by all ranks (and what
the simulator does not model) is described in [calibration.md](calibration.md#known-limits).

### Per strategy

{_table(per) if len(per) else '(no held-out configuration)'}
{fam_md}
### Strategy rankings per held-out configuration (fastest first)

{_table(rk) if len(rk) else '(fewer than two strategies per configuration)'}

### Calibrations used

{cals}

Held-out configurations outside the fitted range:

{warn}

## Every held-out configuration

{_rows_table(held) if len(held) else '(none)'}

## Fitted configurations (in-sample)

{_rows_table(rep.rows[~rep.rows['held_out']])}
"""


def write_accuracy(rep: AccuracyReport, out_md: str | Path, *, command: str) -> tuple[Path, Path]:
    """Write ``out_md`` and the figure page ``<stem>.html`` beside it (both atomically)."""
    md = Path(out_md)
    html = md.with_suffix(".html")
    # the published-GPU and paper sections are written by `dicesim accuracy --published/--paper`; keep them
    kept = carry_sections(read_page(md))
    page = render_report([
        Section(title="Measured vs predicted", items=[fig_accuracy(rep.rows),
                "Filled markers: held-out configurations; open markers: configurations the profile was fitted on."]),
        Section(title="Held-out configurations", items=[rep.rows[rep.rows["held_out"]].drop(columns=["held_out"])]),
    ], title=f"dicesim accuracy (fit on {rep.fit_on})", plotlyjs="cdn")
    write_text_atomic(page, html)
    text = accuracy_markdown(rep, command=command, html_name=html.name)
    write_text_atomic(text + ("\n" + kept if kept else ""), md)
    return md, html
