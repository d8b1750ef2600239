"""The CPU profile's all-gather and ring-pass parameters, fitted on a gloo microbenchmark (never on the runs).

The file (``benchmarks/gloo_collectives.py`` writes it; schema ``dicesim-gloo-collectives/1``) holds one row
per (op, world size W, slice size s): the median service time (the ranks' mean time after a barrier, the
quantity :mod:`dicesim.calibrate.timeline` measures the traces' collectives by) of ``all_gather``
(``dist.all_gather`` of an ``s``-byte slice per rank), ``all_to_all`` (``all_to_all_single``, ``s`` bytes to
each peer) and ``p2p_pass`` (one ``batch_isend_irecv`` of an ``s``-byte K/V block to rank+1, from rank-1).

Model structure follows the algorithms:

- all-gather: gloo's ring (facebookincubator/gloo@5898507 gloo/allgather.cc:26-35: ``sendRank = rank + 1``,
  ``recvRank = rank - 1``; :63-84: a loop of ``(size - 1) * 2`` half-slice send/recv pairs, each after the
  next-to-last one completed (two halves in flight); ProcessGroupGloo's ``AsyncAllgatherWork`` calls ``gloo::allgather`` on a flat copy:
  pytorch/pytorch@c194358 torch/csrc/distributed/c10d/ProcessGroupGloo.cpp): ``W - 1`` steps in a row, each
  one step latency plus a slice over the step bandwidth: ``t = (W - 1) * (alpha + s / bw)``;
- ring pass: one step: ``t = alpha + s / bw``;
- all-to-all (reported, not used: the profile keeps the one fitted on the expert runs' all-to-alls):
  ``t = alpha + (W - 1) * s / bw`` (the busiest link carries ``W - 1`` slices, as :mod:`.fit_comm` counts it).

Each is a linear least-squares fit over sizes (and world sizes, when several are fitted together) with
relative residuals (weight ``1 / t``: sizes span three decades, and the small ones are what the runs move);
non-negative (:func:`dicesim.calibrate.lsq.nnls_fit`). Residuals are reported per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicesim.calibrate.lsq import nnls_fit
from dicesim.errors import ConfigError

SCHEMA = "dicesim-gloo-collectives/1"
COLUMNS = ("op", "world_size", "slice_nbytes", "reps", "median_s", "p25_s", "p75_s", "last_arrival_median_s")
OPS = ("all_gather", "all_to_all", "p2p_pass")
#: op -> (latency multiplier, byte multiplier) as functions of W: t = lat(W) * alpha + byt(W) * s / bw
_STRUCTURE = {
    "all_gather": (lambda W: W - 1, lambda W: W - 1),
    "p2p_pass": (lambda W: 1, lambda W: 1),
    "all_to_all": (lambda W: 1, lambda W: W - 1),
}


@dataclass(frozen=True)
class BenchRow:
    op: str
    world_size: int
    slice_nbytes: int
    median_s: float


@dataclass(frozen=True, kw_only=True)
class StepFit:
    """One op's fitted per-step latency and bandwidth, and its residuals (relative, per fitted row)."""

    op: str
    latency_s: float
    bw_Bps: float
    world_sizes: tuple[int, ...]
    nbytes_range: tuple[int, int]
    rel_residuals: tuple[float, ...]

    def time_s(self, world_size: int, slice_nbytes: float) -> float:
        lat, byt = _STRUCTURE[self.op]
        return lat(world_size) * self.latency_s + byt(world_size) * slice_nbytes / self.bw_Bps

    @property
    def rel_err_median(self) -> float:
        return float(np.median(np.abs(self.rel_residuals)))

    @property
    def rel_err_max(self) -> float:
        return float(np.max(np.abs(self.rel_residuals)))

    def describe(self) -> str:
        return (f"{self.op}: step latency {self.latency_s * 1e6:.1f} us, bandwidth {self.bw_Bps / 1e9:.3g} GB/s "
                f"(W={','.join(map(str, self.world_sizes))}, {self.nbytes_range[0]}..{self.nbytes_range[1]} B; "
                f"|rel residual| median {self.rel_err_median:.1%} max {self.rel_err_max:.1%})")


@dataclass(frozen=True, kw_only=True)
class CollectivesFit:
    """The microbenchmark's fits for one set of world sizes, and the file they came from."""

    source: str
    all_gather: StepFit
    p2p_pass: StepFit
    all_to_all: StepFit | None


def load_bench(path: str | Path) -> list[BenchRow]:
    """Read a microbenchmark CSV; a bad file is one :class:`ConfigError` line naming the problem."""
    p = Path(path)
    where = f"collectives {p}"
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise ConfigError("collectives", f"cannot read {p}: {exc.strerror or exc}") from None
    body = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    schema = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("# schema:")), None)
    if schema != SCHEMA:
        raise ConfigError("collectives", f"{p}: schema {schema!r} is not supported", (SCHEMA,))
    if not body or tuple(c.strip() for c in body[0].split(",")) != COLUMNS:
        raise ConfigError("collectives", f"{p}: header must be the columns", COLUMNS)
    rows = []
    for n, ln in enumerate(body[1:], start=2):
        f = [c.strip() for c in ln.split(",")]
        if len(f) != len(COLUMNS):
            raise ConfigError("collectives", f"{where}: data line {n} has {len(f)} fields, expected {len(COLUMNS)}")
        if f[0] not in OPS:
            raise ConfigError("collectives", f"{where}: data line {n}: unknown op {f[0]!r}", OPS)
        try:
            W, s, t = int(f[1]), int(f[2]), float(f[4])
        except ValueError:
            raise ConfigError("collectives", f"{where}: data line {n}: world_size and slice_nbytes must be "
                                             f"integers, median_s a number") from None
        if W < 2 or s < 1 or not (math.isfinite(t) and 0 < t <= 10.0):
            raise ConfigError("collectives", f"{where}: data line {n}: need world_size >= 2, slice_nbytes >= 1, "
                                             f"0 < median_s <= 10")
        rows.append(BenchRow(f[0], W, s, t))
    if not rows:
        raise ConfigError("collectives", f"{where}: no data rows")
    return rows


def fit_step(rows: list[BenchRow], op: str) -> StepFit:
    """Fit ``op``'s per-step latency and bandwidth (module doc) on ``rows`` of that op (>= 2 sizes)."""
    mine = [r for r in rows if r.op == op]
    if len({r.slice_nbytes for r in mine}) < 2:
        raise ConfigError("collectives", f"{op}: need at least 2 slice sizes to fit a latency and a bandwidth, "
                                         f"got {len(mine)} rows")
    lat, byt = _STRUCTURE[op]
    X = np.array([[lat(r.world_size), byt(r.world_size) * r.slice_nbytes] for r in mine], dtype=float)
    y = np.array([r.median_s for r in mine])
    coef = nnls_fit(X, y, 1.0 / y ** 2)  # relative residuals
    alpha, beta = float(coef[0]), float(coef[1])
    pred = X @ coef
    return StepFit(op=op, latency_s=alpha, bw_Bps=1.0 / beta if beta > 0 else 1e15,
                   world_sizes=tuple(sorted({r.world_size for r in mine})),
                   nbytes_range=(min(r.slice_nbytes for r in mine), max(r.slice_nbytes for r in mine)),
                   rel_residuals=tuple(float(v) for v in (pred - y) / y))


def fit_collectives(rows: list[BenchRow], world_sizes: set[int] | tuple[int, ...], *,
                    source: str = "") -> CollectivesFit:
    """The fits on the rows of ``world_sizes`` (each must be in the file)."""
    have = sorted({r.world_size for r in rows})
    missing = sorted(set(world_sizes) - set(have))
    if missing:
        raise ConfigError("collectives", f"{source or 'microbenchmark'} has no rows for world size "
                                         f"{', '.join(map(str, missing))}", tuple(map(str, have)))
    sel = [r for r in rows if r.world_size in set(world_sizes)]
    a2a = fit_step(sel, "all_to_all") if len({r.slice_nbytes for r in sel if r.op == "all_to_all"}) >= 2 else None
    return CollectivesFit(source=source, all_gather=fit_step(sel, "all_gather"), p2p_pass=fit_step(sel, "p2p_pass"),
                          all_to_all=a2a)
