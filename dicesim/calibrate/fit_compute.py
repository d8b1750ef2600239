"""Per-op-kind compute fits: time as a function of FLOPs and bytes, plus interference.

Each op kind gets two fits on the per-configuration mean times (samples of one size are
averaged first, after dropping stalls longer than ``STALL_FACTOR`` x their median):

- **linear**: ``t = launch_s + flops * s_per_flop + nbytes * s_per_byte`` (all >= 0);
- **roofline**: ``t = launch_s + max(flops * s_per_flop, nbytes * s_per_byte)``, the form
  :class:`~dicesim.sim.profile.HardwareProfile` stores (``s_per_flop = 1 / (peak *
  compute_eff)``, ``s_per_byte = 1 / (mem_bw * mem_eff)``).

Both minimise relative squared error weighted by sample count; the simpler model (fewer
non-zero terms) wins when it is within :data:`PARSIMONY` of the best. ``form`` names the
one that fits clearly better (linear only if it beats roofline by :data:`FORM_MARGIN`).

**Interference**: the simulator slows compute by ``1 + interference`` while a collective
of the rank is in service. It is estimated from the ratio of measured to fitted time of
samples that overlapped communication, against the same ratio of samples that did not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dicesim.calibrate.lsq import rel_errors, robust_nnls, weighted_median
from dicesim.calibrate.runs import TraceRun
from dicesim.sim.costmodel import embed_cost, final_cost

STALL_FACTOR = 5.0  # a sample this many times its configuration's median is a stall, not work
PARSIMONY = 0.005  # relative-RMS slack for preferring fewer terms
FORM_MARGIN = 0.01  # linear must beat roofline by this relative RMS to be preferred


@dataclass(frozen=True, kw_only=True)
class OpFit:
    """Fitted time model of one op kind (seconds, per FLOP, per byte)."""

    kind: str
    launch_s: float
    s_per_flop: float
    s_per_byte: float
    roofline: tuple[float, float, float]
    form: str
    n_samples: int
    n_configs: int
    rel_err_median: float
    rel_err_max: float
    roofline_rel_err_median: float
    roofline_rel_err_max: float
    flops_range: tuple[float, float]
    nbytes_range: tuple[float, float]

    def time_s(self, flops: np.ndarray | float, nbytes: np.ndarray | float, form: str | None = None) -> np.ndarray:
        """Predicted time of ops of this kind with the given work, in the named (or best) form."""
        F, B = np.asarray(flops, dtype=float), np.asarray(nbytes, dtype=float)
        if (form or self.form) == "linear":
            return self.launch_s + F * self.s_per_flop + B * self.s_per_byte
        l, a, b = self.roofline
        return l + np.maximum(F * a, B * b)


def add_work(samples: pd.DataFrame, run: TraceRun) -> pd.DataFrame:
    """Samples with ``flops`` and ``nbytes`` of each op from :mod:`dicesim.models` for the run's workload."""
    wl = run.workload
    fixed = {"attention": wl.attention_half(), "gate": wl.gate(), "shared_expert": wl.shared_expert(),
             "local_combine": wl.local_combine(), "embed": embed_cost(wl), "final": final_cost(wl)}
    dp = run.strategy is not None and run.strategy.scheme == "data_parallel"
    flops, nbytes = np.zeros(len(samples)), np.zeros(len(samples))
    for i, (kind, rows) in enumerate(zip(samples["kind"], samples["rows"])):
        if kind == "experts":
            rows = int(rows) if rows > 0 or not dp else wl.routed_rows
            c = wl.expert_rows(rows, wl.model.num_experts if dp else run.experts_on_rank)
        else:
            c = fixed[kind]
        flops[i], nbytes[i] = c.flops, c.nbytes
    return samples.assign(flops=flops, nbytes=nbytes)


def config_means(samples: pd.DataFrame, interference: float = 0.0) -> pd.DataFrame:
    """Mean time per (kind, flops, nbytes), stalls dropped, overlapped samples de-slowed."""
    t = (samples["op_s"] + samples["gap_s"]) / (1.0 + interference * samples["overlap_frac"])
    df = samples.assign(t_s=t.to_numpy())
    med = df.groupby(["kind", "flops", "nbytes"])["t_s"].transform("median")
    df = df[df["t_s"] <= STALL_FACTOR * med]
    return df.groupby(["kind", "flops", "nbytes"], as_index=False).agg(t_s=("t_s", "mean"), n=("t_s", "size"))


def _rel_rms(pred: np.ndarray, y: np.ndarray, n: np.ndarray) -> float:
    e = rel_errors(pred, y)
    return float(np.sqrt(np.sum(n * e ** 2) / np.sum(n)))


def _best_subset(F: np.ndarray, B: np.ndarray, y: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Linear coefficients (launch, per flop, per byte), preferring fewer terms when nearly as good."""
    one = np.ones_like(F)
    cands = []
    for cols in ((0, 1), (0, 2), (0, 1, 2)):
        X = np.stack([one, F, B], axis=1)[:, cols]
        c = robust_nnls(X, y, weight_N=n, l1=False)
        full = np.zeros(3)
        full[list(cols)] = c
        pred = full[0] + F * full[1] + B * full[2]
        cands.append((_rel_rms(pred, y, n), int(np.count_nonzero(full[1:])), full))
    best = min(c[0] for c in cands)
    return min((c for c in cands if c[0] <= best + PARSIMONY), key=lambda c: (c[1], c[0]))[2]


def _roofline(F: np.ndarray, B: np.ndarray, y: np.ndarray, n: np.ndarray, lin: np.ndarray) -> np.ndarray:
    """(launch, per flop, per byte) minimising the max-form error: single-term fits and alternation."""
    one = np.ones_like(F)
    cands = []
    for X, idx in ((np.stack([one, F], 1), (0, 1)), (np.stack([one, B], 1), (0, 2))):
        c = np.zeros(3)
        c[list(idx)] = robust_nnls(X, y, weight_N=n, l1=False)
        cands.append(c)
    c = lin.copy()
    for _ in range(20):  # alternate: which term is the max at each point, then refit
        flop_bound = F * c[1] >= B * c[2]
        X = np.stack([one, F * flop_bound, B * ~flop_bound], axis=1)
        new = robust_nnls(X, y, weight_N=n, l1=False)
        if np.allclose(new, c, rtol=1e-9, atol=0):
            break
        c = new
    cands.append(c)
    scores = [_rel_rms(x[0] + np.maximum(F * x[1], B * x[2]), y, n) for x in cands]
    return cands[int(np.argmin(scores))]


def fit_op(kind: str, means: pd.DataFrame, anchor: tuple[float, float, float] | None = None) -> OpFit:
    """Fit one op kind from its configuration means (``kind, flops, nbytes, t_s, n``).

    With a single configuration the size dependence cannot be fitted: the slopes come from
    ``anchor`` (e.g. the base profile's roofline) and only ``launch_s`` is fitted.
    """
    m = means[means["kind"] == kind]
    F, B, y, n = (m[c].to_numpy(dtype=float) for c in ("flops", "nbytes", "t_s", "n"))
    if len(m) == 0:
        raise ValueError(f"no samples of op kind {kind!r}")
    if len(m) == 1 or (np.ptp(F) == 0 and np.ptp(B) == 0):
        a, b = (anchor[1], anchor[2]) if anchor else (0.0, 0.0)
        launch = max(float(np.average(y - np.maximum(F * a, B * b), weights=n)), 0.0)
        lin = roof = np.array([launch, a, b])
    else:
        lin = _best_subset(F, B, y, n)
        roof = _roofline(F, B, y, n, lin)
    e_lin = np.abs(rel_errors(lin[0] + F * lin[1] + B * lin[2], y))
    e_roof = np.abs(rel_errors(roof[0] + np.maximum(F * roof[1], B * roof[2]), y))
    form = "linear" if _rel_rms(lin[0] + F * lin[1] + B * lin[2], y, n) + FORM_MARGIN < \
        _rel_rms(roof[0] + np.maximum(F * roof[1], B * roof[2]), y, n) else "roofline"
    return OpFit(kind=kind, launch_s=float(lin[0]), s_per_flop=float(lin[1]), s_per_byte=float(lin[2]),
                 roofline=(float(roof[0]), float(roof[1]), float(roof[2])), form=form,
                 n_samples=int(n.sum()), n_configs=len(m),
                 rel_err_median=weighted_median(e_lin, n), rel_err_max=float(e_lin.max()),
                 roofline_rel_err_median=weighted_median(e_roof, n), roofline_rel_err_max=float(e_roof.max()),
                 flops_range=(float(F.min()), float(F.max())), nbytes_range=(float(B.min()), float(B.max())))


def estimate_interference(samples: pd.DataFrame, fits: dict[str, OpFit], *, min_overlap: float = 0.3) -> float | None:
    """Compute slow-down per unit of overlap with communication (None without overlapped samples)."""
    known = samples[samples["kind"].isin(list(fits))]
    if known.empty:
        return None
    pred = np.empty(len(known))
    for kind, idx in known.groupby("kind").indices.items():
        sub = known.iloc[idx]
        pred[idx] = fits[kind].time_s(sub["flops"], sub["nbytes"])
    ratio = (known["op_s"] + known["gap_s"]).to_numpy() / np.maximum(pred, 1e-12)
    frac = known["overlap_frac"].to_numpy()
    over, clean = frac >= min_overlap, frac == 0
    if over.sum() < 5 or clean.sum() < 5:
        return None
    slow = np.median(ratio[over]) / np.median(ratio[clean]) - 1.0
    return float(max(slow / np.mean(frac[over]), 0.0))


def fit_compute(samples: pd.DataFrame, *, anchors: dict[str, tuple[float, float, float]] | None = None,
                interference: float | None = None, rounds: int = 3) -> tuple[dict[str, OpFit], float | None]:
    """Fit every op kind in ``samples`` (with ``flops``/``nbytes``), alternating with the interference.

    ``interference`` given: held fixed; None: estimated from the data (None if it cannot be).
    Returns ``(fits by kind, interference)``.
    """
    est = interference
    fits: dict[str, OpFit] = {}
    for _ in range(rounds):
        means = config_means(samples, est or 0.0)
        fits = {k: fit_op(k, means, (anchors or {}).get(k)) for k in sorted(means["kind"].unique())}
        if interference is not None:
            break
        new = estimate_interference(samples, fits)
        if new is None or (est is not None and abs(new - est) < 1e-3):
            est = new if new is not None else est
            break
        est = new
    return fits, est
