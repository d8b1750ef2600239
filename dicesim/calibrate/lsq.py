"""Non-negative least squares with relative and robust weighting (the fitting kernel of calibration).

Timings from a busy machine have heavy tails (a rank descheduled for a millisecond), so the
fits minimise *relative* error and, optionally, an L1 loss by iteratively reweighted least
squares: a few slow outliers then move the fit as little as they move a median.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls


def nnls_fit(X_NP: np.ndarray, y_N: np.ndarray, w_N: np.ndarray | None = None) -> np.ndarray:
    """Coefficients ``c >= 0`` minimising ``sum w (X c - y)^2``; columns are scaled for conditioning.

    Shapes: N samples, P predictors.
    """
    X = np.asarray(X_NP, dtype=float)
    y = np.asarray(y_N, dtype=float)
    w = np.ones(len(y)) if w_N is None else np.asarray(w_N, dtype=float)
    scale_P = np.abs(X).max(axis=0)
    scale_P[scale_P == 0] = 1.0
    sw = np.sqrt(w)
    coef, _ = nnls((X / scale_P) * sw[:, None], y * sw, maxiter=50 * X.shape[1] + 100)
    return coef / scale_P


def robust_nnls(X_NP: np.ndarray, y_N: np.ndarray, *, weight_N: np.ndarray | None = None,
                relative: bool = True, l1: bool = True, iters: int = 30) -> np.ndarray:
    """NNLS minimising relative (``(pred - y) / y``) and, with ``l1``, absolute-value loss.

    ``weight_N``: per-sample multiplicity (e.g. how many raw samples a median stands for).
    """
    y = np.asarray(y_N, dtype=float)
    base = np.ones(len(y)) if weight_N is None else np.asarray(weight_N, dtype=float)
    if relative:
        base = base / np.maximum(np.abs(y), 1e-300) ** 2
    coef = nnls_fit(X_NP, y, base)
    if not l1:
        return coef
    for _ in range(iters):
        r = (np.asarray(X_NP, dtype=float) @ coef - y) * np.sqrt(base)
        # IRLS for the L1 loss: weight 1/|r|, floored so exact fits do not blow up
        floor = max(float(np.median(np.abs(r))) * 1e-3, 1e-12)
        new = nnls_fit(X_NP, y, base / np.maximum(np.abs(r), floor))
        if np.allclose(new, coef, rtol=1e-7, atol=0):
            return new
        coef = new
    return coef


def rel_errors(pred_N: np.ndarray, y_N: np.ndarray) -> np.ndarray:
    """Relative errors ``(pred - y) / y``."""
    y = np.asarray(y_N, dtype=float)
    return (np.asarray(pred_N, dtype=float) - y) / np.maximum(np.abs(y), 1e-300)


def weighted_median(values_N: np.ndarray, weights_N: np.ndarray | None = None) -> float:
    """Median of ``values`` where each value counts ``weights`` times (NaN for no values)."""
    v = np.asarray(values_N, dtype=float)
    if v.size == 0:
        return float("nan")
    w = np.ones_like(v) if weights_N is None else np.asarray(weights_N, dtype=float)
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, 0.5 * cum[-1])])
