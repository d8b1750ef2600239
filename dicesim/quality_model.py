"""Predicted image-quality cost of a strategy's staleness, fitted from measurements (torch-free).

The measurements are the table ``python -m validate quality --model digits`` writes
(``dicesim/data/quality/digits.toml``): per strategy, the change of Fréchet distance (FD,
digit-classifier features) against ``sync`` and the deviation of the samples from the
``sync`` samples, on the trained ``digits`` DiT-MoE. Each row names its strategy as a preset
plus overrides, so the plan measured is rebuilt here with :func:`~dicesim.strategy.make_strategy`.

Features come from a lag table alone (:class:`dicesim.plan.LagTable`): a simulated run's own
(:func:`quality_columns` with ``lags``), or its plan's for any strategy, depth and step count:

- per (layer, step), the router-score-weighted lag of the two copies: the kept copy's lag
  weighted by its share of the router score, the dropped copy's by the rest (the share of the
  top-1 copy, ``top1_share``, is measured on the trained model and stored in the table);
- averaged over steps and over the shallow half (layers < L/2) and the deep half separately,
  because the deep layers proved more sensitive in the DICE paper and the fit should be free
  to weigh them differently;
- divided by the number of steps: a stale output is the network evaluated ``lag`` steps of
  size 1/T earlier, so to first order its error, and the drift it causes, scale with lag/T.
  The table's ``steps_check`` rows (other step counts) test this; docs/quality.md reports it.

Model: quality change = a_shallow * f_shallow + a_deep * f_deep with a >= 0 (non-negative
least squares, no intercept: ``sync`` costs nothing, and more staleness never helps).
It is checked by leave-one-out over the measured strategies (:func:`leave_one_out`).

Only expert-output lag is covered: the features are the lag of MoE outputs, and every fitted
point is an expert-parallel strategy. A sequence-parallel strategy (``sp``, ``distrifusion``) is
stale in its attention's keys and values instead, which these features do not describe; for it
every prediction is NaN and the basis says why (:func:`covers`). Rows of such strategies in the
table are measurements the fit leaves out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize

from dicesim.errors import ConfigError
from dicesim.plan import LagTable, build_plan
from dicesim.plan.staleness import kept_share
from dicesim.strategy import Strategy, make_strategy
from dicesim.tomlio import read_toml

DEFAULT_TABLE = Path(__file__).parent / "data" / "quality" / "digits.toml"
#: metric name -> (table column, unit)
METRICS: dict[str, tuple[str, str]] = {
    "fd_change": ("fd_change_mean", "FD units (digit-classifier features) above sync"),
    "deviation": ("deviation_mean", "relative L2 distance from the sync samples"),
}
FEATURES = ("shallow", "deep")
#: the one family whose staleness the features describe
COVERED_FAMILY = "expert_parallel"


def covers(strategy: Strategy) -> bool:
    """Whether the model predicts for ``strategy``: expert-output lag only (see the module docstring)."""
    return type(strategy).family == COVERED_FAMILY


def not_covered(strategy: Strategy) -> str:
    """The basis of a prediction the model does not make (NaN values)."""
    return (f"not predicted: the quality model is fitted on expert-output lag (expert-parallel strategies); "
            f"it does not cover the {strategy.lag_subject} of the {type(strategy).family} family (docs/quality.md)")


@dataclass(frozen=True)
class QualityPoint:
    """One measured strategy: its config and the table's numbers (means and spreads)."""

    label: str
    strategy: Strategy
    values: dict[str, float]
    num_steps: int


@dataclass(frozen=True)
class QualityTable:
    """The measurement table: metadata (model, layers, steps, top-1 share, command) and points."""

    path: Path
    meta: dict[str, Any]
    points: tuple[QualityPoint, ...]
    checks: tuple[QualityPoint, ...] = ()

    @property
    def num_layers(self) -> int:
        return int(self.meta["num_layers"])

    @property
    def top1_share(self) -> float:
        return float(self.meta["top1_share"])

    @property
    def fitted(self) -> tuple[QualityPoint, ...]:
        """The points the model is fitted on: the strategies whose staleness its features describe."""
        return tuple(p for p in self.points if covers(p.strategy))


@dataclass(frozen=True)
class QualityPrediction:
    """Predicted quality change of one strategy: ``value`` in ``unit``, and where it comes from."""

    metric: str
    value: float
    unit: str
    basis: str
    features: tuple[float, float]


@dataclass(frozen=True)
class QualityFit:
    """Non-negative coefficients per feature (shallow, deep) for one metric, and the fit's basis."""

    metric: str
    coef: tuple[float, float]
    basis: str

    def predict(self, features: np.ndarray) -> float:
        return float(np.dot(self.coef, features))


def _point(row: dict, default_steps: int, where: str) -> QualityPoint:
    try:
        label, preset = str(row["label"]), str(row["preset"])
        overrides = dict(row.get("overrides", {}))
        values = {k: float(v) for k, v in row.items() if k not in ("label", "preset", "overrides", "steps")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(where, f"bad quality row {row!r}: {exc}") from None
    strategy = make_strategy(preset, **overrides).model_copy(update={"name": label})
    return QualityPoint(label=label, strategy=strategy, values=values,
                        num_steps=int(row.get("steps", default_steps)))


def load_quality_table(path: str | Path = DEFAULT_TABLE) -> QualityTable:
    """Read a measurement table (TOML: ``[meta]``, ``[[strategy]]``, optional ``[[steps_check]]``)."""
    p = Path(path)
    doc = read_toml(p, what="quality table")
    meta = doc.get("meta", {})
    for key in ("num_layers", "num_steps", "top1_share"):
        if key not in meta:
            raise ConfigError(f"{p.name}: meta.{key}", "is required in a quality table")
    steps = int(meta["num_steps"])
    points = tuple(_point(r, steps, f"{p.name}: strategy") for r in doc.get("strategy", []))
    checks = tuple(_point(r, steps, f"{p.name}: steps_check") for r in doc.get("steps_check", []))
    if not points:
        raise ConfigError(f"{p.name}: strategy", "a quality table needs at least one measured strategy")
    return QualityTable(path=p, meta=dict(meta), points=points, checks=checks)


def staleness_features(strategy: Strategy, num_layers: int, num_steps: int, top1_share: float,
                       top_k: int = 2, lags: LagTable | None = None) -> np.ndarray:
    """(shallow, deep): router-weighted lag averaged over steps and each half's layers, over T.

    ``lags``: the lag table of a run of ``strategy`` (default: its plan's)."""
    lags = build_plan(strategy, num_layers, num_steps).lags if lags is None else lags
    share = kept_share(strategy.kept_copy(top_k), top1_share)
    weighted_TL = share * lags.kept + (1.0 - share) * lags.dropped
    per_layer_L = weighted_TL.mean(axis=0) / num_steps
    half = num_layers // 2
    shallow = per_layer_L[:half].mean() if half else 0.0
    return np.array([shallow, per_layer_L[half:].mean()])


def _design(table: QualityTable, points: tuple[QualityPoint, ...]) -> np.ndarray:
    return np.array([staleness_features(p.strategy, table.num_layers, p.num_steps, table.top1_share)
                     for p in points]).reshape(len(points), len(FEATURES))


def _target(points: tuple[QualityPoint, ...], metric: str) -> np.ndarray:
    if metric not in METRICS:
        raise ConfigError("metric", f"unknown quality metric {metric!r}", tuple(METRICS))
    return np.array([p.values[METRICS[metric][0]] for p in points])


def fit_quality(table: QualityTable, metric: str = "fd_change", exclude: tuple[str, ...] = ()) -> QualityFit:
    """Non-negative least squares of ``metric`` on the features, over the table's strategies
    (all measured at the table's step count) minus ``exclude``."""
    points = tuple(p for p in table.fitted if p.label not in exclude)
    coef, _ = scipy.optimize.nnls(_design(table, points), _target(points, metric))
    basis = f"{metric} = {_formula(coef)}; {_source(table, len(points))}"
    return QualityFit(metric=metric, coef=(float(coef[0]), float(coef[1])), basis=basis)


def _formula(coef: np.ndarray | tuple[float, float]) -> str:
    return f"{coef[0]:.3g} f_shallow + {coef[1]:.3g} f_deep"


def _source(table: QualityTable, count: int) -> str:
    m = table.meta
    return (f"f = router-weighted lag/T of the shallow/deep half; non-negative least squares on {count} strategies "
            f"measured on the {m.get('model', '?')} DiT-MoE ({table.num_layers} layers, {m['num_steps']} steps, "
            f"{m.get('seeds', '?')} seeds; {table.path.name}, docs/quality.md)")


def _extrapolation(table: QualityTable, num_layers: int, num_steps: int) -> str:
    same = num_layers == table.num_layers and num_steps == int(table.meta["num_steps"])
    return "" if same else f"; extrapolated to {num_layers} layers, {num_steps} steps"


def _fitted(table: QualityTable | None) -> tuple[QualityTable, dict[str, QualityFit]]:
    """``table`` (default: the committed one) and its fit of every metric."""
    if table is None:
        return _builtin_fits()
    return table, {m: fit_quality(table, m) for m in METRICS}


@functools.lru_cache(maxsize=1)
def _builtin_fits() -> tuple[QualityTable, dict[str, QualityFit]]:
    # The committed table is package data, read-only: fitting it once per process keeps a
    # sweep's per-configuration cost to the features of its own plan (the fit takes ~25 ms).
    return _fitted(load_quality_table())


def predict_quality(strategy: Strategy | str, num_layers: int, num_steps: int, *, metric: str = "fd_change",
                    top1_share: float | None = None, table: QualityTable | None = None) -> QualityPrediction:
    """Predicted quality change of ``strategy`` on a ``num_layers``-layer model sampled in ``num_steps``.

    ``metric``: ``fd_change`` (FD above sync) or ``deviation`` (relative L2 from the sync
    samples). ``top1_share``: router share of the top-1 copy (default: the measured model's).
    ``table``: the measurements to fit (default: the committed digits table). For a model
    other than the measured one the prediction carries the measured shape (which layers,
    how stale) to it; the magnitude is an extrapolation, and ``basis`` says so.
    """
    tab, fits = _fitted(table)
    strat = make_strategy(strategy) if isinstance(strategy, str) else strategy
    if not covers(strat):
        return QualityPrediction(metric=metric, value=float("nan"), unit=METRICS[metric][1], basis=not_covered(strat),
                                 features=(float("nan"), float("nan")))
    share = tab.top1_share if top1_share is None else top1_share
    fit = fits[metric] if metric in fits else fit_quality(tab, metric)
    feats = staleness_features(strat, num_layers, num_steps, share)
    basis = fit.basis + _extrapolation(tab, num_layers, num_steps)
    return QualityPrediction(metric=metric, value=fit.predict(feats), unit=METRICS[metric][1], basis=basis,
                             features=(float(feats[0]), float(feats[1])))


def quality_columns(strategy: Strategy, num_layers: int, num_steps: int, top1_share: float | None = None,
                    table: QualityTable | None = None, lags: LagTable | None = None) -> dict[str, Any]:
    """The columns ``simulate``/``compare``/``sweep`` report: both predictions and their basis
    (NaN, with the reason as basis, for a strategy the model does not cover).

    ``lags``: the run's own lag table (after a simulation); without it, the plan's."""
    if not covers(strategy):
        return {"pred_fd_change": float("nan"), "pred_deviation": float("nan"), "quality_basis": not_covered(strategy)}
    tab, fits = _fitted(table)
    fd_fit, dev_fit = fits["fd_change"], fits["deviation"]
    share = tab.top1_share if top1_share is None else top1_share
    feats = staleness_features(strategy, num_layers, num_steps, share, lags=lags)
    basis = (f"FD change = {_formula(fd_fit.coef)}, deviation = {_formula(dev_fit.coef)}; "
             f"{_source(tab, len(tab.fitted))}{_extrapolation(tab, num_layers, num_steps)}")
    return {"pred_fd_change": fd_fit.predict(feats), "pred_deviation": dev_fit.predict(feats), "quality_basis": basis}


def leave_one_out(table: QualityTable, metric: str = "fd_change") -> list[tuple[str, float, float]]:
    """(label, measured, predicted by a fit without that strategy) for every non-sync strategy."""
    out = []
    for p in table.fitted:
        if p.strategy.is_async:
            fit = fit_quality(table, metric, exclude=(p.label,))
            feats = staleness_features(p.strategy, table.num_layers, p.num_steps, table.top1_share)
            out.append((p.label, p.values[METRICS[metric][0]], fit.predict(feats)))
    return out


def rank_agreement(measured: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and the share of strategy pairs both order the same way (ties: half)."""
    import scipy.stats  # only here: the simulator's own path never needs it

    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    varied = len(measured) > 2 and np.ptp(measured) > 0 and np.ptp(predicted) > 0
    rho = float(scipy.stats.spearmanr(measured, predicted).statistic) if varied else float("nan")
    agree, pairs = 0.0, 0
    for i in range(len(measured)):
        for j in range(i + 1, len(measured)):
            a, b = np.sign(measured[i] - measured[j]), np.sign(predicted[i] - predicted[j])
            agree += 1.0 if a == b and a != 0 else 0.5 if a == 0 or b == 0 else 0.0
            pairs += 1
    return rho, agree / pairs if pairs else float("nan")
