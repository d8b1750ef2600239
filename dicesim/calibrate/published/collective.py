"""The collective level: fit the NCCL model on a split of the published set, predict every figure.

Every figure is simulated, fitted, held-out, excluded and statement alike, so the page can show
each one beside its source; only the held-out measurements enter the error statistics
(:mod:`.levels`). Which figure lands where is decided by the rules of :mod:`.rules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from dicesim.calibrate.published.fit import NcclFit, Predictor, fit_nccl_model
from dicesim.calibrate.published.levels import COLLECTIVE_TARGET, LevelSummary, summarize
from dicesim.calibrate.published.rules import Split, split_figures
from dicesim.calibrate.published.schema import DEFAULT_FIT_ON, Figure
from dicesim.progress import NO_PROGRESS, Ticker


@dataclass(frozen=True)
class CollectiveAccuracy:
    """Every figure with its prediction and error; the split, the fit and the held-out summary."""

    split: Split
    fit: NcclFit
    rows: pd.DataFrame
    summary: LevelSummary

    @property
    def model(self):
        return self.fit.model

    @property
    def held_out(self) -> pd.DataFrame:
        return self.rows[self.rows["split"] == "held-out"]


def figure_row(f: Figure, split: Split, predicted_si: float) -> dict:
    """One row of the figures table (display units)."""
    pred = predicted_si / f.scale
    return {"id": f.id, "split": split.split_of(f), "reason": split.excluded.get(f.id, ""), "family": f.family,
            "gpu": f.gpu, "gpus": f.gpus, "nodes": f.nodes, "topology": f.topology, "operation": f.operation,
            "nbytes": f.nbytes, "metric": f.metric, "unit": f.unit, "published": f.value,
            "value_std": f.value_std, "predicted": pred, "error": pred / f.value - 1.0, "evidence": f.evidence,
            "group": f.group, "source_unit": f.source_unit, "source_kind": f.source.kind,
            "source": f.source.title, "url": f.source.url, "opens": f.source.opens, "locator": f.source.locator,
            "date": f.source.date, "quote": f.quote, "requires": "; ".join(f.requires),
            "tokens": f.deepep.tokens if f.deepep else None}


def run_collective_accuracy(figs: Sequence[Figure], fit_on: str = DEFAULT_FIT_ON, *, pred: Predictor | None = None,
                            ticker: Ticker = NO_PROGRESS, predict_all: bool = True) -> CollectiveAccuracy:
    """Split, fit on the fit part, predict (every figure, or only the fitted and held-out ones)."""
    pred = pred or Predictor()
    split = split_figures(figs, fit_on)
    fit = fit_nccl_model(split.fit, fit_on=fit_on, pred=pred)
    todo = [f for f in figs if predict_all or split.split_of(f) in ("fit", "held-out")]
    ticker.expect(len(todo))
    rows = []
    for f in todo:
        rows.append(figure_row(f, split, pred(f, fit.model)))
        ticker.advance()
    df = pd.DataFrame(rows)
    summary = summarize("collective", df[df["split"] == "held-out"], COLLECTIVE_TARGET)
    return CollectiveAccuracy(split=split, fit=fit, rows=df, summary=summary)
