"""The two levels of published accuracy and their targets (issue 21).

- **collective level**: single collectives (nccl-tests, DeepEP) on the machine that measured
  them, with the NCCL model fitted on part of the set (:mod:`.collective`);
- **step level**: published end-to-end or per-step latencies of multi-GPU DiT inference,
  predicted by the whole simulator and never fitted on (:mod:`.step_level`).

Each level reports, over its held-out measurements (statements excluded), the median and the
largest absolute relative error, per interconnect family and overall, against its target. A
target counts as met only when both bounds hold *and* there are enough held-out measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Target:
    """Held-out |error| bounds and the least number of held-out measurements they need."""

    median_abs: float
    max_abs: float
    min_figures: int

    def text(self) -> str:
        return (f"median <= {self.median_abs:.0%}, max <= {self.max_abs:.0%} "
                f"on >= {self.min_figures} held-out measurements")


#: issue 21 item 3: the rebuilt collective set
COLLECTIVE_TARGET = Target(median_abs=0.10, max_abs=0.25, min_figures=24)
#: issue 21 items 1-2: at least 12 published step latencies in at least two interconnect families
STEP_TARGET = Target(median_abs=0.15, max_abs=0.35, min_figures=12)


@dataclass(frozen=True)
class LevelSummary:
    """Held-out errors of one level against its target.

    ``rows`` needs the columns ``family``, ``error`` (predicted / published - 1), ``group`` (the
    run) and ``source_unit`` (the independence unit); one row per held-out measurement.
    """

    level: str
    target: Target
    figures: int
    runs: int
    sources: int
    median_abs: float
    max_abs: float
    per_family: dict[str, dict[str, float]]

    @property
    def enough(self) -> bool:
        return self.figures >= self.target.min_figures

    @property
    def met(self) -> bool:
        return self.enough and self.median_abs <= self.target.median_abs and self.max_abs <= self.target.max_abs

    def misses(self) -> list[str]:
        """What keeps the target from being met (empty when it is)."""
        out = []
        if self.median_abs > self.target.median_abs:
            out.append(f"median {self.median_abs:.1%} > {self.target.median_abs:.0%}")
        if self.max_abs > self.target.max_abs:
            out.append(f"max {self.max_abs:.1%} > {self.target.max_abs:.0%}")
        if not self.enough:
            out.append(f"{self.figures} held-out measurements < {self.target.min_figures}")
        return out

    def verdict(self) -> str:
        return "met" if self.met else "not met (" + "; ".join(self.misses()) + ")"

    def line(self) -> str:
        """One line: the level, its numbers, its target and whether it is met."""
        return (f"{self.level} level: {self.figures} held-out measurements ({self.runs} runs, {self.sources} "
                f"sources): median |error| {self.median_abs:.1%}, max {self.max_abs:.1%}; target "
                f"{self.target.text()}: {self.verdict()}")


def summarize(level: str, held_out: pd.DataFrame, target: Target) -> LevelSummary:
    """The summary of one level from its held-out rows (see :class:`LevelSummary`)."""
    err = held_out["error"].abs()
    fam = {f: {"figures": int(len(g)), "median_abs": float(g["error"].abs().median()),
               "max_abs": float(g["error"].abs().max())} for f, g in held_out.groupby("family")}
    return LevelSummary(level=level, target=target, figures=int(len(held_out)),
                        runs=int(held_out["group"].nunique()), sources=int(held_out["source_unit"].nunique()),
                        median_abs=float(err.median()) if len(err) else float("nan"),
                        max_abs=float(err.max()) if len(err) else float("nan"), per_family=fam)
