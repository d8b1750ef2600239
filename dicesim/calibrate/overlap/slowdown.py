"""Compute slowed by communication, read off two event tables in the shared schema.

A strategy's run and the ``sync`` run of the same shape execute the same fixed-shape ops
every step (attention half, gate, shared expert, local combine), but in ``sync`` no exchange
is in flight while they run (each is awaited at once). So

    slowdown = (time of those ops per step in the run) / (the same in sync) - 1

over steps >= :data:`~dicesim.calibrate.measure.FIRST_STEP`. The routed experts are left out:
on conditional-communication skip steps they run fewer rows, which is less work, not slower
work. One definition for both halves: executor traces (op names mapped through
:data:`~dicesim.calibrate.timeline.NAME_TO_KIND`) and simulator traces recorded with every op
its own event (``simulate(..., record=True)``).
"""

from __future__ import annotations

import pandas as pd

from dicesim.calibrate.measure import FIRST_STEP
from dicesim.calibrate.timeline import NAME_TO_KIND

FIXED_KINDS: tuple[str, ...] = ("attention", "gate", "shared_expert", "local_combine")


def fixed_op_s_per_step(events: pd.DataFrame) -> float:
    """Mean over steps >= FIRST_STEP of the summed duration of the fixed-shape compute ops (s)."""
    ev = events[(events["stream"] == "compute") & (events["kind"] == "compute") & (events["step"] >= FIRST_STEP)]
    ev = ev[ev["name"].map(lambda n: NAME_TO_KIND.get(n) in FIXED_KINDS)]
    if ev.empty:
        raise ValueError("no fixed-shape compute ops (attention, gate, shared_expert, local_combine) after step 0")
    dur_s = (ev["end_us"] - ev["start_us"]) / 1e6
    return float(dur_s.groupby(ev["step"]).sum().mean())


def compute_slowdown(events: pd.DataFrame, sync_events: pd.DataFrame) -> float:
    """Relative slow-down of the fixed-shape ops of ``events`` against the ``sync`` run's."""
    return fixed_op_s_per_step(events) / fixed_op_s_per_step(sync_events) - 1.0
