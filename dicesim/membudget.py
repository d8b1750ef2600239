"""How many simulations may run at once: bounded by the CPUs and the memory of this machine.

``compare``, ``sweep``, ``study`` and ``recommend`` run simulations in parallel worker
processes. One simulation inside every limit of docs/limits.md can still hold gigabytes (its
routing tables, and its events when it is recorded), so the number of workers is planned, not
taken on trust:

- at most one worker per usable CPU (``--workers 256`` on two CPUs is refused, not obeyed);
- at most as many as fit in ``MEMORY_BUDGET_FRACTION`` of the memory available now, each
  counted at its estimated peak (:func:`dicesim.limits.run_nbytes`);
- a single simulation that does not fit at all is refused before it starts.

Memory is read from ``/proc/meminfo`` (``MemAvailable``) and, inside a container, from the
cgroup's limit, whichever is smaller; where neither exists nothing is refused for memory.
A remote Dask cluster (``--scheduler``) plans its own workers: none of this applies there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dicesim.errors import ConfigError
from dicesim.limits import MEMORY_BUDGET_FRACTION, human_bytes, run_nbytes


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's total)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    if not limit.isascii() or not limit.isdigit() or not used.isascii() or not used.isdigit():
        return None  # "max": no limit
    return max(int(limit) - int(used), 0)


def available_nbytes() -> int | None:
    """Memory available to new processes now, or None when this system does not say."""
    known = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(known) if known else None


def scenario_nbytes(scenario: object, *, record: bool) -> int:
    """Estimated peak memory of simulating ``scenario`` (a :class:`~dicesim.scenario.Scenario`)."""
    preset = scenario.preset()  # type: ignore[attr-defined]
    ws = scenario.world_size  # type: ignore[attr-defined]
    return run_nbytes(layers=preset.depth, steps=scenario.steps, world_size=ws,  # type: ignore[attr-defined]
                      experts=preset.num_experts, group_size=min(ws, preset.num_experts), record=record)


def plan_workers(requested: int | None, per_run: Iterable[int], *, jobs: int, option: str = "--workers",
                 budget_nbytes: int | None = None, cpus: int | None = None) -> int:
    """The number of worker processes to start for ``jobs`` simulations whose estimated peaks
    are ``per_run`` (the largest counts); 0 runs them in this process.

    ``requested`` None picks the most that fit (at least 1); an explicit number past the CPUs
    or the memory is refused with one line naming ``option`` and what would fit. ``budget_nbytes``
    and ``cpus`` default to this machine's (tests pass their own).
    """
    peak = max(per_run, default=0)
    cpus = usable_cpus() if cpus is None else cpus
    if budget_nbytes is None:
        avail = available_nbytes()
        budget_nbytes = None if avail is None else int(avail * MEMORY_BUDGET_FRACTION)
    if budget_nbytes is not None and peak > budget_nbytes:
        raise ConfigError("memory", f"one simulation needs about {human_bytes(peak)}, more than the "
                          f"{human_bytes(budget_nbytes)} this machine has available for it; use fewer steps, GPUs or "
                          "a run without --out", "see docs/limits.md")
    fit = cpus if budget_nbytes is None or peak <= 0 else max(min(budget_nbytes // peak, cpus), 1)
    if requested is None:
        return max(min(fit, max(jobs, 1)), 1)
    if requested > cpus:
        raise ConfigError(option, f"{requested} worker processes on {cpus} usable CPUs", f"0..{cpus}")
    if requested > fit:
        raise ConfigError(option, f"{requested} workers x about {human_bytes(peak)} each need more than the "
                          f"{human_bytes(budget_nbytes or 0)} available", f"0..{fit}")
    return requested


def points_nbytes(base: object, points: Iterable[dict], *, record: bool = False) -> int:
    """The largest estimated peak among the configurations ``points`` (``{axis: value}`` on the
    scenario ``base``), from the four fields that size a run; configurations whose model cannot
    be built are left out (their evaluation reports them)."""
    from dicesim.models import get_model

    b = base.model_dump()  # type: ignore[attr-defined]
    sizes = {(p.get("model", b["model"]), p.get("num_experts", b["num_experts"]), p.get("steps", b["steps"]),
              p.get("world_size", b["world_size"])) for p in points}
    peak = 0
    for model, experts, steps, ws in sizes:
        try:
            preset = get_model(str(model), experts if isinstance(experts, int) else None)
            steps, ws = int(steps), int(ws)
        except (ConfigError, TypeError, ValueError):
            continue
        peak = max(peak, run_nbytes(layers=preset.depth, steps=steps, world_size=ws, experts=preset.num_experts,
                                    group_size=min(ws, preset.num_experts), record=record))
    return peak
