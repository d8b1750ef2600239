"""Per-rank event recording for the executor, in the shared ``dicesim-trace/1`` schema.

What lands where (one track per ``(rank, stream)``):

- ``compute`` / kind ``compute``: every op the rank runs (embed, attention, gate, permute,
  run_experts, shared_expert, local_combine, final), timed by the host wall clock on CPU and by
  CUDA events on GPU;
- ``compute`` / kind ``wait``: time the compute stream sat blocked on communication (the
  exposed communication); it never overlaps a compute op;
- ``comm`` (``comm:counts`` for a separate count communicator) / kind ``collective``: from
  issue to completion, the completion time taken from the backend's future callback.

Clocks: ranks on one host share ``CLOCK_MONOTONIC`` (offset 0); across hosts the offset is
taken right after a barrier (accurate to the barrier's skew). :func:`clock_offsets_ns` does
both and says which it used.
"""

from __future__ import annotations

import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from dicesim.trace import EventRecorder, TraceMeta, coerce_events
from dicesim.trace.schema import empty_events


class RankTracer:
    """Append-only log of one rank's events, plus per-step exposed-communication totals.

    ``enabled=False`` still measures exposed communication (the summary needs it) but keeps
    no event rows.
    """

    def __init__(self, rank: int, *, device: torch.device, enabled: bool = True):
        self.rank, self.enabled = rank, enabled
        self.clock = time.monotonic_ns
        self._cuda = device.type == "cuda"
        self._rows: list[tuple] = []  # times in host ns; converted at export
        self._cuda_ops: list[tuple] = []  # (name, layer, step, tok_step, flops, rows, start_ev, end_ev)
        self._cuda_base: tuple[Any, int] | None = None
        self.exposed_ns: dict[int, int] = defaultdict(int)
        if self._cuda:
            base = torch.cuda.Event(enable_timing=True)
            base.record()
            base.synchronize()
            self._cuda_base = (base, self.clock())

    @contextmanager
    def compute(self, name: str, *, layer: int = -1, step: int = -1, tok_step: int = -1,
                flops: float = 0.0, rows: int = 0) -> Iterator[None]:
        """Time the enclosed op on the compute stream."""
        if not self.enabled:
            yield
            return
        if self._cuda:
            start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start_ev.record()
            yield
            end_ev.record()
            self._cuda_ops.append((name, layer, step, tok_step, flops, rows, start_ev, end_ev))
            return
        start_ns = self.clock()
        yield
        self._rows.append(("compute", "compute", name, layer, step, tok_step, start_ns, self.clock(), 0, rows, flops))

    def sink(self, stream: str, kind: str, name: str, layer: int, step: int, tok_step: int,
             start_ns: int, end_ns: int, nbytes: int, rows: int) -> None:
        """Callback for the dispatcher: a collective interval or an exposed wait."""
        if kind == "wait":
            self.exposed_ns[step] += end_ns - start_ns
        if self.enabled:
            self._rows.append((stream, kind, name, layer, step, tok_step, start_ns, end_ns, nbytes, rows, 0.0))

    def resolve_cuda(self) -> None:
        """Turn recorded CUDA events into host-clock intervals (synchronises the device)."""
        if not self._cuda_ops:
            return
        torch.cuda.synchronize()
        base_ev, base_ns = self._cuda_base  # type: ignore[misc]
        for name, layer, step, tok_step, flops, rows, s_ev, e_ev in self._cuda_ops:
            s_ns = base_ns + int(base_ev.elapsed_time(s_ev) * 1e6)
            e_ns = base_ns + int(base_ev.elapsed_time(e_ev) * 1e6)
            self._rows.append(("compute", "compute", name, layer, step, tok_step, s_ns, max(e_ns, s_ns), 0, rows, flops))
        self._cuda_ops.clear()

    def rows(self) -> list[tuple]:
        """Raw rows (host ns) for shipping to the rank that writes the trace."""
        self.resolve_cuda()
        return list(self._rows)


def events_frame(rows_by_rank: dict[int, list[tuple]], offsets_ns: dict[int, int]) -> "Any":
    """One validated event table from every rank's raw rows, on rank 0's clock, zero-based."""
    rec = EventRecorder("executor")
    shifted = {r: [(row, offsets_ns.get(r, 0)) for row in rows] for r, rows in rows_by_rank.items()}
    if not any(shifted.values()):
        return empty_events()
    origin = min(row[6] + off for rows in shifted.values() for row, off in rows)
    for rank, rows in sorted(shifted.items()):
        for (stream, kind, name, layer, step, tok_step, s_ns, e_ns, nbytes, nrows, flops), off in rows:
            rec.add(rank, stream, kind, name, (s_ns + off - origin) / 1e3, (e_ns + off - origin) / 1e3,
                    layer=layer, step=step, tok_step=tok_step, nbytes=nbytes, rows=nrows, flops=flops)
    return coerce_events(rec.to_frame(validate=False))


def clock_offsets_ns(world_size: int, group: Any = None) -> tuple[dict[int, int], str]:
    """Offsets that put every rank's monotonic clock on rank 0's, and the method used.

    Collective: every rank must call it. Same host: the monotonic clock is shared, offsets are
    zero. Otherwise each rank's reading right after a barrier is matched to rank 0's.
    """
    import torch.distributed as dist

    dist.barrier(group=group)
    now_ns = time.monotonic_ns()
    mine = (socket.gethostname(), now_ns)
    every: list[Any] = [None] * world_size
    dist.all_gather_object(every, mine, group=group)
    hosts = {h for h, _ in every}
    if len(hosts) == 1:
        return {r: 0 for r in range(world_size)}, "shared-monotonic"
    ref = every[0][1]
    return {r: ref - t for r, (_, t) in enumerate(every)}, "barrier-offset"


def trace_meta(*, strategy: str, world_size: int, model: str, backend: str, device: str,
               scenario: dict[str, Any], extra: dict[str, Any]) -> TraceMeta:
    """Trace metadata for one executor run."""
    return TraceMeta(source="executor", strategy=strategy, world_size=world_size, model=model, backend=backend,
                     device=device, torch_version=torch.__version__, scenario=scenario, extra=extra)
