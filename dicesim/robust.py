"""The recommendation that survives what is not measured: bands and sensitivity for the top candidates.

``dicesim recommend`` ranks candidates at the nominal parameters. :func:`trust_ranked` re-runs the
top few (each one simulation, :func:`dicesim.compare.run_strategy`) to give them error bands and a
verdict on their order; with ``sensitivity`` it also varies the unmeasured parameters on their
bottleneck (:func:`dicesim.compare.runs_sensitivity`) and picks the **robust choice**: the
candidate whose worst shortfall against the fastest candidate at any point of the ranges is
smallest (least regret). When that is the nominal winner the recommendation stands and says it is
robust; otherwise the robust candidate is recommended instead, and the output says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicesim.compare import StrategyRun, run_strategy, runs_sensitivity
from dicesim.trust import Sensitivity, Verdict, order_verdict
from dicesim.trust.sensitivity import fastest


@dataclass(frozen=True, kw_only=True)
class RobustChoice:
    """The candidates looked at again, their verdict, and (with sensitivity) the robust pick."""

    runs: tuple[StrategyRun, ...]
    verdict: Verdict
    sensitivity: Sensitivity | None = None
    #: candidate -> its largest relative shortfall against the fastest at any point of the ranges
    regret: dict[str, float] | None = None
    choice: str = ""
    sentence: str = ""


def regrets(sens: Sensitivity) -> tuple[dict[str, float], dict[str, str]]:
    """Per strategy: the largest ``latency / fastest - 1`` over every point of every range, and where."""
    worst: dict[str, float] = {s: 0.0 for s in sens.strategies}
    where: dict[str, str] = {s: "" for s in sens.strategies}
    for r in sens.results:
        for f, lat in r.latency.items():
            best = lat[fastest(lat)[0]]
            for s, v in lat.items():
                gap = v / best - 1 if best > 0 else 0.0
                if gap > worst[s] + 1e-12:
                    worst[s], where[s] = gap, f"{r.knob.label} {r.knob.value(f)}"
    return worst, where


def trust_ranked(rec, *, top: int = 5, sensitivity: bool = False, workers: int = 1) -> RobustChoice | None:
    """Bands and verdict for the ``top`` ranked candidates of ``rec`` (a :class:`dicesim.recommend.Recommendation`);
    with ``sensitivity``, the robust choice among them."""
    ranked = rec.ranked.head(top)
    if ranked.empty:
        return None
    runs = tuple(run_strategy(rec.scenario.with_strategy(rec.strategies[name]), record=False)
                 for name in ranked["strategy"])
    verdict = order_verdict([(r.strategy, float(r.summary["step_latency_s"]), r.result.error_band) for r in runs])
    if not sensitivity or len(runs) < 2:
        return RobustChoice(runs=runs, verdict=verdict)
    sens = runs_sensitivity(runs, workers=workers)
    worst, where = regrets(sens)
    nominal = runs[0].strategy
    choice = min((r.strategy for r in runs), key=lambda s: (worst[s], list(worst).index(s)))
    if not sens.results:
        sentence = f"No unmeasured parameter on the bottleneck to vary: {nominal} stands."
    elif choice == nominal and worst[nominal] == 0:
        sentence = f"{nominal} is the fastest candidate at every point of the sensitivity ranges: robust."
    elif choice == nominal:
        sentence = (f"{nominal} is not always fastest (it falls {worst[nominal]:.1%} behind at {where[nominal]}), "
                    "but no other candidate falls behind less anywhere in the ranges: it stays the recommendation.")
    else:
        sentence = (f"Preferred for robustness: {choice} instead of the nominal fastest {nominal}. Over the "
                    f"sensitivity ranges {nominal} falls up to {worst[nominal]:.1%} behind the fastest candidate (at "
                    f"{where[nominal]}); {choice} at most {worst[choice]:.1%}"
                    + (f" (at {where[choice]})" if where[choice] else "") + ".")
    return RobustChoice(runs=runs, verdict=verdict, sensitivity=sens, regret=worst, choice=choice, sentence=sentence)
