"""Sampled groups: statistically alike expert-parallel groups simulated in part, the rest predicted.

With sampled (multinomial) routing every rank draws its own counts, so no two groups carry the
same rows and none fold (:mod:`dicesim.sim.fold`). Groups that share no link with another group
and have the same link structure are still *alike*: their draws are independent samples of one
distribution, every group runs the same plan on the same structure, so their run times
``T_g`` are independent draws of one distribution. The run ends when its slowest group does:
``total = max_g T_g``.

The engine simulates ``k`` of the ``G`` groups, chosen at random with the scenario's seed (each
exactly, as the full run would); every other group takes the results of one of them (so the
tables have every rank and link) and the total is *predicted* with a stated error:

- model: ``T_g`` independent ``Normal(mu, sigma^2)``. Each ``T_g`` is a sum of thousands of
  per-layer durations that depend on independent draws, so its distribution is close to normal;
  the coverage test (``tests/test_sim_sample.py``) checks the interval against full simulations;
- the slowest of all ``G`` groups is ``M = max(the k simulated, the slowest of the G - k others)``;
  ``(M - mean) / sd`` of the ``k`` simulated totals is a pivot (its law depends on ``k`` and ``G``
  only), whose quantiles are computed by Monte Carlo from standard normals. The interval
  ``mean + sd * [q(a/2), q(1 - a/2)]`` covers ``M`` with probability ``1 - a`` under the model;
  the point estimate is the pivot's median;
- reported: the interval, the spread of the simulated groups (sd, min, max of their totals) and
  which groups were simulated (``meta["sample"]``, and ``step_latency_low_s`` /
  ``step_latency_high_s`` in the totals and the result's ``--json``).

Nothing is sampled unless groups are alike and isolated and the routing was drawn; ``simulate``
samples when there are more than ``SAMPLE_ABOVE`` such groups (``sample_groups=0`` turns it off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri

from dicesim.sim.engine.runspec import EngineSpec, RawRun

#: simulate a sample when more than this many alike groups would otherwise all be simulated
SAMPLE_ABOVE = 16
#: groups simulated by default when sampling
DEFAULT_SAMPLED = 3
#: coverage of the reported interval
CONFIDENCE = 0.95
#: Monte Carlo draws of the pivot
_DRAWS = 20_000
#: relative float round-off between a group simulated alone and in the full run (the exact
#: shortcuts' tolerance); the interval is widened by it so equal groups do not fall outside
#: (the step sampler's too, dicesim.sim.stepsample)
ROUND_OFF = 1e-9


@dataclass(frozen=True)
class GroupSample:
    """Which groups the engine simulates (``chosen``, sorted) and which one each group copies."""

    groups: tuple[tuple[int, ...], ...]
    chosen: tuple[int, ...]
    rep: tuple[int, ...]


def plan_sample(spec: EngineSpec, sigs: list, isolated: list[bool], k: int | None, seed: int) -> GroupSample | None:
    """The groups to simulate, or None where sampling does not apply (see the module docstring).

    ``sigs``: each group's link-structure signature; ``isolated``: whether it shares no link;
    ``k``: groups to simulate (None: :data:`DEFAULT_SAMPLED` when more than :data:`SAMPLE_ABOVE`
    groups are alike; 0: never)."""
    groups = spec.layout.groups()
    n = len(groups)
    if k == 0 or not spec.routing.drawn or spec.record or not all(isolated) or len(set(sigs)) != 1:
        return None
    if k is None:
        if n <= SAMPLE_ABOVE:
            return None
        k = DEFAULT_SAMPLED
    if not 2 <= k < n:
        return None
    chosen = tuple(sorted(np.random.default_rng([seed, 0x5A7]).choice(n, size=k, replace=False).tolist()))
    rep = tuple(g if g in chosen else chosen[i % k] for i, g in enumerate(range(n)))
    return GroupSample(groups=groups, chosen=chosen, rep=rep)


def pivot_quantiles(k: int, n: int, probs: tuple[float, ...], seed: int = 0) -> np.ndarray:
    """Quantiles of ``(max of n - mean of the first k) / sd of the first k`` for ``n`` independent
    standard normals (the first ``k`` observed): the law of the pivot of the module docstring."""
    rng = np.random.default_rng([seed, 0x9F1, k, n])
    z = rng.standard_normal((_DRAWS, k))
    mean, sd = z.mean(axis=1), z.std(axis=1, ddof=1)
    # the slowest of the n - k others, by inverting the CDF of a maximum: Phi^-1(U^(1/(n-k)))
    rest = ndtri(rng.random(_DRAWS) ** (1.0 / (n - k))) if n > k else np.full(_DRAWS, -np.inf)
    return np.quantile((np.maximum(z.max(axis=1), rest) - mean) / sd, probs)


def interval_probs(confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The pivot quantiles an interval of ``confidence`` reads: lower end, median, upper end."""
    a = 1.0 - confidence
    return a / 2, 0.5, 1 - a / 2


def predict_total(totals_k: np.ndarray, n: int, seed: int, quantiles: np.ndarray | None = None) -> dict[str, float]:
    """Point estimate and interval of the slowest of ``n`` alike groups from ``k`` simulated totals
    (``quantiles``: the pivot's at :func:`interval_probs`, computed here when not given)."""
    k = totals_k.shape[0]
    mean, sd = float(totals_k.mean()), float(totals_k.std(ddof=1))
    q_lo, q_mid, q_hi = pivot_quantiles(k, n, interval_probs(), seed) if quantiles is None else quantiles
    top = float(totals_k.max())
    # the slowest group is at least the slowest simulated one
    lo, hi = max(mean + sd * q_lo, top), max(mean + sd * q_hi, top)
    return {"estimate_s": float(max(mean + sd * q_mid, top)), "low_s": float(lo * (1 - ROUND_OFF)),
            "high_s": float(hi * (1 + ROUND_OFF)), "mean_s": mean, "sd_s": sd, "min_s": float(totals_k.min()),
            "max_s": top}


def sample_info(sample: GroupSample, raw: RawRun, seed: int) -> dict[str, Any]:
    """``meta["sample"]``: the simulated groups' totals and the predicted slowest group (seconds)."""
    ends = raw.step_end_WT[:, -1] if raw.step_end_WT.shape[1] else np.zeros(raw.step_end_WT.shape[0])
    totals = np.array([ends[list(sample.groups[g])].max() for g in sample.chosen])
    pred = predict_total(totals, len(sample.groups), seed)
    return {"applied": True, "groups": len(sample.groups), "simulated_groups": list(sample.chosen),
            "confidence": CONFIDENCE, "total_latency_s": pred,
            "model": "group totals independent normal; interval for the slowest of all groups"}


def predicted_totals(totals: dict[str, Any], info: dict[str, Any], steps: int) -> dict[str, Any]:
    """``totals`` of a sampled run with the predicted run time and its interval (seconds)."""
    pred = info["total_latency_s"]
    out = dict(totals, total_latency_s=pred["estimate_s"], step_latency_s=pred["estimate_s"] / max(steps, 1))
    out["step_latency_low_s"] = pred["low_s"] / max(steps, 1)
    out["step_latency_high_s"] = pred["high_s"] / max(steps, 1)
    out["groups_simulated"] = len(info["simulated_groups"])
    return out
