"""The published sections of docs/accuracy.md and docs/nccl.md: pure text from a PublishedReport.

Each section sits between two HTML comment markers (:mod:`dicesim.report.marked`), so
``dicesim accuracy --published`` replaces only its own sections and the other writers of a page
(the CPU accuracy, ``--paper``) keep theirs.
"""

from __future__ import annotations

import datetime as _dt
import math
import shlex
from pathlib import Path

import pandas as pd

from dicesim.calibrate.published.fit import get_param
from dicesim.calibrate.published.levels import COLLECTIVE_TARGET, STEP_TARGET, LevelSummary
from dicesim.calibrate.published.run import PublishedReport
from dicesim.calibrate.published.step_doc import step_level_markdown
from dicesim.calibrate.published.schema import STEP_SCHEMA
from dicesim.calibrate.published.step_level import NOT_YET
from dicesim.report.marked import carry_sections, markers, replace_section

BEGIN, END = markers("published", "dicesim accuracy --published")
NCCL_BEGIN, NCCL_END = markers("nccl-fit", "dicesim accuracy --published --nccl-page")


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False))


def _size(op: str, nbytes: int, tokens: float | None) -> str:
    if op.startswith("deepep"):
        return f"{int(tokens)} tokens x 7168" if tokens and not math.isnan(tokens) else "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"


def _source(r) -> str:
    where = f"{r.locator}; {r.date}"
    return f"[{r.source}]({r.url}) ({where})" if r.opens else f"{r.source} ({where}; **no URL**: {r.url})"


def param_value(name: str, value: float) -> str:
    if name.startswith("kernel_Bps."):
        return f"{value / 1e9:.1f} GB/s" if math.isfinite(value) else "no bound"
    return f"{value:.4f}" if name.startswith("bw_eff.") else f"{value * 1e6:.2f} us"


def param_spread(name: str, value: float, se: float | None) -> str:
    if se is None:
        return "not determined (no more figures than parameters)"
    if name.startswith("bw_eff."):
        return f"+/- {se:.3f} ({se / value:.0%})"
    if name.startswith("kernel_Bps."):
        return f"+/- {se / 1e9:.1f} GB/s ({se / value:.0%})"
    return f"+/- {se * 1e6:.2f} us"


def by_source(p) -> str:
    """The value each independence unit gives alone, e.g. ``deepep-493 0.39, deepep-readme 0.89``."""
    return ", ".join(f"{u} {param_value(p.name, v)}" for u, v in p.by_source)


def params_table(rep: PublishedReport) -> str:
    """Every fitted parameter: value, per-source values, standard error, what it rests on; then the priors."""
    fit = rep.collective.fit
    rows = [(p.name, param_value(p.name, p.value), by_source(p), param_spread(p.name, p.value, p.se),
             ", ".join(f"`{f}`" for f in p.figures), str(len(p.sources)))
            for p in fit.params]
    fitted = {p.name for p in fit.params}
    m = fit.model
    for name, how in m.fitted.items():
        if name not in fitted:
            v = get_param(m, name)
            rows.append((name, param_value(name, v), "-", "-", how, "0"))
    return _table(pd.DataFrame(rows, columns=["parameter", "value", "each source alone", "pooled standard error",
                                              "rests on", "independent sources"]))


def residuals_table(rep: PublishedReport) -> str:
    rows = rep.collective.rows.set_index("id")
    out = [(f"`{fid}`", rows.loc[fid, "source_unit"], _pct(err)) for fid, err in rep.collective.fit.residuals.items()]
    return _table(pd.DataFrame(out, columns=["fitted figure", "independence unit", "residual"]))


def _levels_table(rep: PublishedReport) -> str:
    c = rep.collective.summary
    rows = [("collective (nccl-tests, DeepEP)", f"{c.figures} ({c.runs} runs, {c.sources} sources)",
             f"{c.median_abs:.1%}", f"{c.max_abs:.1%}", COLLECTIVE_TARGET.text(),
             "yes" if c.met else "**no**: " + "; ".join(c.misses()), "NCCL model fitted on the fit part")]
    s = rep.step
    if s is None:
        rows.append(("step (published multi-GPU DiT latencies)", "no step-level figures given", "-", "-", STEP_TARGET.text(),
                     "-", "never fitted"))
    else:
        rows.append(("step (published multi-GPU DiT latencies)", f"{s.figures} ({s.runs} runs, {s.sources} sources)",
                     f"{s.median_abs:.1%}", f"{s.max_abs:.1%}", STEP_TARGET.text(),
                     "yes" if s.met else "**no**: " + "; ".join(s.misses()), "never fitted"))
    return _table(pd.DataFrame(rows, columns=["level", "held-out measurements", "median abs error",
                                              "max abs error", "target", "met", "fitted on"]))


def _family_table(s: LevelSummary) -> str:
    return _table(pd.DataFrame([{"family": f, "held-out measurements": v["figures"],
                                 "median abs error": f"{v['median_abs']:.1%}", "max abs error": f"{v['max_abs']:.1%}"}
                                for f, v in s.per_family.items()]))


def _crossval_table(cv: pd.DataFrame | None) -> str:
    if cv is None:
        return "Not run (`--no-cross-validation`)."
    t = pd.DataFrame({"split": cv["split"], "what it tests": cv["tests"], "fitted": cv["fitted"],
                      "held out": cv["held_out"], "excluded": cv["excluded"],
                      "median abs error": cv["median_abs"].map(lambda v: f"{v:.1%}"),
                      "max abs error": cv["max_abs"].map(lambda v: f"{v:.1%}"),
                      "met": cv["met"].map(lambda m: "yes" if m else "no"),
                      "parameters on one source": cv["one_source_params"].replace("", "-")})
    exprs = "\n".join(f"- `{r.split}`: `--fit-on '{r.fit_on}'`" for r in cv.itertuples())
    return _table(t) + "\n\n" + exprs


def _figures_table(rows: pd.DataFrame) -> str:
    t = pd.DataFrame({
        "figure": rows["id"],
        "split": [s if not why else f"{s}: {why}" for s, why in zip(rows["split"], rows["reason"])],
        "family": rows["family"],
        "hardware": rows["gpus"].astype(str) + " x " + rows["gpu"] + " (`" + rows["topology"] + "`)",
        "operation": rows["operation"],
        "size": [_size(o, n, k) for o, n, k in zip(rows["operation"], rows["nbytes"], rows["tokens"])],
        "metric": rows["metric"],
        "published": [f"{v:g} {u}" + (f" +/- {s:g}" if s == s and s is not None else "")
                      for v, u, s in zip(rows["published"], rows["unit"], rows["value_std"])],
        "predicted": [f"{v:.4g} {u}" for v, u in zip(rows["predicted"], rows["unit"])],
        "error": rows["error"].map(_pct),
        "what the prediction lacks": rows["requires"].replace("", "-"),
        "source": [_source(r) for r in rows.itertuples()],
    })
    return _table(t)


def step_section(rep: PublishedReport) -> str:
    """The step-level subsection: its rows against its target, or that the places given held none."""
    if rep.step is None or rep.step_rows is None:
        return (f"**{NOT_YET}.** The step-level set (`traces/published/steps/`: published end-to-end and per-step "
                f"latencies of multi-GPU DiT inference on PCIe and NVLink machines, schema `{STEP_SCHEMA}`) is read "
                f"from the places given to `dicesim accuracy --published`; these held none. Target: "
                f"{STEP_TARGET.text()}, never fitted on.")
    return step_level_markdown(rep.step_rows)


def published_markdown(rep: PublishedReport, *, command: str) -> str:
    """The whole docs/accuracy.md section, markers included."""
    c = rep.collective
    s = c.summary
    held = c.held_out
    worst = held.loc[held["error"].abs().sort_values(ascending=False).index[:3]]
    misses = "; ".join(f"`{r.id}` {_pct(r.error)}" for r in worst.itertuples())
    rows = c.rows
    n_state = int((rows["split"] == "statement").sum())
    no_url = sorted(rows.loc[~rows["opens"], "id"])
    statements = rows[rows["split"] == "statement"]
    stated = "\n".join(f"- `{r.id}`: \"{r.quote}\" ({_source(r)}); simulated {r.predicted:.4g} {r.unit} "
                       f"({_pct(r.error)})" for r in statements.itertuples())
    return f"""{BEGIN}
## Accuracy against published GPU measurements

Generated by `{command}` on {_dt.date.today().isoformat()}.

Two levels, each against its own target. Statements (a maintainer's rule of thumb, a "should
achieve") are labelled and never counted; only held-out *measurements* enter the statistics.

{_levels_table(rep)}

### Collective level

**Method.** The set `traces/published/*.toml` (schema `dicesim-published/2`,
`dicesim/calibrate/published/schema.py`) holds {len(rows)} published figures: nccl-tests bus
bandwidths and small-message times, NCCL all-to-all times (pplx-kernels), DeepEP normal and
low-latency kernels; each with the machine it was measured on, the operation and size, the quoted
text, its source and date, and the run (`group`) and table position it comes from. The NCCL model
(`dicesim/sim/network/nccl.py`, [nccl.md](nccl.md)) is fitted by least squares on the figures
selected by `--fit-on {shlex.quote(c.split.fit_on)}` ({len(c.split.fit)} figures); the rules of
`dicesim/calibrate/published/rules.py` then hold out every other measurement except those from a
fitted run or from the neighbouring row or column of a fitted run in a published table
({len(c.split.excluded)} excluded) and the {n_state} statements. Every figure is predicted by
simulating its operation on its machine's graph (line-rate links from datasheets,
`dicesim/topology/hardware.py` and `machines.py`) through the simpy flow network
(`dicesim/sim/microbench/`): real simulator runs, not a formula. Error = predicted / published - 1.

| number | value |
|---|---|
| held-out measurements / runs / independent sources | {s.figures} / {s.runs} / {s.sources} |
| fitted figures (parameters fitted, degrees of freedom) | {len(c.split.fit)} ({len(c.fit.params)}, {c.fit.dof}) |
| median abs error (held out) | {s.median_abs:.1%} |
| max abs error (held out) | {s.max_abs:.1%} |
| target ({COLLECTIVE_TARGET.text()}) | {"met" if s.met else "**not met**: " + "; ".join(s.misses())} |
| median abs residual of the fitted figures | {c.rows[c.rows["split"] == "fit"]["error"].abs().median():.1%} |
| largest held-out misses | {misses} |
| figures without a URL a reader can open | {", ".join(f"`{i}`" for i in no_url) or "none"} |

{_family_table(s)}

**Fitted parameters.** Value; its spread as the value each independent source gives on its own
(the parameter refitted on that source's figures, the rest at the solution); the pooled standard
error of the least-squares fit (it spreads every misfit over all parameters); the fitted figures
that rest on it (a 10% lower efficiency or 1 us more latency moves them by 1% or more):

{params_table(rep)}

**Residuals of the fitted figures:**

{residuals_table(rep)}

**Cross-validation: how the headline moves with the split.** Each row refits the model on another
`--fit-on` selection; the same rules decide what is held out.

{_crossval_table(rep.crossval)}

**Statements** (reported, never in the statistics):

{stated or "none"}

**Every figure:**

{_figures_table(rows)}

### Step level

{step_section(rep)}
{END}
"""


def nccl_markdown(rep: PublishedReport, *, command: str) -> str:
    """The generated section of docs/nccl.md: the fitted model, markers included."""
    fit = rep.collective.fit
    return f"""{NCCL_BEGIN}
## The fitted model

Generated by `{command}` on {_dt.date.today().isoformat()}: least squares on the {len(rep.collective.split.fit)}
figures selected by `--fit-on {shlex.quote(rep.collective.split.fit_on)}` ({len(fit.params)} parameters, {fit.dof}
degrees of freedom). A standard error is `s^2 (J^T J)^-1` at the solution with `s^2` the
residual variance; the independent sources are the `group` prefixes of the figures that rest on it.

{params_table(rep)}

{residuals_table(rep)}
{NCCL_END}
"""


def carry_section(old_text: str) -> str:
    """The marked sections of an existing page (markers included), or ''."""
    return carry_sections(old_text)


def write_published_section(section: str, md_path: str | Path) -> Path:
    """Replace the published section of ``md_path`` (or append it), atomically; returns the path."""
    return replace_section("published", section, md_path)


def write_nccl_section(section: str, md_path: str | Path) -> Path:
    """Replace the fitted-model section of ``md_path`` (docs/nccl.md), atomically; returns the path."""
    return replace_section("nccl-fit", section, md_path)
