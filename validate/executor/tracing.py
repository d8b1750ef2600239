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

    ``enabled=False`` keeps measuring (the summary needs exposed communication) but exports
    no event rows. On GPU, host-side waits go to the ``host`` stream (they do not block the
    device) and a step's exposed communication is its device span minus the device time of
    its compute ops.
    """

    def __init__(self, rank: int, *, device: torch.device, enabled: bool = True):
        self.rank, self.enabled = rank, enabled
        self.clock = time.monotonic_ns
        self.cuda = device.type == "cuda"
        self._rows: list[tuple] = []  # start/end: host ns, or CUDA events until resolve_cuda
        self._cuda_base: tuple[Any, int] | None = None
        self.exposed_ns: dict[int, int] = defaultdict(int)
        if self.cuda:
            base = torch.cuda.Event(enable_timing=True)
            base.record()
            base.synchronize()
            self._cuda_base = (base, self.clock())

    def mark(self) -> Any:
        """A point in time on this rank's device timeline: host ns on CPU, a recorded CUDA event on GPU."""
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return self.clock()

    @contextmanager
    def compute(self, name: str, *, layer: int = -1, step: int = -1, tok_step: int = -1,
                flops: float = 0.0, rows: int = 0) -> Iterator[None]:
        """Time the enclosed op on the compute stream."""
        if not (self.enabled or self.cuda):  # GPU keeps them: exposed communication needs them
            yield
            return
        start = self.mark()
        yield
        self._rows.append(("compute", "compute", name, layer, step, tok_step, start, self.mark(), 0, rows, flops))

    def sink(self, stream: str, kind: str, name: str, layer: int, step: int, tok_step: int,
             start: Any, end: Any, nbytes: int, rows: int) -> None:
        """Callback for the dispatcher: a collective interval or an exposed (host) wait."""
        if kind == "wait":
            if self.cuda:
                stream = "host"  # a host wait does not stall the device; see end_step
            else:
                self.exposed_ns[step] += end - start
        if self.enabled or self.cuda:
            self._rows.append((stream, kind, name, layer, step, tok_step, start, end, nbytes, rows, 0.0))

    def _to_ns(self, x: Any) -> int:
        if isinstance(x, int):
            return x
        base_ev, base_ns = self._cuda_base  # type: ignore[misc]
        return base_ns + int(base_ev.elapsed_time(x) * 1e6)

    def resolve_cuda(self) -> None:
        """Turn recorded CUDA events into host-clock ns (synchronises the device)."""
        if not self.cuda:
            return
        torch.cuda.synchronize()
        self._rows = [row[:6] + (self._to_ns(row[6]), self._to_ns(row[7])) + row[8:] for row in self._rows]

    def end_step(self, step: int, span_ns: int) -> None:
        """GPU only: exposed communication of ``step`` = its span minus its compute ops' device time."""
        if not self.cuda:
            return
        self.resolve_cuda()
        busy = sum(r[7] - r[6] for r in self._rows if r[1] == "compute" and r[4] == step)
        self.exposed_ns[step] = max(0, span_ns - busy)

    def rows(self) -> list[tuple]:
        """Raw rows (host ns) for shipping to the rank that writes the trace; empty if disabled."""
        self.resolve_cuda()
        if not self.enabled:
            return []
        return [row[:7] + (max(row[6], row[7]),) + row[8:] for row in self._rows]


def events_frame(rows_by_rank: dict[int, list[tuple]], offsets_ns: dict[int, int]) -> Any:
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
