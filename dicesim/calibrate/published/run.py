"""``dicesim accuracy --published`` as data: both levels, the cross-validation, from the set's files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dicesim.calibrate.published.collective import CollectiveAccuracy, run_collective_accuracy
from dicesim.calibrate.published.crossval import SPLITS, cross_validate
from dicesim.calibrate.published.fit import Predictor
from dicesim.calibrate.published.levels import STEP_TARGET, LevelSummary, summarize
from dicesim.calibrate.published.schema import DEFAULT_FIT_ON, Figure
from dicesim.calibrate.published.step_level import step_level_rows
from dicesim.progress import NO_PROGRESS, Ticker


@dataclass(frozen=True)
class PublishedReport:
    """The collective level, its cross-validation (None when skipped) and the step level (None: not yet)."""

    collective: CollectiveAccuracy
    crossval: pd.DataFrame | None
    step_rows: pd.DataFrame | None
    step: LevelSummary | None


def run_published(figs: Sequence[Figure], fit_on: str = DEFAULT_FIT_ON, *, cross_validation: bool = True,
                  step_paths: list[Path] | None = None, ticker: Ticker = NO_PROGRESS) -> PublishedReport:
    """Fit and predict the collective level on ``fit_on``; cross-validate over :data:`SPLITS`; read the step level."""
    pred = Predictor()
    coll = run_collective_accuracy(figs, fit_on, pred=pred, ticker=ticker)
    cv = None
    if cross_validation:
        others = [s for s in SPLITS if s[1] != fit_on]
        cv = pd.concat([pd.DataFrame([_own_row(coll)]), cross_validate(figs, others, pred=pred)], ignore_index=True)
    rows = step_level_rows(step_paths)
    step = None if rows is None else summarize("step", rows[rows["split"] == "held-out"], STEP_TARGET)
    return PublishedReport(collective=coll, crossval=cv, step_rows=rows, step=step)


def _own_row(c: CollectiveAccuracy) -> dict:
    s = c.summary
    name = next((n for n, f, _ in SPLITS if f == c.split.fit_on), "this run")
    return {"split": name, "fit_on": c.split.fit_on, "tests": "the split reported above", "fitted": len(c.split.fit),
            "held_out": s.figures, "excluded": len(c.split.excluded), "median_abs": s.median_abs,
            "max_abs": s.max_abs, "met": s.met,
            "one_source_params": ", ".join(p.name for p in c.fit.params if len(p.sources) < 2)}
