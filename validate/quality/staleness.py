"""Staleness versus output: what each strategy's stale expert outputs do to the samples.

For every strategy the sampling loop runs in one process with exactly the plan's staleness
(:func:`validate.executor.worker.run_emulated`: same numerics as the distributed run, tested equal),
with shadow mode on: each MoE layer's stale output is compared with a fresh synchronous
computation of the same step. Reported per strategy:

- ``mean_lag_steps`` / ``weighted_lag_steps``: the plan's lag over token-expert copies,
  plain and weighted by the router scores the run actually produced;
- ``layer_rel_l2``: mean relative L2 error of MoE-layer outputs at stale (layer, step)s;
- ``sample_rel_l2``: relative L2 distance of the final latents from the ``sync`` run's;
- ``sample_cosine``: their cosine similarity.

The model is randomly initialised unless a checkpoint is given, so these measure how far
staleness moves the computation, not image quality (FID needs trained weights and images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from dicesim.progress import NO_PROGRESS, Ticker
from dicesim.strategy import make_strategy
from validate.executor.families import run_emulated
from validate.executor.worker import RunSpec


def _rel_l2(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).norm() / ref.norm().clamp_min(1e-30))


def _cosine(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Cosine similarity in float64, clamped to [-1, 1]: float32 rounding can put two
    identical samples a few ulps above 1."""
    c = torch.nn.functional.cosine_similarity(x.flatten().double(), ref.flatten().double(), dim=0)
    return float(c.clamp(-1.0, 1.0))


def staleness_table(strategies: Sequence[str], base: RunSpec, *, world_size: int = 2,
                    ticker: Ticker = NO_PROGRESS) -> pd.DataFrame:
    """One row per strategy (``sync`` is always run first as the reference); ``ticker`` hears of each run."""
    names = ["sync", *[s for s in strategies if s != "sync"]]
    rows, reference = [], None
    ticker.expect(len(names))
    for name in names:
        spec = replace(base, strategy=make_strategy(name), shadow=True, trace=False)
        res = run_emulated(spec, world_size)
        rec, x = res.record, res.samples_BCLL
        if reference is None:
            reference = x
        K = spec.preset.top_k
        copy_lag = (rec.lag_kept + (K - 1) * rec.lag_dropped) / K
        stale = (rec.lag_kept > 0) | (rec.lag_dropped > 0)
        sq = rec.shadow_sq
        with np.errstate(invalid="ignore", divide="ignore"):
            layer_err = np.sqrt(sq[..., 0] / sq[..., 1])
        rows.append({
            "strategy": name,
            "mean_lag_steps": float(copy_lag.mean()),
            "weighted_lag_steps": float(rec.lag_score[..., 0].sum() / max(rec.lag_score[..., 1].sum(), 1e-30)),
            "stale_layer_steps_frac": float(stale.mean()),
            "layer_rel_l2": float(np.nanmean(layer_err[stale])) if stale.any() else 0.0,
            "sample_rel_l2": _rel_l2(x, reference),
            "sample_cosine": _cosine(x, reference),
        })
        ticker.advance()
    return pd.DataFrame(rows)


def staleness_markdown(table: pd.DataFrame, command: str) -> str:
    """The table as the markdown page docs/staleness-quality.md."""
    head = ("| strategy | mean lag (steps) | score-weighted lag (steps) | stale (layer, step) share "
            "| layer output rel. L2 at stale points | final latent rel. L2 vs sync | cosine vs sync |\n"
            "|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r.strategy} | {r.mean_lag_steps:.3f} | {r.weighted_lag_steps:.3f} | {r.stale_layer_steps_frac:.2f} "
        f"| {r.layer_rel_l2:.4f} | {r.sample_rel_l2:.4f} | {r.sample_cosine:.5f} |\n"
        for r in table.itertuples())
    return (f"# Staleness and its effect on the output\n\nCommand: `{command}`\n\n{head}{body}\n"
            "Every row runs the same sampling loop (same noise, labels and weights) with the strategy's exact "
            "staleness (single-process emulation, shown equal to the distributed executor by the tests). "
            "`layer output rel. L2` compares each stale MoE-layer output with a fresh synchronous computation of "
            "the same step (shadow mode); `final latent` compares the sampled latents with the `sync` run's. "
            "Weights are random, so this measures how far staleness moves the computation; image quality on a "
            "trained model is in docs/quality.md (`python -m validate quality --model digits`).\n")
