"""Fit the NCCL model on the fitted figures of a split by least squares.

Every prediction is a real simulator run (:func:`dicesim.sim.microbench.collective_ops.simulate_op`):
the operation's flows on the machine's graph through the simpy flow network.

The fit minimises the sum of squared log errors ``log(predicted / published)`` of all fitted
figures over every parameter some fitted figure *rests on* at once (scipy's bounded
trust-region least squares): efficiencies in [0.05, 1], kernel rates in [1, 10000] GB/s, latencies
in [0, 1 ms]. A figure rests on a parameter when a 10% smaller efficiency or kernel rate, or 1 us
more latency, moves its prediction by at
least 1% (:data:`RESTS_ON`); that is read at the prior and again at the solution, and the fit is
repeated until the set of fitted parameters stops growing. A parameter no fitted figure rests
on keeps its prior value and says so. The Jacobian is taken by forward differences, re-simulating
only the figures that rest on each parameter.

Reported per parameter: the value; its spread as the value each independence unit (``group``
prefix) gives on its own (the parameter refitted on that unit's figures alone, every other
parameter at the solution), so two sources that pull a parameter apart show it; the pooled
standard error ``s^2 (J^T J)^-1`` (``s^2`` the residual variance of all fitted figures; none when
there are no more figures than parameters); the figures and units it rests on. Per fitted
figure: its residual.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
from scipy.optimize import least_squares

from dicesim.calibrate.published.schema import DEFAULT_FIT_ON, LL_OPS, Figure
from dicesim.errors import ConfigError
from dicesim.sim.microbench.collective_ops import simulate_op
from dicesim.sim.network.nccl import KERNEL_BOUND, TRANSPORTS, NcclModel, nccl_model_from_dict
from dicesim.topology.machines import get_machine

_METRIC_KEY = {"busbw": "busbw_Bps", "algbw": "algbw_Bps", "time": "time_s",
               "deepep_nvl": "deepep_nvl_Bps", "deepep_rdma": "deepep_rdma_Bps"}
PARAMS: tuple[str, ...] = (*(f"bw_eff.{t}" for t in TRANSPORTS if t not in KERNEL_BOUND),
                           *(f"kernel_Bps.{t}" for t in KERNEL_BOUND), "base_latency_s", "a2a_latency_s",
                           *(f"hop_latency_s.{t}" for t in TRANSPORTS))
#: (efficiency factor, latency step in s, relative move of a prediction) that makes a figure rest on a parameter
RESTS_ON = (0.9, 1e-6, 0.01)
_EFF_BOUNDS, _LAT_MAX_US, _RATE_BOUNDS_GBPS = (0.05, 1.0), 1000.0, (1.0, 10000.0)
_STEP = {"eff": 1e-3, "lat_us": 0.05, "rate_GBps": 0.05}  # forward-difference steps
#: where the solver starts a kernel rate (GB/s): below every NVLink line rate, so the figures it bounds rest on it
_RATE_START_GBPS = 100.0
_MAX_ROUNDS = 3


def is_eff(p: str) -> bool:
    return p.startswith("bw_eff.")


def is_rate(p: str) -> bool:
    return p.startswith("kernel_Bps.")


def _unit(p: str) -> float:
    """SI value of one solver unit of ``p`` (efficiency 1; kernel rate GB/s; latency us)."""
    return 1.0 if is_eff(p) else 1e9 if is_rate(p) else 1e-6


def get_param(model: NcclModel, p: str) -> float:
    """A parameter's value (efficiency, kernel rate in bytes/s, inf where there is none, or latency in seconds)."""
    table, _, key = p.partition(".")
    if table == "kernel_Bps":
        return model.kernel_Bps.get(key, math.inf)  # type: ignore[call-overload]
    return getattr(model, table)[key] if key else getattr(model, table)


def set_params(model: NcclModel, values: dict[str, float]) -> NcclModel:
    """A copy of ``model`` with the named parameters replaced (unvalidated: used inside the fit)."""
    upd: dict[str, object] = {}
    for p, v in values.items():
        table, _, key = p.partition(".")
        if key:
            upd[table] = {**upd.get(table, getattr(model, table)), key: v}  # type: ignore[dict-item]
        else:
            upd[table] = v
    return model.model_copy(update=upd)


def prior_model() -> NcclModel:
    """Starting point of every fit: line rate everywhere, no kernel bound, no latency beyond the graph's edges."""
    note = "prior (no fitted figure rests on it): {}"
    return nccl_model_from_dict({
        "name": "nccl-prior", "source": "prior", "date": "", "fit_on": "not fitted",
        "bw_eff": {t: 1.0 for t in TRANSPORTS}, "base_latency_s": 0.0, "a2a_latency_s": 0.0,
        "hop_latency_s": {t: 0.0 for t in TRANSPORTS},
        "fitted": {**{f"bw_eff.{t}": note.format("line rate") for t in TRANSPORTS},
                   **{f"kernel_Bps.{t}": note.format("no bound") for t in KERNEL_BOUND},
                   "base_latency_s": note.format("0"), "a2a_latency_s": note.format("0"),
                   **{f"hop_latency_s.{t}": note.format("0, the route's edge latencies only") for t in TRANSPORTS}},
    })


class Predictor:
    """Predicts figures, building each machine's graph once (graphs are read, never changed).

    A prediction is remembered under the values of the model parameters it depends on
    (:attr:`OpResult.params`), so refits that leave those unchanged (other splits, the fit's
    own Jacobian) do not simulate the figure again; the memo holds plain numbers only."""

    def __init__(self) -> None:
        self._graphs: dict[str, nx.DiGraph] = {}
        self._deps: dict[Figure, tuple[str, ...]] = {}
        self._memo: dict[tuple, float] = {}

    def graph(self, topology: str) -> nx.DiGraph:
        if topology not in self._graphs:
            self._graphs[topology] = get_machine(topology)
        return self._graphs[topology]

    def __call__(self, fig: Figure, model: NcclModel) -> float:
        """The simulated value of ``fig`` in SI units (bytes/s or seconds)."""
        deps = self._deps.get(fig)
        key = (fig, tuple(get_param(model, p) for p in deps)) if deps is not None else None
        if key in self._memo:
            return self._memo[key]
        deepep = fig.deepep
        r = simulate_op(self.graph(fig.topology), fig.operation, model, gpus=fig.gpus, nbytes=fig.nbytes,
                        deepep=deepep.config() if deepep and fig.operation not in LL_OPS else None,
                        low_latency=deepep.low_latency() if deepep and fig.operation in LL_OPS else None)
        self._deps[fig] = tuple(sorted(r.params))
        value = r.metrics[_METRIC_KEY[fig.metric]]
        self._memo[(fig, tuple(get_param(model, p) for p in self._deps[fig]))] = value
        return value


def predict(fig: Figure, model: NcclModel) -> float:
    """The simulated value of ``fig`` in SI units (bytes/s or seconds)."""
    return Predictor()(fig, model)


def _probe(model: NcclModel, p: str) -> NcclModel:
    eff, lat, _ = RESTS_ON
    v = get_param(model, p)
    return set_params(model, {p: v * eff if is_eff(p) or is_rate(p) else v + lat})


def rests_on(figs: Sequence[Figure], model: NcclModel, pred: Predictor,
             params: Sequence[str] = PARAMS) -> dict[str, list[Figure]]:
    """Parameter -> the figures whose prediction it moves by >= 1% (see :data:`RESTS_ON`) at ``model``."""
    base = [pred(f, model) for f in figs]
    out: dict[str, list[Figure]] = {}
    for p in params:
        m = _probe(model, p)
        out[p] = [f for f, b in zip(figs, base) if abs(pred(f, m) / b - 1) >= RESTS_ON[2]]
    return out


@dataclass(frozen=True)
class ParamFit:
    """One fitted parameter: value, standard error (same unit; None if not determined), what it rests on."""

    name: str
    value: float
    se: float | None
    figures: tuple[str, ...]
    sources: tuple[str, ...]
    at_bound: bool
    by_source: tuple[tuple[str, float], ...] = ()  # (independence unit, the value its figures alone give)


@dataclass(frozen=True)
class NcclFit:
    """The fitted model, its parameters with their spread, and the residual of every fitted figure."""

    model: NcclModel
    params: tuple[ParamFit, ...]
    residuals: dict[str, float]  # figure id -> predicted / published - 1
    dof: int

    def param(self, name: str) -> ParamFit:
        return next(p for p in self.params if p.name == name)


class _Problem:
    """The least-squares problem over the parameters ``names``, in (efficiency, microseconds) units."""

    def __init__(self, figs: Sequence[Figure], names: Sequence[str], start: NcclModel, pred: Predictor,
                 deps: dict[str, list[Figure]]):
        self.figs, self.names, self.start, self.pred = list(figs), list(names), start, pred
        self.log_pub = np.log([f.value_si for f in figs])
        self.deps = [[self.figs.index(f) for f in deps[p]] for p in names]
        self._memo: tuple[bytes, np.ndarray] | None = None

    def model(self, x: np.ndarray) -> NcclModel:
        return set_params(self.start, {p: float(v) if is_eff(p) else round(float(v) * _unit(p), 12 if not is_rate(p) else 0)
                                       for p, v in zip(self.names, x)})

    def log_pred(self, x: np.ndarray) -> np.ndarray:
        key = x.tobytes()
        if self._memo is None or self._memo[0] != key:
            m = self.model(x)
            self._memo = (key, np.log([self.pred(f, m) for f in self.figs]))
        return self._memo[1]

    def residuals(self, x: np.ndarray) -> np.ndarray:
        return self.log_pred(x) - self.log_pub

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        base = self.log_pred(x)
        J = np.zeros((len(self.figs), len(self.names)))
        for j, p in enumerate(self.names):
            h = _STEP["eff"] if is_eff(p) else _STEP["rate_GBps"] if is_rate(p) else _STEP["lat_us"]
            xj = x.copy()
            xj[j] = x[j] - h if is_eff(p) and x[j] + h > _EFF_BOUNDS[1] else x[j] + h
            m = self.model(xj)
            for i in self.deps[j]:
                J[i, j] = (math.log(self.pred(self.figs[i], m)) - base[i]) / (xj[j] - x[j])
        return J


def _solve(figs: Sequence[Figure], names: list[str], start: NcclModel, pred: Predictor,
           deps: dict[str, list[Figure]], x0: Sequence[float] | None = None
           ) -> tuple[NcclModel, np.ndarray, np.ndarray, np.ndarray]:
    prob = _Problem(figs, names, start, pred, deps)
    lo = np.array([_EFF_BOUNDS[0] if is_eff(p) else _RATE_BOUNDS_GBPS[0] if is_rate(p) else 0.0 for p in names])
    hi = np.array([_EFF_BOUNDS[1] if is_eff(p) else _RATE_BOUNDS_GBPS[1] if is_rate(p) else _LAT_MAX_US
                   for p in names])
    if x0 is None:  # a fixed start: the fit never depends on a previous one
        x0 = [0.8 if is_eff(p) else _RATE_START_GBPS if is_rate(p) else 1.0 for p in names]
    x0 = np.clip(np.array(x0, dtype=float), lo + 1e-9, hi - 1e-9)  # trf starts strictly inside
    res = least_squares(prob.residuals, x0, jac=prob.jacobian, bounds=(lo, hi), method="trf", x_scale="jac",
                        xtol=1e-6, ftol=1e-8)
    # 4 decimals of an efficiency, 1 ns of a latency, 1 MB/s of a rate: finer digits are noise of the
    # optimiser, and rounding them lets refits on other splits reuse predictions whose parameters did not move
    x = np.array([round(float(v), 4 if is_eff(p) else 3) for p, v in zip(names, res.x)])
    return prob.model(x), x, prob.residuals(x), prob.jacobian(x)


def _spread(J: np.ndarray, r: np.ndarray, x: np.ndarray, names: list[str], dof: int) -> list[float | None]:
    if dof <= 0:
        return [None] * len(names)
    s2 = float(r @ r) / dof
    cov = s2 * np.linalg.pinv(J.T @ J)
    return [float(math.sqrt(max(cov[j, j], 0.0))) * _unit(p) if np.any(J[:, j]) else None
            for j, p in enumerate(names)]


def _by_source(p: str, figs: Sequence[Figure], model: NcclModel, pred: Predictor) -> tuple[tuple[str, float], ...]:
    out = []
    for unit in sorted({f.source_unit for f in figs}):
        mine = [f for f in figs if f.source_unit == unit]
        m, x, _, _ = _solve(mine, [p], model, pred, {p: mine}, x0=[get_param(model, p) / _unit(p)])
        out.append((unit, get_param(m, p)))
    return tuple(out)


def fit_nccl_model(figs: Sequence[Figure], *, fit_on: str = DEFAULT_FIT_ON, name: str = "nccl-published",
                   pred: Predictor | None = None) -> NcclFit:
    """The NCCL model fitted on ``figs`` (the fit part of a split), starting from :func:`prior_model`."""
    if not figs:
        raise ConfigError("fit-on", f"{fit_on!r} selects no published figure")
    pred = pred or Predictor()
    # kernel rates start below every line rate (a bound that is absent cannot be found to bind)
    prior = set_params(prior_model(), {f"kernel_Bps.{t}": _RATE_START_GBPS * 1e9 for t in KERNEL_BOUND})
    deps = rests_on(figs, prior, pred)
    names = [p for p in PARAMS if deps[p]]
    for _ in range(_MAX_ROUNDS):
        model, x, r, J = _solve(figs, names, prior, pred, deps)
        deps = {p: sorted({*deps[p], *fs}, key=list(figs).index) for p, fs in rests_on(figs, model, pred).items()}
        grown = [p for p in PARAMS if deps[p] and p not in names]
        if not grown:
            break
        names = [p for p in PARAMS if p in names or p in grown]
    dof = len(figs) - len(names)
    se = _spread(J, r, x, names, dof)
    params, fitted = [], dict(prior.fitted)
    unfitted = [t for t in KERNEL_BOUND if f"kernel_Bps.{t}" not in names]
    if unfitted:  # a kernel rate no fitted figure rests on is no bound at all, not the solver's start
        model = model.model_copy(update={"kernel_Bps": {t: v for t, v in model.kernel_Bps.items() if t not in unfitted}})
    for t in KERNEL_BOUND:
        fitted[f"bw_eff.{t}"] = f"not fitted: line rate, bounded by kernel_Bps.{t} (the kernels' rate)"
    for j, p in enumerate(names):
        fs = deps[p]
        units = tuple(sorted({f.source_unit for f in fs}))
        at_bound = bool(is_eff(p) and x[j] in _EFF_BOUNDS or is_rate(p) and x[j] in _RATE_BOUNDS_GBPS
                        or not is_eff(p) and not is_rate(p) and x[j] in (0.0, _LAT_MAX_US))
        params.append(ParamFit(p, get_param(model, p), se[j], tuple(f.id for f in fs), units, at_bound,
                               _by_source(p, fs, model, pred)))
        fitted[p] = f"fitted on {', '.join(f.id for f in fs)} ({len(units)} independent sources)"
    model = nccl_model_from_dict({
        **model.model_dump(), "name": name, "fit_on": fit_on, "fitted": fitted,
        "date": _dt.date.today().isoformat(),
        "source": f"dicesim accuracy --published --fit-on {fit_on!r}: {len(figs)} figures of traces/published",
    })
    residuals = {f.id: math.expm1(float(v)) for f, v in zip(figs, r)}
    return NcclFit(model=model, params=tuple(params), residuals=residuals, dof=dof)
