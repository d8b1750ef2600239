"""Which executor runs a strategy: each family's rank and single-process entry points, by family name.

A family's executor lives in its own module (expert parallelism: :mod:`validate.executor.worker`
over :mod:`validate.executor.runner`; sequence parallelism: :mod:`validate.executor.sequence`); the
launcher and the quality study reach it only through :func:`run_rank` and :func:`run_emulated`.
"""

from __future__ import annotations

from typing import Any

import torch

from validate.executor import sequence, worker
from validate.executor.worker import GroupCache, RankResult, RunSpec

#: family name -> (the run of one rank of a process group, the same plan in one process)
_EXECUTORS = {
    "expert_parallel": (worker.run_rank, worker.run_emulated),
    "sequence": (sequence.run_rank, sequence.run_emulated),
}


def _executor(spec: RunSpec) -> tuple[Any, Any]:
    family = type(spec.strategy).family
    if family not in _EXECUTORS:
        raise ValueError(f"no executor for strategy family {family!r}")
    return _EXECUTORS[family]


def run_rank(spec: RunSpec, *, rank: int, world_size: int, device: torch.device, groups: GroupCache) -> RankResult:
    """Run ``spec`` on this rank of an initialised default process group, with its family's executor."""
    return _executor(spec)[0](spec, rank=rank, world_size=world_size, device=device, groups=groups)


def run_emulated(spec: RunSpec, world_size: int, device: torch.device | str = "cpu", **kw: Any) -> RankResult:
    """``spec``'s plan for ``world_size`` ranks in one process, with its family's executor."""
    return _executor(spec)[1](spec, world_size, device, **kw)
