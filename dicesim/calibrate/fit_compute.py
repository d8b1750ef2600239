"""Per-op-kind compute fits: time as a function of FLOPs and bytes, plus interference.

Each op kind gets two fits on the per-configuration mean times (samples of one size are
averaged first; only absurd outliers beyond ``STALL_FACTOR`` x their median are dropped:
the ordinary stalls of a busy machine are part of the mean time the simulator should add
up to):

- **linear**: ``t = launch_s + flops * s_per_flop + nbytes * s_per_byte`` (all >= 0);
- **roofline**: ``t = launch_s + max(flops * s_per_flop, nbytes * s_per_byte)``, the form
  :class:`~dicesim.sim.costs.profile.HardwareProfile` stores (``s_per_flop = 1 / (peak *
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
from dicesim.sim.costs.costmodel import embed_cost, final_cost

STALL_FACTOR = 50.0  # a sample this many times its configuration's median is not the op's work
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
    dp = run.experts_replicated
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
    """Time per (kind, flops, nbytes): the mean within each run, then the median over runs.

    Means inside a run keep its ordinary stalls (they are part of its step time); the
    median across runs (column ``trace``, if present) keeps one disturbed run, slowed down
    by something else on the machine, from moving the fit. Overlapped samples are de-slowed
    by ``interference``; absurd outliers (``STALL_FACTOR`` x the median) are dropped.
    """
    # an op whose elapsed time overlapped communication for a fraction f ran f / (1 + i) of
    # its work slowed by (1 + i): its own work is elapsed * (1 - f * i / (1 + i))
    c = interference / (1.0 + interference)
    t = (samples["op_s"] + samples["gap_s"]) * (1.0 - c * samples["overlap_frac"])
    df = samples.assign(t_s=t.to_numpy())
    if "trace" not in df.columns:
        df = df.assign(trace="")
    key = ["kind", "flops", "nbytes"]
    med = df.groupby(key)["t_s"].transform("median")
    df = df[df["t_s"] <= STALL_FACTOR * med]
    per_run = df.groupby(key + ["trace"], as_index=False).agg(t_s=("t_s", "mean"), n=("t_s", "size"))
    return per_run.groupby(key, as_index=False).agg(t_s=("t_s", "median"), n=("n", "sum"))


def _rel_rms(pred: np.ndarray, y: np.ndarray, n: np.ndarray) -> float:
    e = rel_errors(pred, y)
    return float(np.sqrt(np.sum(n * e ** 2) / np.sum(n)))


def _best_subset(F: np.ndarray, B: np.ndarray, y: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Linear coefficients (launch, per flop, per byte), preferring fewer terms when nearly as good."""
    one = np.ones_like(F)
    cands = []
    for pref, cols in enumerate(((0, 1), (0, 2), (0, 1, 2))):  # ties go to FLOPs, then bytes
        X = np.stack([one, F, B], axis=1)[:, cols]
        c = robust_nnls(X, y, weight_N=n, l1=False)
        full = np.zeros(3)
        full[list(cols)] = c
        pred = full[0] + F * full[1] + B * full[2]
        cands.append((_rel_rms(pred, y, n), int(np.count_nonzero(full[1:])), pref, full))
    best = min(c[0] for c in cands)
    return min((c for c in cands if c[0] <= best + PARSIMONY), key=lambda c: (c[1], c[2]))[3]


def _roofline(F: np.ndarray, B: np.ndarray, y: np.ndarray, n: np.ndarray, lin: np.ndarray) -> np.ndarray:
    """(launch, per flop, per byte) minimising the max-form error: single-term fits and alternation.

    Near-ties go to the earlier candidate: the linear fit when it has one term (then it is
    a roofline too), FLOPs-only, bytes-only, then the split fits.
    """
    one = np.ones_like(F)
    cands = [lin] if np.count_nonzero(lin[1:]) <= 1 else []
    for X, idx in ((np.stack([one, F], 1), (0, 1)), (np.stack([one, B], 1), (0, 2))):
        c = np.zeros(3)
        c[list(idx)] = robust_nnls(X, y, weight_N=n, l1=False)
        cands.append(c)
    # the max form is flop-bound exactly where F / B exceeds b / a: try every split of the
    # points sorted by F / B (at most ~100 of them), fit each side's term, keep the best
    order = np.argsort(F / np.maximum(B, 1e-300), kind="stable")
    splits = np.unique(np.linspace(0, len(F), min(len(F), 100) + 1).astype(int))
    for k in splits:
        flop_bound = np.zeros(len(F), dtype=bool)
        flop_bound[order[k:]] = True
        X = np.stack([one, F * flop_bound, B * ~flop_bound], axis=1)
        cands.append(robust_nnls(X, y, weight_N=n, l1=False))
    c = lin.copy()
    for _ in range(20):  # and alternation from the linear fit: which term is the max, refit
        flop_bound = F * c[1] >= B * c[2]
        X = np.stack([one, F * flop_bound, B * ~flop_bound], axis=1)
        new = robust_nnls(X, y, weight_N=n, l1=False)
        if np.allclose(new, c, rtol=1e-9, atol=0):
            break
        c = new
    cands.append(c)
    scores = [_rel_rms(x[0] + np.maximum(F * x[1], B * x[2]), y, n) for x in cands]
    best = min(scores)
    return next(x for x, sc in zip(cands, scores) if sc <= best + 1e-9)


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
    elapsed = (known["op_s"] + known["gap_s"]).to_numpy()
    ratio = elapsed / np.maximum(pred, 1e-12)
    frac = known["overlap_frac"].to_numpy()
    over, clean = frac >= min_overlap, frac == 0
    if over.sum() < 5 or clean.sum() < 5:
        return None
    # Excess over the op's own work is i x (its time under communication), which is
    # f * elapsed / (1 + i): sums, not medians (on a shared CPU the slow-down comes as
    # occasional preemptions), per run; the median over runs (one disturbed run must not
    # set it). Predictions are first scaled by the run's clean samples' mean ratio.
    ok = ratio <= STALL_FACTOR * np.median(ratio)
    trace = known["trace"].to_numpy() if "trace" in known.columns else np.zeros(len(known))
    per_run = []
    for t in np.unique(trace):
        m = trace == t
        o, c = m & over & ok, m & clean & ok
        if o.sum() >= 5 and c.sum() >= 5:
            base = pred[o] * np.mean(ratio[c])
            share = np.sum(elapsed[o] - base) / np.sum(frac[o] * elapsed[o])  # = i / (1 + i)
            per_run.append(share / (1.0 - share) if share < 1.0 else np.inf)
    if not per_run:
        return None
    return float(max(np.median(per_run), 0.0))


def fit_compute(samples: pd.DataFrame, *, anchors: dict[str, tuple[float, float, float]] | None = None,
                interference: float | None = None, rounds: int = 12) -> tuple[dict[str, OpFit], float | None]:
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
        if new is None or (est is not None and abs(new - est) < 1e-7):
            est = new if new is not None else est
            break
        est = new
    return fits, est
