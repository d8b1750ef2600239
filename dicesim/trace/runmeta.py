"""Typed view of a trace's run metadata: what calibration and measured routing read from it.

``TraceMeta.scenario`` and ``TraceMeta.extra`` are free-form JSON (each writer adds its own
keys). The fields that numeric code uses are parsed here, once, into validated values:
the run spec (model, sizes, dtype, CFG, strategy), the router histogram and the
expert-parallel groups. Every problem is one :class:`~dicesim.errors.TraceError` naming
the file, the field and the allowed values.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dicesim.errors import TraceError, config_error_from_pydantic
from dicesim.limits import (
    INT64_MAX, MAX_BATCH, MAX_EXPERTS, MAX_IMAGE_PX, MAX_STEPS, MAX_TRACE_EVENTS, MAX_WORLD_SIZE,
)
from dicesim.models import DTYPE_NBYTES
from dicesim.trace.schema import TraceMeta

HIST_AXES = ["rank", "step", "layer", "expert"]
_ALLOWED = {"dtype": tuple(DTYPE_NBYTES)}


class ScenarioMeta(BaseModel):
    """``meta.scenario`` as calibration reads it; keys of other writers pass through unchecked.

    Executor traces say ``batch_per_rank``, simulator traces ``batch``, GPU op-timing
    benchmarks ``ep_world`` for the group they timed one rank of.
    """

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True)

    model: Optional[str] = None
    num_experts: Optional[int] = Field(None, ge=1, le=MAX_EXPERTS)
    world_size: Optional[int] = Field(None, ge=1, le=MAX_WORLD_SIZE)
    ep_world: Optional[int] = Field(None, ge=1, le=MAX_WORLD_SIZE)
    batch: Optional[int] = Field(None, ge=1, le=MAX_BATCH)
    batch_per_rank: Optional[int] = Field(None, ge=1, le=MAX_BATCH)
    image_size: Optional[int] = Field(None, ge=16, le=MAX_IMAGE_PX)
    steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS)
    dtype: Optional[Literal["bf16", "fp16", "fp32"]] = None
    cfg: Optional[bool] = None
    guidance_scale: Optional[float] = None
    experts_per_rank: Optional[int] = Field(None, ge=1, le=MAX_EXPERTS)
    recv_rows: Optional[int] = Field(None, ge=0, le=INT64_MAX)
    strategy: Union[str, dict, None] = None


def scenario_meta(meta: TraceMeta, where: object) -> ScenarioMeta:
    """The validated run spec of ``meta``; TraceError names the first bad field."""
    try:
        return ScenarioMeta(**meta.scenario)
    except ValidationError as exc:
        raise TraceError(where, f"metadata {config_error_from_pydantic(exc, 'scenario', _ALLOWED).one_line()}") from None


def router_hist(meta: TraceMeta, where: object, *, world_size: int | None = None, layers: int | None = None,
                experts: int | None = None) -> np.ndarray | None:
    """``extra.router_hist`` as int64 ``[rank, step, layer, expert]`` copies, or None when absent.

    Refused unless it is a regular 4-D array of non-negative integers with one entry per rank,
    layer and expert of the run (the sizes given; None checks only the limits).
    """
    hist = meta.extra.get("router_hist")
    if hist is None:
        return None
    axes = meta.extra.get("router_hist_axes", HIST_AXES)
    if axes != HIST_AXES:
        raise TraceError(where, f"metadata extra.router_hist_axes is {axes!r} (allowed: {HIST_AXES})")
    if not isinstance(hist, list):
        raise TraceError(where, f"metadata extra.router_hist is a {type(hist).__name__}, expected nested lists "
                                "[rank][step][layer][expert] of counts")
    try:
        arr = np.asarray(hist)
    except (ValueError, TypeError):
        raise TraceError(where, "metadata extra.router_hist is ragged; expected nested lists "
                                "[rank][step][layer][expert] of equal lengths") from None
    if arr.ndim != 4 or arr.dtype.kind not in "iu":
        raise TraceError(where, f"metadata extra.router_hist has shape {arr.shape} of {arr.dtype} values, expected "
                                "4-D integer counts [rank, step, layer, expert]")
    want = (world_size, layers, experts)
    have = (arr.shape[0], arr.shape[2], arr.shape[3])
    if any(w is not None and w != h for w, h in zip(want, have)) or not 1 <= arr.shape[1] <= MAX_STEPS \
            or min(have) < 1 or arr.shape[0] > MAX_WORLD_SIZE or arr.shape[3] > MAX_EXPERTS:
        shown = ", ".join("any" if w is None else str(w) for w in (world_size, "steps", layers, experts))
        raise TraceError(where, f"metadata extra.router_hist has shape {arr.shape}, expected ({shown}) for this "
                                f"run's ranks, steps (1..{MAX_STEPS}), layers and experts")
    if arr.size > MAX_TRACE_EVENTS or (arr < 0).any():
        raise TraceError(where, "metadata extra.router_hist needs non-negative counts "
                                f"(at most {MAX_TRACE_EVENTS:,} entries)")
    return arr.astype(np.int64)


def ep_groups(meta: TraceMeta, where: object, *, world_size: int) -> list[list[int]] | None:
    """``extra.ep_groups``: the expert-parallel groups, each a list of distinct ranks; None when absent."""
    groups = meta.extra.get("ep_groups")
    if groups is None:
        return None
    ok = isinstance(groups, list) and groups and all(
        isinstance(g, list) and g and all(type(r) is int and 0 <= r < world_size for r in g) for g in groups)
    if not ok or sorted(r for g in groups for r in g) != list(range(world_size)):
        raise TraceError(where, f"metadata extra.ep_groups must split ranks 0..{world_size - 1} into non-empty lists, "
                                "each rank once")
    return groups
