"""Staleness figures from a plan's lag table: per (step, layer), per layer over token copies,
and the run's means. Pure functions of the :class:`~dicesim.plan.vocabulary.LagTable` the run
derived once; the simulator's metrics, the quality model and the search all read these.

``mean_lag`` averages over token-expert copies (kept copy weight 1, dropped copies
``top_k - 1``); ``weighted_lag`` weights the kept and the dropped copy by their router-score
share (:func:`kept_share`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dicesim.plan.vocabulary import LagTable


def kept_share(kept_copy: int | None, top1_share: float) -> float:
    """Router-weight share of the copy a skip step keeps, top-2: ``kept_copy`` from
    :meth:`ExpertParallelStrategy.kept_copy` (0 = the top-1 copy); None (random) keeps either, half each."""
    return 0.5 if kept_copy is None else (top1_share if kept_copy == 0 else 1.0 - top1_share)


def lag_frames(lt: LagTable, top_k: int, share_kept: float) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Per (step, layer) lags, per-layer token-copy lag distribution, and the means."""
    T, L = lt.kept.shape
    weighted = share_kept * lt.kept + (1.0 - share_kept) * lt.dropped
    steps, layers = np.meshgrid(np.arange(T), np.arange(L), indexing="ij")
    lags = pd.DataFrame({
        "step": steps.ravel(), "layer": layers.ravel(), "lag_kept": lt.kept.ravel(),
        "lag_dropped": lt.dropped.ravel(), "skip": lt.skip.ravel(), "weighted_lag": weighted.ravel(),
    })
    rows = []
    for l in range(L):
        vals = np.concatenate([lt.kept[:, l], lt.dropped[:, l]])
        wts = np.concatenate([np.ones(T), np.full(T, top_k - 1.0)])
        for lag in np.unique(vals):
            rows.append((l, int(lag), float(wts[vals == lag].sum() / wts.sum())))
    token_lags = pd.DataFrame(rows, columns=["layer", "lag", "copy_frac"])
    return lags, token_lags, lag_means(lt, top_k, share_kept)


def lag_means(lt: LagTable, top_k: int, share_kept: float) -> dict[str, float]:
    """``mean_lag`` over token copies, router-``weighted_lag`` and ``max_lag``, in steps."""
    weighted = share_kept * lt.kept + (1.0 - share_kept) * lt.dropped
    copy_mean = (lt.kept + (top_k - 1) * lt.dropped) / top_k
    return {"mean_lag": float(copy_mean.mean()) if copy_mean.size else 0.0,
            "weighted_lag": float(weighted.mean()) if weighted.size else 0.0,
            "max_lag": float(lt.max_lag)}
