"""One result schema for predicted (simulator) and measured (executor) runs: ``dicesim-result/1``.

Both halves describe a run with the same flat record (:class:`RunResult`): what ran
(identity fields), the headline numbers with their units in their names, and per-step
lists. ``dicesim simulate --json``, ``python -m validate run --json``, the compare, sweep,
study and recommend tables and every report use these names, so a measured and a predicted
run land in one table (:func:`results_frame`) and one plot. Definitions (docs/results.md):

- ``step_latency_s`` is the mean over all steps (``total_latency_s / steps``);
  ``steady_step_latency_s`` leaves out step 0 (first-call allocations, and the synchronous
  first step of every asynchronous strategy), as calibration does;
- communication figures are means over ranks; lags count steps over token-expert copies.

Older documents (the simulator's ``mean_lag``/``weighted_lag``, the executor's
``mean_step_latency_s``/``peak_held_nbytes`` and its per-step ``step_latency_s`` list) are
still read: :func:`dicesim.result_files.load_results` maps them onto the schema.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from dicesim.errors import config_error_from_pydantic
from dicesim.evidence import Assumption, ErrorBand
from dicesim.limits import MAX_STEPS, MAX_WORLD_SIZE

if TYPE_CHECKING:
    from dicesim.scenario import Scenario

RESULT_SCHEMA = "dicesim-result/1"

#: the quality model's columns for a configuration (``pred_fd_change``, ``pred_deviation``,
#: ``quality_basis``); :func:`dicesim.compare.predicted_quality` is the built-in one
QualityFn = Callable[["Scenario"], dict[str, Any]]


@dataclass(frozen=True)
class ResultField:
    """One field of the schema: its unit and what it means (docs/results.md is built from these)."""

    name: str
    unit: str
    meaning: str


#: the scalar metrics, in table order
METRICS: tuple[ResultField, ...] = (
    ResultField("step_latency_s", "s", "mean step latency over all steps (total_latency_s / steps)"),
    ResultField("steady_step_latency_s", "s", "mean step latency of steps 1.. (step 0 is warm-up on both sides)"),
    ResultField("total_latency_s", "s", "whole sampling loop"),
    ResultField("exposed_comm_step_s", "s", "compute stream waiting for communication, per step, mean over ranks"),
    ResultField("exposed_comm_s", "s", "the same, summed over the run"),
    ResultField("overlap_frac", "fraction", "communication time during which compute runs / communication time"),
    ResultField("comm_frac", "fraction", "communication in flight / run time"),
    ResultField("mean_lag_steps", "steps", "mean lag of the expert outputs used, over token-expert copies "
                "(sequence parallelism: of the other ranks' K/V; `extra.lag_of` says which)"),
    ResultField("weighted_lag_steps", "steps", "the same weighted by router score (kept vs dropped copy)"),
    ResultField("max_lag_steps", "steps", "largest lag of any copy, layer and step"),
    ResultField("peak_buffer_bytes", "bytes", "buffers held across steps (stale expert outputs, K/V), peak over ranks "
                "and steps"),
    ResultField("peak_memory_bytes", "bytes", "memory per GPU on the fullest rank: weights, activations, held "
                "buffers, runtime allowance (docs/memory.md; by holder in `extra.memory_by_holder`)"),
    ResultField("memory_capacity_bytes", "bytes", "the GPU's memory, from the hardware profile (NaN: not known)"),
    ResultField("memory_margin_bytes", "bytes", "capacity minus peak_memory_bytes; negative: does not fit"),
    ResultField("shadow_rel_l2_mean", "ratio", "executor --shadow: relative L2 error of stale MoE outputs, mean"),
    ResultField("shadow_rel_l2_max", "ratio", "executor --shadow: the same, largest"),
    ResultField("pred_fd_change", "FD", "quality model: predicted Frechet-distance increase over sync, lower is "
                "better (docs/quality.md; the basis is in `extra.quality_basis`)"),
    ResultField("pred_deviation", "ratio", "quality model: predicted relative L2 distance of the samples from sync's"),
)
METRIC_NAMES: tuple[str, ...] = tuple(f.name for f in METRICS)
IDENTITY: tuple[ResultField, ...] = (
    ResultField("source", "", "`sim` (predicted) or `executor` (measured)"),
    ResultField("label", "", "one-line description of the run"),
    ResultField("strategy", "", "strategy name (preset, or preset with overrides)"),
    ResultField("strategy_desc", "", "scheme and modifiers in words"),
    ResultField("model", "", "model preset"),
    ResultField("num_experts", "experts", "routed experts"),
    ResultField("topology", "", "simulated topology (simulator)"),
    ResultField("backend", "", "torch.distributed backend (executor)"),
    ResultField("device", "", "device the executor ran on"),
    ResultField("world_size", "GPUs", "ranks"),
    ResultField("batch", "images", "images per rank (CFG doubles what travels)"),
    ResultField("image_size", "px", "image side"),
    ResultField("steps", "steps", "denoising steps"),
    ResultField("quality_basis", "", "what pred_fd_change and pred_deviation rest on (data, fit, extrapolation)"),
    ResultField("profile", "", "hardware profile the simulator timed the run with (simulator)"),
    ResultField("profile_basis", "", "what that profile rests on: measured (fitted from traces) or datasheet"),
)
#: table columns flattened from ``error_band`` (simulated runs; empty for measured ones)
BAND: tuple[ResultField, ...] = (
    ResultField("step_latency_low_s", "s", "error band of step_latency_s, low end (docs/trust.md)"),
    ResultField("step_latency_high_s", "s", "error band of step_latency_s, high end"),
    ResultField("band_covers", "", "what the band covers: `step` (measured whole steps), `communication` "
                "(measured collectives only) or `none`"),
)
#: nested fields of a simulated record (JSON only; tables carry their flat columns above)
NESTED: tuple[ResultField, ...] = (
    ResultField("error_band", "", "the band: low_s, high_s, covers, family, the held-out collective and step errors "
                "it uses, compute_basis (measured or datasheet), profile and a statement (dicesim/evidence.py)"),
    ResultField("assumptions", "", "the parameters the prediction rests on: parameter, value, status (measured, "
                "fitted, cited, assumed), source, on_bottleneck"),
)
#: whether the run fits its GPUs' memory (simulator; docs/memory.md)
VERDICT: tuple[ResultField, ...] = (
    ResultField("fits", "", "peak_memory_bytes <= memory_capacity_bytes (null: capacity unknown or not predicted)"),
    ResultField("memory_note", "", "one line: fits or not, what it needs of what, and what holds it"),
)
PER_STEP: tuple[ResultField, ...] = (
    ResultField("per_step_latency_s", "s", "latency of every step (slowest rank)"),
    ResultField("per_step_exposed_comm_s", "s", "exposed communication of every step, mean over ranks"),
)

#: old names -> schema names, for documents written before the schema
_LEGACY_SIM = {"mean_lag": "mean_lag_steps", "weighted_lag": "weighted_lag_steps", "max_lag": "max_lag_steps"}
_LEGACY_EXECUTOR = {
    "mean_step_latency_s": "steady_step_latency_s", "total_exposed_comm_s": "exposed_comm_s",
    "score_weighted_mean_lag_steps": "weighted_lag_steps", "peak_held_nbytes": "peak_buffer_bytes",
    "batch_per_rank": "batch", "image_size_px": "image_size",
}
#: legacy table columns (sweep chunks, compare tables) -> schema names
LEGACY_COLUMNS: dict[str, str] = dict(_LEGACY_SIM)


class RunResult(BaseModel):
    """One run, predicted or measured, in the shared schema (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_: Literal["dicesim-result/1"] = Field(RESULT_SCHEMA, alias="schema")
    source: Literal["sim", "executor"]
    label: str = ""
    strategy: str
    strategy_desc: str = ""
    model: str
    num_experts: Optional[int] = None
    topology: Optional[str] = None
    backend: Optional[str] = None
    device: Optional[str] = None
    world_size: int = Field(ge=1)
    batch: int = Field(ge=1)
    image_size: int = Field(ge=1)
    steps: int = Field(ge=1)
    step_latency_s: float = Field(ge=0)
    steady_step_latency_s: float = Field(ge=0)
    total_latency_s: float = Field(ge=0)
    exposed_comm_step_s: Optional[float] = None
    exposed_comm_s: Optional[float] = None
    overlap_frac: Optional[float] = None
    comm_frac: Optional[float] = None
    mean_lag_steps: float = Field(ge=0)
    weighted_lag_steps: float = Field(ge=0)
    max_lag_steps: float = Field(ge=0)
    peak_buffer_bytes: float = Field(ge=0)
    peak_memory_bytes: Optional[float] = None
    memory_capacity_bytes: Optional[float] = None
    memory_margin_bytes: Optional[float] = None
    shadow_rel_l2_mean: Optional[float] = None
    shadow_rel_l2_max: Optional[float] = None
    pred_fd_change: Optional[float] = None
    pred_deviation: Optional[float] = None
    quality_basis: str = ""
    error_band: Optional[ErrorBand] = None
    assumptions: list[Assumption] = Field(default_factory=list)
    profile: str = ""
    profile_basis: str = ""
    fits: Optional[bool] = None
    memory_note: str = ""
    per_step_latency_s: list[float] = Field(default_factory=list)
    per_step_exposed_comm_s: list[float] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The scalar fields as one table row (per-step lists, ``extra`` and nested fields left out; the
        band as ``step_latency_low_s``, ``step_latency_high_s`` and ``band_covers``)."""
        row = {k: v for k, v in self.model_dump(by_alias=True).items()
               if k not in ("schema", "extra", "error_band", "assumptions") and not k.startswith("per_step_")}
        b = self.error_band
        row.update(step_latency_low_s=b.low_s if b else math.nan, step_latency_high_s=b.high_s if b else math.nan,
                   band_covers=b.covers if b else "")
        return row

    def to_json(self, **kw: Any) -> str:
        """Strict JSON (no NaN or infinity: missing values are ``null``)."""
        return json.dumps(_finite(self.model_dump(mode="json", by_alias=True)), allow_nan=False, **kw)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _steady(per_step: Sequence[float]) -> float:
    return float(np.mean(per_step[1:])) if len(per_step) > 1 else float(np.mean(per_step)) if len(per_step) else 0.0


def sim_metrics(summary: dict[str, Any], per_step: pd.DataFrame | None = None) -> dict[str, float]:
    """The schema's metrics from a simulator summary (``SimResult.summary()``) and per-step table."""
    out = {_LEGACY_SIM.get(k, k): float(v) for k, v in summary.items()
           if _LEGACY_SIM.get(k, k) in METRIC_NAMES and isinstance(v, (int, float, np.number))}
    steps = int(round(summary["total_latency_s"] / summary["step_latency_s"])) if summary.get("step_latency_s") else 1
    if per_step is not None and len(per_step):
        lat = per_step["latency_s"].to_numpy(dtype=float)
        out["steady_step_latency_s"] = _steady(lat)
        out["exposed_comm_step_s"] = float(per_step["exposed_comm_s"].mean())
    else:
        out.setdefault("steady_step_latency_s", float(summary["step_latency_s"]))
        out["exposed_comm_step_s"] = float(summary.get("exposed_comm_s", math.nan)) / max(steps, 1)
    return out


def result_from_sim(scenario: Scenario, summary: dict[str, Any], per_step: pd.DataFrame | None = None, *,
                    error_band: ErrorBand | None = None, assumptions: Iterable[Assumption] = ()) -> RunResult:
    """The record of one simulated run (``summary`` may carry the quality model's columns; ``error_band``
    and ``assumptions``: :func:`dicesim.trust.assess_run`'s)."""
    metrics = sim_metrics(summary, per_step)
    verdict = {f.name: summary[f.name] for f in VERDICT if summary.get(f.name) is not None}
    kept = {k: v for k, v in summary.items() if _LEGACY_SIM.get(k, k) not in METRIC_NAMES
            and k not in ("quality_basis", "profile", "profile_basis", *verdict)}
    lists = {}
    if per_step is not None and len(per_step):
        lists = {"per_step_latency_s": per_step["latency_s"].astype(float).tolist(),
                 "per_step_exposed_comm_s": per_step["exposed_comm_s"].astype(float).tolist()}
    preset = scenario.preset()
    return RunResult(
        source="sim", label=scenario.label(), strategy=scenario.strategy.name,
        strategy_desc=scenario.strategy.describe(), model=scenario.model, num_experts=preset.num_experts,
        topology=scenario.topology, world_size=scenario.world_size, batch=scenario.batch,
        image_size=scenario.image_size, steps=scenario.steps, quality_basis=str(summary.get("quality_basis", "")),
        profile=str(summary.get("profile", "")), profile_basis=str(summary.get("profile_basis", "")),
        error_band=error_band, assumptions=list(assumptions), **verdict, **metrics, **lists,
        extra=_finite({**kept, "lag_of": scenario.strategy.lag_subject}))


class ExecutorTimes(BaseModel):
    """The per-step lists of an executor summary that its record is computed from."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    step_latency_s: list[Annotated[float, Field(ge=0)]] = Field(min_length=1, max_length=MAX_STEPS)
    exposed_comm_s: list[Annotated[float, Field(ge=0)]] = Field(default_factory=list, max_length=MAX_STEPS)
    exposed_comm_s_per_rank: Optional[list[list[Annotated[float, Field(ge=0)]]]] = Field(
        None, max_length=MAX_WORLD_SIZE)
    steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS)

    @field_validator("exposed_comm_s_per_rank")
    @classmethod
    def _one_value_per_step(cls, rows: Optional[list[list[float]]], info: ValidationInfo) -> Optional[list[list[float]]]:
        steps = len(info.data.get("step_latency_s", ()))
        if rows and any(len(r) != steps for r in rows):
            raise ValueError(f"needs one list per rank with one value per step ({steps})")
        return rows


def result_from_executor(summary: dict[str, Any], *, where: str = "executor summary") -> RunResult:
    """The record of one executed run from :func:`validate.executor.summary.summarize`'s dict (any version);
    ``where`` starts the one-line error that a summary not fitting the schema raises."""
    try:
        times = ExecutorTimes(**summary)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, where, model=ExecutorTimes) from None
    s = {k: v for k, v in summary.items() if k not in ExecutorTimes.model_fields or k == "steps"}
    lat, per_rank = times.step_latency_s, times.exposed_comm_s_per_rank
    # mean over ranks, as the simulator counts; summaries from before the per-rank lists have the max
    exposed = np.mean(np.asarray(per_rank, dtype=float), axis=0).tolist() if per_rank else times.exposed_comm_s
    steps = times.steps or len(lat)
    renamed = {_LEGACY_EXECUTOR.get(k, k): v for k, v in s.items()}
    fields = {k: renamed.pop(k) for k in list(renamed) if k in RunResult.model_fields and k not in METRIC_NAMES}
    metrics = {k: renamed.pop(k) for k in list(renamed) if k in METRIC_NAMES}
    metrics.update(step_latency_s=float(np.sum(lat)) / max(steps, 1), steady_step_latency_s=_steady(lat),
                   total_latency_s=float(np.sum(lat)))
    if exposed:
        metrics.update(exposed_comm_s=float(np.sum(exposed)), exposed_comm_step_s=float(np.mean(exposed)))
    fields.setdefault("label", f"{fields.get('model')} x{fields.get('world_size')} {fields.get('backend')} "
                               f"b{fields.get('batch')} {fields.get('image_size')}px {steps} steps "
                               f"{fields.get('strategy')} (measured)")
    try:
        return RunResult(source="executor", **fields, **metrics, per_step_latency_s=lat,
                         per_step_exposed_comm_s=exposed, extra=_finite(renamed))
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, where, model=RunResult) from None


def results_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    """One row per run with the schema's scalar columns (identity first, then metrics)."""
    cols = [f.name for f in IDENTITY] + list(METRIC_NAMES) + [f.name for f in VERDICT] + [f.name for f in BAND]
    df = pd.DataFrame([r.row() for r in results], columns=cols)
    for c in (*METRIC_NAMES, "step_latency_low_s", "step_latency_high_s"):
        df[c] = df[c].astype("float64")
    return df


def per_step_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    """Long table ``label, source, step, latency_s, exposed_comm_s`` of every run's per-step lists."""
    rows = []
    for r in results:
        exposed = r.per_step_exposed_comm_s or [math.nan] * len(r.per_step_latency_s)
        rows += [(r.label, r.source, t, lat, exp) for t, (lat, exp) in enumerate(zip(r.per_step_latency_s, exposed))]
    return pd.DataFrame(rows, columns=["label", "source", "step", "latency_s", "exposed_comm_s"])


def rename_legacy_columns(df: pd.DataFrame) -> pd.DataFrame:
    """A table with pre-schema metric columns (``mean_lag``, ...) renamed to the schema's names."""
    return df.rename(columns={k: v for k, v in LEGACY_COLUMNS.items() if k in df.columns and v not in df.columns})
