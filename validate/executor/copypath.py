"""Device -> host -> device copies: the data path of NCCL between GPUs without peer-to-peer.

A :class:`CudaCopyPath` owns two CUDA streams, one per copy direction, and one pinned host
staging buffer. :meth:`CudaCopyPath.start` moves the rows of ``src_QD`` listed in ``cross_Q``
into the same rows of ``dst_QD`` through host memory and copies the rows in ``local_Q``
device to device (a rank's rows for its own experts, NCCL's self-send):

1. the device-to-host stream waits until the compute stream has produced ``src_QD`` and the
   previous transfer on this path has finished (one communicator runs its collectives in
   issue order), packs the crossing rows (a gather kernel) and copies them to pinned memory
   in chunks;
2. the host-to-device stream copies each chunk back up as soon as it has landed (the two
   copy engines work at once, as NCCL's pipelined buffer slots do) and scatters the rows
   into ``dst_QD``; a CUDA event marks the end.

The consumer makes its stream wait on that event (:meth:`StagedWork.wait`): the host does
not block, so compute queued behind the issue overlaps the copies. Chunks: at most
``max_chunks`` per transfer and at least ``min_chunk_nbytes`` each (NCCL's SHM transport
pipelines 4 MiB buffers, ``NCCL_BUFFSIZE``); the first chunk's device-to-host time is the
pipeline's fill, at most ``1 / max_chunks`` of the transfer.

:class:`ThreadCopyPath` is the CPU twin: the same packing and two copies through a host
buffer, on one worker thread (in issue order), so the copies overlap the main thread's compute.

Shape legend: Q rows of the exchange (send order), D row width, C rows that cross ranks.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import torch

MIB = 1 << 20


class StagedWork(Protocol):
    def wait(self) -> Any:
        """Make the caller's stream (GPU) or thread (CPU) wait for the transfer; return its done mark."""


def chunk_bounds(rows: int, row_nbytes: int, *, max_chunks: int, min_chunk_nbytes: int) -> list[tuple[int, int]]:
    """Row ranges ``[a, b)`` of the pipelined chunks of a ``rows``-row transfer (empty for 0 rows)."""
    if rows <= 0:
        return []
    per = max(-(-rows // max_chunks), -(-min_chunk_nbytes // max(row_nbytes, 1)), 1)
    return [(a, min(a + per, rows)) for a in range(0, rows, per)]


class _CudaWork:
    def __init__(self, done: Any, device: torch.device):
        self.done, self.device = done, device

    def wait(self) -> Any:
        torch.cuda.current_stream(self.device).wait_event(self.done)
        return self.done


class CudaCopyPath:
    """Two copy streams and a pinned staging buffer on one CUDA device (see module doc)."""

    def __init__(self, device: torch.device, *, max_chunks: int = 16, min_chunk_nbytes: int = 4 * MIB):
        self.device = device
        self.d2h = torch.cuda.Stream(device)
        self.h2d = torch.cuda.Stream(device)
        self.max_chunks, self.min_chunk_nbytes = max_chunks, min_chunk_nbytes
        self._stage: torch.Tensor | None = None
        self._tail: torch.cuda.Event | None = None  # end of the last transfer: the next one starts after it

    def _staging(self, nbytes: int) -> torch.Tensor:
        # one buffer suffices: a transfer's device-to-host copies start after the previous transfer ended
        # (a replaced buffer is reused by the host allocator only once its recorded copies are done)
        have = 0 if self._stage is None else self._stage.numel()
        if have < nbytes:
            self._stage = torch.empty(max(nbytes, 2 * have), dtype=torch.uint8, pin_memory=True)
        return self._stage

    def start(self, src_QD: torch.Tensor, dst_QD: torch.Tensor, cross_Q: torch.Tensor, local_Q: torch.Tensor,
              *, ready: Any) -> _CudaWork:
        """Begin moving ``src_QD`` into ``dst_QD`` once ``ready`` (an event on the producer's stream; None:
        everything queued on the current stream so far) fires."""
        if not isinstance(ready, torch.cuda.Event):
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self.device))
        C = int(cross_Q.numel())
        row_nbytes = src_QD[0].nbytes if src_QD.shape[0] else 0
        for s in (self.d2h, self.h2d):
            s.wait_event(ready)
            if self._tail is not None:
                s.wait_event(self._tail)
        for t in (src_QD, dst_QD, cross_Q, local_Q):
            t.record_stream(self.d2h)
            t.record_stream(self.h2d)
        chunks = chunk_bounds(C, row_nbytes, max_chunks=self.max_chunks, min_chunk_nbytes=self.min_chunk_nbytes)
        landed_events = []
        if C:
            stage_CD = self._staging(C * row_nbytes)[:C * row_nbytes].view(src_QD.dtype).view(C, *src_QD.shape[1:])
            with torch.cuda.stream(self.d2h):
                packed_CD = src_QD.index_select(0, cross_Q)
                for a, b in chunks:
                    stage_CD[a:b].copy_(packed_CD[a:b], non_blocking=True)
                    ev = torch.cuda.Event()
                    ev.record(self.d2h)
                    landed_events.append(ev)
        with torch.cuda.stream(self.h2d):
            if local_Q.numel():
                dst_QD.index_copy_(0, local_Q, src_QD.index_select(0, local_Q))
            if C:
                up_CD = torch.empty((C, *src_QD.shape[1:]), dtype=src_QD.dtype, device=src_QD.device)
                for ev, (a, b) in zip(landed_events, chunks):
                    self.h2d.wait_event(ev)
                    up_CD[a:b].copy_(stage_CD[a:b], non_blocking=True)
                dst_QD.index_copy_(0, cross_Q, up_CD)
            done = torch.cuda.Event(enable_timing=True)
            done.record(self.h2d)
        self._tail = done
        return _CudaWork(done, self.device)

    def close(self) -> None:
        """Nothing to release beyond what the caching allocators keep (kept for symmetry)."""


class _ThreadWork:
    def __init__(self, fut: Future):
        self.fut = fut

    def wait(self) -> int:
        return self.fut.result()


class ThreadCopyPath:
    """The CPU twin of :class:`CudaCopyPath`: one worker thread, plain host buffers, in issue order."""

    def __init__(self, *, clock=time.monotonic_ns):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-staged-copy")
        self._clock = clock

    def start(self, src_QD: torch.Tensor, dst_QD: torch.Tensor, cross_Q: torch.Tensor, local_Q: torch.Tensor,
              *, ready: Any = None) -> _ThreadWork:
        def move() -> int:
            if local_Q.numel():
                dst_QD.index_copy_(0, local_Q, src_QD.index_select(0, local_Q))
            if cross_Q.numel():
                staged_CD = torch.empty((int(cross_Q.numel()), *src_QD.shape[1:]), dtype=src_QD.dtype)
                staged_CD.copy_(src_QD.index_select(0, cross_Q))  # "device" -> host
                dst_QD.index_copy_(0, cross_Q, staged_CD.clone())  # host -> "device"
            return self._clock()

        return _ThreadWork(self._pool.submit(move))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


CopyPath = CudaCopyPath | ThreadCopyPath


def make_copy_path(device: torch.device, **chunking: int) -> CopyPath:
    """The copy path for ``device``: CUDA streams on a GPU, a worker thread on the CPU."""
    if device.type == "cuda":
        return CudaCopyPath(device, **chunking)
    return ThreadCopyPath()
