"""The acceptance check: the DICE paper's own figures against the simulator's predictions.

``traces/acceptance/dice-paper.toml`` holds the paper's headline figures (DICE's speedup over
synchronous expert parallelism, the all-to-all share of a synchronous step) with their quotes
and sources. Nothing is fitted here and nothing from that file feeds any fit: the presets
(profiles from vendor tables, links from datasheets, the NCCL model fitted on
``traces/published``) predict each figure on the paper's setting as far as it is known, and
the gap is reported as it is. ``dicesim accuracy --paper`` runs it and writes its section of
docs/accuracy.md.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.limits import MAX_ACCEPTANCE_WORK, MAX_BATCH, MAX_STEPS, MAX_WORLD_SIZE, PHYSICAL
from dicesim.progress import NO_PROGRESS, Ticker
from dicesim.report.marked import markers
from dicesim.tomlio import read_toml

DEFAULT_FILE = Path("traces/acceptance/dice-paper.toml")
BEGIN, END = markers("paper", "dicesim accuracy --paper")


class PaperSetting(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topology: str
    other_topologies: tuple[str, ...] = ()
    world_size: int = Field(ge=1, le=MAX_WORLD_SIZE)
    image_size: int = Field(ge=8, le=4096)
    steps: int = Field(ge=1, le=MAX_STEPS)
    batches: tuple[Annotated[int, Field(ge=1, le=MAX_BATCH)], ...] = Field(min_length=1)
    profile: Optional[str] = None  # None: the topology's GPU's built-in profile


class PaperFigure(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str
    quantity: str
    metric: Literal["speedup", "sync_comm_share"]
    strategy: str
    models: tuple[str, ...] = Field(min_length=1)
    # both metrics are non-negative ratios; a gap is relative to the band edge it passes, so an
    # edge a prediction can pass (value, high) must be positive
    value: Optional[float] = Field(None, gt=0, le=PHYSICAL["ratio"].high)
    low: Optional[float] = Field(None, ge=0, le=PHYSICAL["ratio"].high)
    high: Optional[float] = Field(None, gt=0, le=PHYSICAL["ratio"].high)
    unit: str
    quote: str
    source: str
    url: str
    date: str

    def band(self) -> tuple[float, float]:
        """The published figure as a closed interval (a single value is a point)."""
        if self.value is not None:
            return self.value, self.value
        if self.low is None or self.high is None or self.low > self.high:
            raise ValueError("needs `value`, or `low` <= `high`")
        return self.low, self.high


class PaperSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_: Literal["dicesim-acceptance/1"] = Field(alias="schema")
    setting: PaperSetting
    figure: tuple[PaperFigure, ...] = Field(min_length=1)


def load_paper_set(path: str | Path = DEFAULT_FILE) -> PaperSet:
    """Read and validate the acceptance file (one-line error naming the field otherwise)."""
    p = Path(path)
    doc = read_toml(p, what="acceptance")
    try:
        ps = PaperSet(**doc)
        for f in ps.figure:
            f.band()
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, p.name, model=PaperSet) from None
    except ValueError as exc:
        raise ConfigError(f"{p.name}: figure", str(exc)) from None
    _check_work(ps, p.name)
    return ps


def _check_work(ps: PaperSet, name: str) -> None:
    """What `check` accepts must run within the limits: the simulations the check would run,
    counted as GPUs x layers x steps, at most ``MAX_ACCEPTANCE_WORK`` (before any is built)."""
    from dicesim.models import get_model

    st = ps.setting
    runs: set[tuple[str, str, int, str]] = set()
    for fig in ps.figure:
        for model in fig.models:
            try:
                get_model(model)
            except ConfigError as exc:
                raise ConfigError(f"{name}: figure {fig.id}: models", exc.one_line()) from None
            runs.update((model, t, b, s) for t in (st.topology, *st.other_topologies) for b in st.batches
                        for s in ("sync", fig.strategy))
    work = sum(st.world_size * get_model(m).depth * st.steps for m, _, _, _ in runs)
    if work > MAX_ACCEPTANCE_WORK:
        raise ConfigError(f"{name}: setting", f"{len(runs)} simulations of {st.world_size} GPUs x {st.steps} steps "
                          f"are {work:,} GPU-layer-steps, more than the {MAX_ACCEPTANCE_WORK:,} one check may run; "
                          "use fewer steps, batches, topologies or models", "see docs/limits.md")


def _metric(metric: str, sync: dict, run: dict) -> float:
    if metric == "speedup":
        return sync["step_latency_s"] / run["step_latency_s"]
    return sync["exposed_comm_step_s"] / sync["step_latency_s"]  # sync_comm_share: every all-to-all blocks


def predict_rows(ps: PaperSet, ticker: Ticker = NO_PROGRESS) -> pd.DataFrame:
    """One row per (figure, model, topology, batch): the prediction and whether it meets the figure."""
    from dicesim.compare import headline_metrics
    from dicesim.scenario import make_scenario
    from dicesim.sim.api import simulate

    st = ps.setting
    memo: dict[tuple, dict] = {}

    def run(model: str, topology: str, batch: int, strategy: str) -> dict:
        key = (model, topology, batch, strategy)
        if key not in memo:
            sc = make_scenario(model=model, topology=topology, world_size=st.world_size, batch=batch,
                               image_size=st.image_size, steps=st.steps, strategy=strategy,
                               **({"profile": st.profile} if st.profile else {}))
            res = simulate(sc)
            memo[key] = headline_metrics(res.summary(), res.per_step)
        return memo[key]

    rows = []
    topologies = (st.topology, *st.other_topologies)
    ticker.expect(sum(len(fig.models) for fig in ps.figure) * len(topologies) * len(st.batches))
    for fig in ps.figure:
        lo, hi = fig.band()
        for topology in topologies:
            for model in fig.models:
                for batch in st.batches:
                    sync = run(model, topology, batch, "sync")
                    pred = _metric(fig.metric, sync, run(model, topology, batch, fig.strategy))
                    gap = 0.0 if lo <= pred <= hi else (pred - hi) / hi if pred > hi else (pred - lo) / lo
                    rows.append(dict(figure=fig.id, model=model, topology=topology, batch=batch, predicted=pred,
                                     published_low=lo, published_high=hi, gap=gap, default=topology == st.topology))
                    ticker.advance()
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PaperCheck:
    paper: PaperSet
    rows: pd.DataFrame

    def summary(self) -> list[dict]:
        """Per figure, on the default topology: the predicted range and the smallest and largest gap."""
        out = []
        for fig in self.paper.figure:
            d = self.rows[(self.rows["figure"] == fig.id) & self.rows["default"]]
            lo, hi = fig.band()
            out.append(dict(figure=fig.id, published=_show_band(lo, hi, fig.unit),
                            predicted=_show_band(d["predicted"].min(), d["predicted"].max(), fig.unit),
                            inside=int((d["gap"] == 0).sum()), cases=len(d),
                            largest_gap=float(d["gap"].loc[d["gap"].abs().idxmax()])))
        return out

    def outside(self) -> list[str]:
        """Ids of the figures with a prediction outside their band on the default topology."""
        return [s["figure"] for s in self.summary() if s["inside"] < s["cases"]]


def run_paper_check(path: str | Path = DEFAULT_FILE, ticker: Ticker = NO_PROGRESS) -> PaperCheck:
    ps = load_paper_set(path)
    return PaperCheck(paper=ps, rows=predict_rows(ps, ticker))


def _show_band(lo: float, hi: float, unit: str) -> str:
    fmt = (lambda v: f"{v:.1%}") if unit == "fraction" else (lambda v: f"{v:.2f}{unit}")
    return fmt(lo) if lo == hi else f"{fmt(lo)} - {fmt(hi)}"


def _table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False))


def paper_markdown(check: PaperCheck, *, command: str) -> str:
    """The acceptance section of docs/accuracy.md, markers included."""
    st = check.paper.setting
    figs = {f.id: f for f in check.paper.figure}
    summary = pd.DataFrame(check.summary()).rename(columns={
        "published": "paper", "predicted": f"predicted on {st.topology}", "inside": "cases inside",
        "largest_gap": "largest gap"})
    summary["largest gap"] = summary["largest gap"].map(lambda g: f"{g:+.1%}" if g else "0")
    wide = check.rows.copy()
    wide["predicted"] = [_show_band(v, v, figs[f].unit) for v, f in zip(wide["predicted"], wide["figure"])]
    wide = wide.pivot_table(index=["figure", "model", "topology"], columns="batch", values="predicted",
                            aggfunc="first").reset_index()
    wide.columns = [c if isinstance(c, str) else f"batch {c}" for c in wide.columns]
    sources = "\n".join(f"- `{f.id}`: {f.quantity}. \"{f.quote}\" ({f.source}, {f.date}; <{f.url}>)"
                        for f in check.paper.figure)
    return f"""{BEGIN}
## Acceptance check: the DICE paper's own figures

Generated by `{command}` on {_dt.date.today().isoformat()}.

These figures are the acceptance check of the whole model: nothing is fitted on them and
they are no calibration input (`dicesim/calibrate/published/paper.py`). The built-in presets
predict them on {st.world_size} GPUs, {st.image_size} px, {st.steps} steps, batch
{", ".join(map(str, st.batches))} per GPU. The paper's hardware is not stated in the sources
read here, so `{st.topology}` (the project default) is the check and the other 8-GPU presets
are shown beside it. A gap is the distance of the prediction from the published value or
band, relative to it (0 inside the band). The command exits with code 1 when a prediction on
the default machine falls outside its figure's band (2 for bad input), so a script can gate on it.

{_table(summary)}

Every prediction:

{_table(wide)}

Sources:

{sources}
{END}
"""
