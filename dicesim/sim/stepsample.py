"""Sampled steps: a run with drawn routing simulated for a random sample of its steady steps.

With expected routing every steady step carries the same rows, so window reuse
(:mod:`dicesim.sim.engine.reuse`) simulates few windows. With drawn (multinomial) routing every
step's counts are a new independent draw, so no window repeats and the engine walks every
instruction of every step. This module simulates a *shortened* run instead and predicts the rest,
with its error stated:

- the plan's steps: after ``head`` warm-up steps (at least the first, which starts from idle
  streams and links) and before ``tail`` closing ones (the drain),
  a plan's steady steps repeat with a period ``p`` (action by action, step offsets of the tokens
  they carry included; for DICE the skip-cache gates and alternating copies give ``p = 4``).
  The short run is the plan of ``head + n + tail`` steps, ``n`` of the same residue as the full
  run's ``N`` steady steps modulo ``p``; it is checked to be the full plan with whole periods
  removed (else nothing is sampled);
- its routing: the warm-up and closing steps carry their own draws (the full run's); each of the
  ``n`` steady slots carries the draws of a full-run steady step of the same phase, chosen at
  random (the scenario's seed) without replacement and kept in step order. Every step thus runs
  the actions and the draws it runs in the full run; only what it inherits from the steps before
  (in-flight displaced collectives, stream and link timing) comes from the sampled predecessor
  instead of its own. Routing draws are independent across steps, so that context is another
  draw of the same law;
- the estimate: with ``x_s`` the run's step latency (its step end minus the one before), the run
  total is the short run's sum plus, per phase, the ``m`` unsimulated steady steps times the mean
  of that phase's simulated ones. Error model: steady step latencies of one phase with the phase's
  mean and one shared variance ``sigma^2`` (pooled within phases, ``n - p`` degrees of freedom),
  a moving average over the plan's carry depth ``d`` (:func:`carry_depth`: a step whose copies
  carry the tokens of step ``t - d`` depends on that step's draws; displaced 2, dice 1, sync 0).
  A sum of such steps has the long-run variance ``sigma^2 (1 + 2 sum_k rho_k)``, at most
  ``(d + 1) sigma^2`` (Cauchy-Schwarz on the average's weights); that bound is used, since the few
  simulated steps estimate ``rho_k`` too poorly to narrow an interval on (the estimate, clamped,
  covered 92-94% under a synthetic lag-1 correlation of 0.49). A simulated step ran after a sampled
  predecessor, so its value is a draw of the law, not the full run's value of that step: the
  error of the prediction has variance ``(d + 1) sigma^2 * (sum_phase(N_phase + N_phase^2 /
  n_phase) + tail)`` (every steady step predicted, the closing steps one draw each; counting the
  simulated steps as the full run's own, ``m + m^2 / n``, covered 78-92% in place of 95%; without
  the ``d + 1``, displaced covered 88%);
  the interval is Student's ``t`` on it (95%), reported as ``step_latency_low_s`` /
  ``step_latency_high_s`` (per step: the total's over the step count), with the spread of the
  simulated steps in ``meta["steps"]``. The coverage test (``tests/test_sim_stepsample.py``)
  checks it against full simulations over many seeds;
- tables: every unsimulated step takes, per rank, the mean increments (step end, counters) of its
  phase's simulated steps; link totals are scaled by the estimated total over the short run's;
  collectives by the plan's issue count (exact). Lags, staleness and memory come from the full
  plan and routing (exact).

Nothing is sampled for expected routing, a recorded run, a run too short to save half its
steady steps, or where group sampling (:mod:`dicesim.sim.sample`) applies. It is the default for drawn
routing (``sample_steps=None``, or ``k`` steady steps); ``sample_steps=0`` (``dicesim simulate --every-step``)
simulates every step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import stdtrit

from dicesim.plan import Plan, build_plan
from dicesim.plan.vocabulary import Blocking, Issue
from dicesim.sim.engine.runspec import EngineSpec, RawRun
from dicesim.sim.sample import CONFIDENCE, ROUND_OFF  # one coverage and tolerance for both sampled shortcuts

#: steady steps simulated by default (rounded up to the plan's period and residue)
DEFAULT_STEPS = 6
#: longest step period searched for
MAX_PERIOD = 8


@dataclass(frozen=True)
class StepSample:
    """The short run: ``orig[s]`` is the full-run step whose actions and draws short step ``s`` runs;
    steady slots are ``[head, head + n)``; ``phase_N[φ]`` counts the full run's steady steps of phase φ;
    ``carry``: how many steps back a step's work reaches (:func:`carry_depth`), the lags of step-to-step
    correlation the interval allows for."""

    spec: EngineSpec
    steps: int
    head: int
    tail: int
    period: int
    orig: tuple[int, ...]
    phase_N: tuple[int, ...]
    carry: int = 0

    @property
    def n(self) -> int:
        return len(self.orig) - self.head - self.tail


def _signature(plan: Plan) -> list[tuple]:
    """Each step's actions with the token step made relative to the step (what makes two steps alike)."""
    out = []
    for t, acts in plan:
        out.append(tuple((a.kind, a.layer, a.tok_step - t, a.skip, a.keep, a.span) if a.tok_step >= 0 else a
                         for a in acts))
    return out


def steady_range(sigs: list[tuple]) -> tuple[int, int, int] | None:
    """``(head, tail, period)`` of the longest run of steps repeating with the smallest period, or None."""
    T, best = len(sigs), None
    for p in range(1, min(MAX_PERIOD, T // 3) + 1):
        i = 0
        for t in range(T - p + 1):
            if t < T - p and sigs[t] == sigs[t + p]:
                continue
            # repeats over [i, t): steady steps [i, t + p) when at least two periods
            if t - i >= p and (best is None or t + p - i > best[1] - best[0]):
                best = (i, t + p, p)
            i = t + 1
    return None if best is None else (best[0], T - best[1], best[2])


def carry_depth(sigs: list[tuple]) -> int:
    """How many steps back the steps' actions reach: a copy that carries the tokens of step ``t - d``
    (displaced: 2, dice: 1) makes step ``t``'s latency depend on that step's draws; 0 where every step
    moves only its own tokens."""
    # a signature entry is (kind, layer, tok_step - t, ...) where the action carries tokens (_signature)
    back = [-a[2] for sig in sigs for a in sig if isinstance(a, tuple)]
    return max([0] + back)


def _short_steps(N: int, k: int, p: int) -> int:
    """Steady slots of the short run: at least ``k`` and ``p + 1`` (every phase once, one degree of
    freedom), congruent to ``N`` modulo ``p`` (the phases before the closing steps line up)."""
    n = max(k, p + 1)
    return n + (N - n) % p


def plan_step_sample(spec: EngineSpec, k: int | None, seed: int) -> tuple[StepSample | None, str]:
    """The short run for ``spec``, or None and why not (see the module docstring). ``k``: steady steps
    to simulate (None: :data:`DEFAULT_STEPS`; 0: never)."""
    if k == 0:
        return None, "turned off"
    if not spec.routing.drawn:
        return None, "routing not drawn (expected counts repeat: window reuse applies)"
    if spec.record:
        return None, "recorded run (every event kept)"
    plan = spec.plan
    sigs = _signature(plan)
    found = steady_range(sigs)
    if found is None:
        return None, "no repeating steps in the plan"
    head, tail, p = found
    head = max(head, 1)  # the first step starts from idle streams and links, unlike any later one: kept exact
    N = plan.num_steps - head - tail
    carry = carry_depth(sigs[head:head + N])
    n = _short_steps(N, DEFAULT_STEPS if k is None else k, p)
    if 2 * n > N:
        return None, f"run too short ({N} steady steps, {n} would be simulated)"
    T_short = head + n + tail
    short = spec.plans.get(plan.strategy, plan.num_layers, T_short) if spec.plans is not None else build_plan(
        plan.strategy, plan.num_layers, T_short)
    want = sigs[:head] + [sigs[head + (s % p)] for s in range(n)] + sigs[head + N:]
    if _signature(short) != want:
        return None, "the shorter plan is not the full plan with whole periods removed"
    rng = np.random.default_rng([seed, 0x57E9])
    slots: list[int] = [0] * n
    phase_N = []
    for ph in range(p):
        pool = np.arange(head + ph, head + N, p)
        mine = list(range(ph, n, p))
        slots_ph = np.sort(rng.choice(pool, size=len(mine), replace=False))
        for s, t in zip(mine, slots_ph.tolist()):
            slots[s] = t
        phase_N.append(len(pool))
    orig = tuple(range(head)) + tuple(slots) + tuple(range(head + N, plan.num_steps))
    r = spec.routing
    counts = r.counts_LTWE[:, list(orig)]
    counts.setflags(write=False)
    routing = dataclasses.replace(r, counts_LTWE=counts)
    sub = dataclasses.replace(spec, plan=short, routing=routing)
    return StepSample(spec=sub, steps=plan.num_steps, head=head, tail=tail, period=p, orig=orig,
                      phase_N=tuple(phase_N), carry=carry), ""


def predict_steps(x_S: np.ndarray, ss: StepSample, confidence: float = CONFIDENCE) -> dict[str, float]:
    """The run total predicted from the short run's step latencies ``x_S`` (seconds), with its interval."""
    p, h = ss.period, ss.head
    steady = x_S[h:h + ss.n]
    # the simulated steps ran after a sampled predecessor, not their own: their values are draws of
    # the law, not the full run's values, so every steady step counts as predicted (N, not the m
    # unsimulated), and the closing steps (after a sampled predecessor too) add their own draw
    total, var_w = float(x_S.sum()), float(ss.tail)
    res = np.empty(ss.n)  # residuals from the phase means, in step order
    for ph in range(p):
        xs = steady[ph::p]
        N = ss.phase_N[ph]
        total += (N - xs.shape[0]) * float(xs.mean())
        var_w += N + N * N / xs.shape[0]
        res[ph::p] = xs - xs.mean()
    df = ss.n - p
    gamma0 = float((res ** 2).sum() / df)
    # steps that share draws (a copy finishing ``carry`` steps later) are correlated: a sum of steps has
    # the long-run variance gamma0 * (1 + 2 * sum of the lag autocorrelations), at most (carry + 1) *
    # gamma0 for a moving average of depth carry (Cauchy-Schwarz on its weights). The bound is used,
    # not an estimate: a few steps estimate an autocorrelation too poorly to narrow an interval on it
    long_run = (ss.carry + 1) * gamma0
    half = float(stdtrit(df, 0.5 + confidence / 2)) * float(np.sqrt(long_run * var_w))
    lag1 = float((res[:-1] * res[1:]).sum() / df / gamma0) if gamma0 > 0 and ss.n > 1 else 0.0
    return {"estimate_s": total, "low_s": float((total - half) * (1 - ROUND_OFF)),
            "high_s": float((total + half) * (1 + ROUND_OFF)),
            "step_sd_s": float(np.sqrt(gamma0)), "long_run_sd_s": float(np.sqrt(long_run)),
            "carry_steps": ss.carry, "lag1_autocorrelation": lag1,
            "step_min_s": float(steady.min()), "step_max_s": float(steady.max()), "degrees_of_freedom": df}


def _issues_per_step(plan: Plan) -> np.ndarray:
    """Collectives each step issues (its actions' Issue and Blocking effects; lowered once per action)."""
    lower, static = plan.rules.lower, plan.rules.static_lowering
    seen: dict = {}

    def issues(a) -> int:
        key = a.kind if a.kind in static else a
        if key not in seen:
            effects = static[a.kind] if a.kind in static else lower(a)
            seen[key] = sum(isinstance(e, (Issue, Blocking)) for e in effects)
        return seen[key]

    return np.asarray([sum(issues(a) for a in acts) for _, acts in plan], dtype=float)


def _issue_ratio(ss: StepSample) -> float:
    """Collectives the full plan issues over those the short plan issues, from the short plan's steps
    (it is the full plan with whole periods removed: every full step issues what its phase's do)."""
    n_S = _issues_per_step(ss.spec.plan)
    h, p, n = ss.head, ss.period, ss.n
    steady = sum(ss.phase_N[ph] * n_S[h + ph] for ph in range(p))
    return float(n_S[:h].sum() + steady + n_S[h + n:].sum()) / max(float(n_S.sum()), 1.0)


def _fill(cum_WS: np.ndarray, ss: StepSample) -> np.ndarray:
    """Cumulative per-step tables ``[W, S, ...]`` of the short run, stretched to the full run: every
    full step takes its own increments where simulated, else its phase's mean increments."""
    inc = np.diff(np.concatenate([np.zeros_like(cum_WS[:, :1]), cum_WS], axis=1), axis=1)
    h, p, n = ss.head, ss.period, ss.n
    mean_ph = [inc[:, h + ph:h + n:p].mean(axis=1) for ph in range(p)]
    where = {t: s for s, t in enumerate(ss.orig)}
    cols = [inc[:, where[t]] if t in where else mean_ph[(t - h) % p] for t in range(ss.steps)]
    return np.cumsum(np.stack(cols, axis=1), axis=1)


def expand_steps(raw: RawRun, ss: StepSample) -> tuple[RawRun, dict[str, Any]]:
    """The short run's measurements stretched to the full run, and ``meta["steps"]``."""
    end_S = raw.step_end_WT.max(axis=0)
    x_S = np.diff(np.concatenate([[0.0], end_S]))
    pred = predict_steps(x_S, ss)
    scale = pred["estimate_s"] / raw.total_s if raw.total_s > 0 else 1.0
    links = [dict(s, nbytes=s["nbytes"] * scale, busy_s=s["busy_s"] * scale) for s in raw.link_stats]
    ratio = _issue_ratio(ss)
    out = dataclasses.replace(raw, step_end_WT=_fill(raw.step_end_WT, ss), counters_WTK=_fill(raw.counters_WTK, ss),
                              total_s=pred["estimate_s"], link_stats=links,
                              collectives=int(round(raw.collectives * ratio)))
    info = {"applied": True, "steps": ss.steps, "steps_simulated": len(ss.orig), "head_steps": ss.head,
            "tail_steps": ss.tail, "period": ss.period, "simulated_steps": list(ss.orig), "confidence": CONFIDENCE,
            "total_latency_s": pred,
            "model": "steady step latencies per phase with a shared variance, a moving average over the plan's "
                     "carry depth (long-run variance at its bound); Student-t interval on the predicted total"}
    return out, info


def predicted_step_totals(totals: dict[str, Any], info: dict[str, Any], steps: int) -> dict[str, Any]:
    """``totals`` of a step-sampled run with the predicted run time and its interval (seconds)."""
    pred = info["total_latency_s"]
    out = dict(totals, total_latency_s=pred["estimate_s"], step_latency_s=pred["estimate_s"] / max(steps, 1))
    out["step_latency_low_s"] = pred["low_s"] / max(steps, 1)
    out["step_latency_high_s"] = pred["high_s"] / max(steps, 1)
    out["steps_simulated"] = info["steps_simulated"]
    out["step_sd_s"] = pred["step_sd_s"]  # the spread of the simulated steady steps (within their phase)
    return out
