"""Size and range limits of an executor run, checked in the launcher before any rank starts.

Limits come from :mod:`dicesim.limits` (docs/limits.md). The checkpoint is opened here too,
so a corrupt, hostile or oversized file is one ConfigError (exit 2) instead of a failure in
every rank; whether its keys and shapes fit the model is checked where the model is built.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from dicesim.errors import ConfigError
from dicesim.limits import INT64_MAX, MAX_BATCH, MAX_EXECUTOR_RANKS, MAX_STEPS, check_range

#: CFG guidance scales past this are not a sampling setting but an overflow
MAX_GUIDANCE_SCALE = 1e6


class RunFields(Protocol):
    """The fields of an executor run this module checks (:class:`validate.executor.worker.RunSpec`)."""

    steps: int
    batch: int
    seed: int
    guidance_scale: float | None
    checkpoint: str | None
    strategy: Any
    preset: Any


def check_spec_limits(spec: RunFields, world_size: int) -> None:
    """ConfigError naming the first field of ``spec`` (or ``world_size``) out of range."""
    check_range("world_size", world_size, 1, MAX_EXECUTOR_RANKS)
    check_range("steps", spec.steps, 1, MAX_STEPS)
    check_range("batch", spec.batch, 1, MAX_BATCH)
    check_range("seed", spec.seed, 0, INT64_MAX - 1)  # the labels generator is seeded with seed + 1
    check_range("strategy.seed", getattr(spec.strategy, "seed", 0), 0, INT64_MAX)  # a family without one: 0
    g = spec.guidance_scale
    if g is not None and (not math.isfinite(g) or abs(g) > MAX_GUIDANCE_SCALE):
        raise ConfigError("guidance_scale", f"{g!r} is not a usable scale",
                          f"finite numbers up to {MAX_GUIDANCE_SCALE:g}, or < 0 to turn CFG off")
    if spec.checkpoint is not None:
        from validate.model.checkpoint import checkpoint_limit_nbytes, read_checkpoint

        read_checkpoint(spec.checkpoint, max_bytes=checkpoint_limit_nbytes(spec.preset))
