"""Host-staged executor mode: W emulated ranks on one device, cross-rank rows through host memory.

``python -m validate run --transport host-staged --world-size W --device cuda`` runs the plan
in one process that holds every expert and the global batch, as
:func:`~validate.executor.worker.run_emulated` does, but every count exchange, dispatch and combine
moves the bytes that would cross ranks device -> pinned host memory -> device on copy streams
of its own (:mod:`validate.executor.copypath`), as NCCL does between GPUs without peer-to-peer. The
consumer waits on the copy's CUDA event, so asynchronous strategies really overlap the copies
with compute. On a CPU the same runs with plain host buffers on a worker thread (for tests).

Which rows cross. Token ``n`` of the global batch belongs to emulated rank ``src(n)`` (images
are numbered globally: rank ``r`` samples images ``r*batch ..``; the unconditional CFG half of
an image stays with its rank). A copy of it routed to expert ``e`` goes to the member of
``src(n)``'s expert-parallel group that owns ``e`` in the W-rank placement
(:mod:`dicesim.placement`). Copies whose owner is another rank cross (host round trip); the
rest are a rank's rows for its own experts (a device copy, as NCCL's self-send). The count
exchange moves each rank's counts for the other ranks' experts (int64 each).

Numerics. The receive buffer is assembled from the rows that made the round trip and the
local rows, in the emulation's row order, so a run equals :func:`run_emulated` bit for bit.

Traces. The shared schema with ``world_size = 1`` (one device runs the global batch) and
``meta.extra["host_staged"]`` naming the emulated ranks and their routed copies
(``router_hist``: ``[emulated rank, step, layer, expert]``). Collectives carry the bytes that
went through host memory; waits sit on the compute stream: on a GPU they are the device-side
stall of the compute stream on a copy's event, so the trace's exposed communication is what
the device lost, as :func:`dicesim.calibrate.measure.measured_metrics` reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from dicesim.errors import ConfigError
from dicesim.placement import Placement
from validate.executor.copypath import MIB, CopyPath, make_copy_path
from validate.executor.dispatcher import A2AHandle, RouteLayout, DispatcherBase, recv_expert_ids, send_plan
from validate.executor.launch import RunOutcome
from validate.executor.summary import summarize, write_run_trace
from validate.executor.tracing import RankTracer
from validate.executor.worker import RunSpec, run_emulated

TRANSPORTS: tuple[str, ...] = ("distributed", "host-staged")


@dataclass(frozen=True, kw_only=True)
class StagedLayout(RouteLayout):
    """A route layout plus which rows (send order) cross emulated ranks and which stay local."""

    cross_Q: torch.Tensor
    local_Q: torch.Tensor


class StagedHandle(A2AHandle):
    """An exchange whose ``moved_rows`` rows (``moved_nbytes``) go through host memory."""

    def __init__(self, *, staged: Any, moved_rows: int, moved_nbytes: int, **kw: Any):
        super().__init__(work=None, **kw)
        self._staged, self.moved_rows, self.moved_nbytes = staged, moved_rows, moved_nbytes

    def wait(self, *, step: int) -> torch.Tensor:
        """Make the compute stream (GPU) or thread (CPU) wait for the copies; records both intervals."""
        if self._staged is None:
            return self.recv_QD
        start = self._mark()
        self.done_mark = self._staged.wait()
        end = self._mark()
        self._staged = None
        if self._sink is not None:
            self._sink(self.stream, "collective", self.name, self.layer, self.issue_step, self.tok_step,
                       self.issue_mark, self.done_mark, self.moved_nbytes, self.moved_rows)
            self._sink("compute", "wait", f"wait:{self.name}", self.layer, step, self.tok_step, start, end, 0, 0)
        return self.recv_QD


def count_keys(key_R: torch.Tensor, n: int) -> torch.Tensor:
    """Occurrences of each of ``0 .. n-1`` in ``key_R``; unlike ``bincount`` no host sync on a GPU."""
    return torch.zeros(n, dtype=torch.int64, device=key_R.device).scatter_add_(0, key_R, torch.ones_like(key_R))


def owner_table(ranks: Placement) -> torch.Tensor:
    """``[W, E]``: global rank that receives a copy sent by rank ``w`` to expert ``e``."""
    groups = ranks.groups()
    owners = ranks.owner_table()
    return torch.tensor([[groups[ranks.group_of(w)][owners[e]] for e in range(ranks.num_experts)]
                         for w in range(ranks.world_size)], dtype=torch.int64)


class HostStagedDispatcher(DispatcherBase):
    """One process holding every expert whose exchanges move the cross-rank rows through host memory.

    ``placement``: the one-rank placement of the process; ``ranks``: the W-rank placement the
    emulated ranks follow; ``src_rank_N``: emulated rank of every token row of the batch.
    ``rows_path`` carries dispatches and combines, ``counts_path`` the count exchanges (the
    same path for ``count_comm = "shared"``: a count exchange queues behind the copies in flight).
    """

    def __init__(self, placement: Placement, *, ranks: Placement, src_rank_N: torch.Tensor, rows_path: CopyPath,
                 counts_path: CopyPath, sink: Callable[..., None] | None = None,
                 clock: Callable[[], int] | None = None, mark: Callable[[], Any] | None = None):
        if placement.ep_size != 1:
            raise ValueError(f"host-staged runs need a one-rank placement, got {placement.ep_size} ranks")
        kw = {} if clock is None else {"clock": clock}
        super().__init__(placement, 0, sink=sink, mark=mark, **kw)
        dev = src_rank_N.device
        self.ranks, self._src_N = ranks, src_rank_N
        self._owner_WE = owner_table(ranks).to(dev)
        self._rows, self._counts = rows_path, counts_path
        self.count_stream = "comm" if counts_path is rows_path else "comm:counts"
        W, E = ranks.world_size, ranks.num_experts
        crosses = (self._owner_WE != torch.arange(W, device=dev).unsqueeze(1)).reshape(-1)
        self._count_cross, self._count_local = crosses.nonzero().squeeze(1), (~crosses).nonzero().squeeze(1)
        self._W, self._E = W, E
        self.staged_nbytes_by_step: dict[int, int] = {}  # dispatch + combine bytes through host memory, by issue step

    def _src_rows(self, R: int) -> torch.Tensor:
        N = self._src_N.numel()
        if R % N:
            raise ValueError(f"{R} routed rows are not a whole number of copies of {N} tokens")
        return self._src_N.repeat_interleave(R // N) if R != N else self._src_N

    def layout(self, expert_ids_R: torch.Tensor, *, layer: int, step: int, tok_step: int) -> StagedLayout:
        """Send order, the staged count exchange (blocking) and the crossing rows of one exchange."""
        order_R, send_counts_SX = send_plan(expert_ids_R, self.placement)
        src_R = self._src_rows(int(expert_ids_R.shape[0]))
        counts_K1 = count_keys(src_R * self._E + expert_ids_R, self._W * self._E).view(-1, 1)
        got_K1 = self._exchange(counts_K1, self._count_cross, self._count_local, self._counts, name="counts",
                                stream=self.count_stream, layer=layer, step=step, tok_step=tok_step, async_op=False)
        recv_counts_SX = got_K1.recv_QD.view(self._W, self._E).sum(dim=0, keepdim=True)
        src_Q, ids_Q = src_R[order_R], expert_ids_R[order_R]
        crosses_Q = self._owner_WE[src_Q, ids_Q] != src_Q
        return StagedLayout(order_R=order_R, send_counts_SX=send_counts_SX, recv_counts_SX=recv_counts_SX,
                            recv_expert_ids_Q=recv_expert_ids(recv_counts_SX, self.my_experts),
                            cross_Q=crosses_Q.nonzero().squeeze(1), local_Q=(~crosses_Q).nonzero().squeeze(1))

    def dispatch(self, rows_RD: torch.Tensor, lay: StagedLayout, *, layer: int, step: int, tok_step: int,
                 async_op: bool, name: str = "dispatch") -> StagedHandle:
        return self._exchange(rows_RD.index_select(0, lay.order_R), lay.cross_Q, lay.local_Q, self._rows, name=name,
                              stream="comm", layer=layer, step=step, tok_step=tok_step, async_op=async_op)

    def combine(self, out_QD: torch.Tensor, lay: StagedLayout, *, layer: int, step: int, tok_step: int,
                async_op: bool, name: str = "combine") -> StagedHandle:
        # results go back along the rows they came by: the same rows cross
        return self._exchange(out_QD, lay.cross_Q, lay.local_Q, self._rows, name=name, stream="comm", layer=layer,
                              step=step, tok_step=tok_step, async_op=async_op)

    def _exchange(self, send_QD: torch.Tensor, cross_Q: torch.Tensor, local_Q: torch.Tensor, path: CopyPath, *,
                  name: str, stream: str, layer: int, step: int, tok_step: int, async_op: bool) -> StagedHandle:
        send_QD = send_QD.contiguous()
        recv_QD = torch.empty_like(send_QD)
        issue = self.mark()
        work = path.start(send_QD, recv_QD, cross_Q, local_Q, ready=issue)
        C = int(cross_Q.numel())
        row_nbytes = send_QD[0].nbytes if send_QD.shape[0] else 0
        if name != "counts":
            self.staged_nbytes_by_step[step] = self.staged_nbytes_by_step.get(step, 0) + C * row_nbytes
        handle = StagedHandle(staged=work, moved_rows=C, moved_nbytes=C * row_nbytes, name=name, layer=layer,
                              step=step, tok_step=tok_step, send_RD=send_QD, recv_QD=recv_QD, issue_mark=issue,
                              stream=stream, sink=self.sink, clock=self.clock, mark=self.mark)
        if not async_op:
            handle.wait(step=step)
        return handle


class DeviceWaitTracer(RankTracer):
    """A :class:`RankTracer` whose waits are the compute stream's own (device-side on a GPU).

    On a GPU the compute stream waits on a copy's event, so a wait is an interval of the
    device timeline; it stays on the ``compute`` track and a step's exposed communication is
    the sum of its waits, as on a CPU. Step ends synchronise the compute stream only: copies
    issued for a later step stay in flight, and their events are resolved when they are done.
    """

    def sink(self, stream: str, kind: str, name: str, layer: int, step: int, tok_step: int,
             start: Any, end: Any, nbytes: int, rows: int) -> None:
        if kind == "wait" and self.cuda:
            self._rows.append(("compute", kind, name, layer, step, tok_step, start, end, nbytes, rows, 0.0))
            return
        super().sink(stream, kind, name, layer, step, tok_step, start, end, nbytes, rows)

    def _done_ns(self, x: Any) -> Any:
        return x if isinstance(x, int) or not x.query() else self._to_ns(x)

    def end_step(self, step: int, span_ns: int) -> None:
        if not self.cuda:
            return
        torch.cuda.current_stream().synchronize()
        self._rows = [r[:6] + (self._done_ns(r[6]), self._done_ns(r[7])) + r[8:] for r in self._rows]
        self.exposed_ns[step] = sum(r[7] - r[6] for r in self._rows if r[1] == "wait" and r[4] == step)


@dataclass
class HostStaged:
    """The transport :func:`validate.executor.worker.run_emulated` takes for one host-staged run.

    Holds the run's copy paths and the routed copies per emulated rank (``router_hist_WTLE``,
    filled by the runner's probe). One instance per run: nothing is shared between runs.
    """

    ranks: Placement
    batch: int  # images per emulated rank
    cfg: bool
    steps: int
    separate_counts: bool = False
    max_chunks: int = 16
    min_chunk_nbytes: int = 4 * MIB
    paths: list[CopyPath] = field(default_factory=list)
    dispatcher: HostStagedDispatcher | None = None
    _hist: torch.Tensor | None = None
    _src_N: torch.Tensor | None = None

    def attach(self, placement: Placement, *, device: torch.device, enabled: bool, tokens_per_image: int,
               num_layers: int) -> tuple[RankTracer, HostStagedDispatcher]:
        """The tracer and dispatcher of the run (device buffers and copy streams are made here)."""
        W, E = self.ranks.world_size, self.ranks.num_experts
        G = W * self.batch
        img_N = torch.arange((2 if self.cfg else 1) * G * tokens_per_image, device=device) // tokens_per_image
        self._src_N = (img_N % G) // self.batch
        self._hist = torch.zeros((W, self.steps, num_layers, E), dtype=torch.int64, device=device)
        tracer = DeviceWaitTracer(0, device=device, enabled=enabled)
        rows = make_copy_path(device, max_chunks=self.max_chunks, min_chunk_nbytes=self.min_chunk_nbytes)
        counts = make_copy_path(device, max_chunks=self.max_chunks, min_chunk_nbytes=self.min_chunk_nbytes) \
            if self.separate_counts else rows
        self.paths = [rows] + ([counts] if counts is not rows else [])
        self.dispatcher = HostStagedDispatcher(placement, ranks=self.ranks, src_rank_N=self._src_N, rows_path=rows,
                                               counts_path=counts, sink=tracer.sink, clock=tracer.clock,
                                               mark=tracer.mark)
        return tracer, self.dispatcher

    def probe(self, inner: Callable[..., None] | None) -> Callable[..., None]:
        """A runner probe that counts each emulated rank's routed copies, then calls ``inner``."""
        E = self.ranks.num_experts

        def count(*, step: int, layer: int, idx_NK: torch.Tensor, **kw: Any) -> None:
            key = (self._src_N.unsqueeze(1) * E + idx_NK).reshape(-1)
            self._hist[:, step, layer] += count_keys(key, self._hist.shape[0] * E).view(-1, E)
            if inner is not None:
                inner(step=step, layer=layer, idx_NK=idx_NK, **kw)

        return count

    @staticmethod
    def sync_step() -> None:
        """End of a step on a GPU: the compute stream only (copies for later steps keep running)."""
        torch.cuda.current_stream().synchronize()

    def router_hist_WTLE(self) -> np.ndarray:
        return self._hist.cpu().numpy()

    def staged_nbytes_per_step(self) -> list[int]:
        """Bytes the dispatches and combines issued in each step moved through host memory."""
        by_step = self.dispatcher.staged_nbytes_by_step
        return [int(by_step.get(t, 0)) for t in range(self.steps)]

    def close(self) -> None:
        for p in self.paths:
            p.close()


def host_staged_for(spec: RunSpec, world_size: int, **chunking: int) -> HostStaged:
    """The transport of ``spec`` on ``world_size`` emulated ranks."""
    return HostStaged(ranks=spec.placement(world_size), batch=spec.batch, cfg=spec.guidance_scale is not None,
                      steps=spec.steps, separate_counts=spec.strategy.count_comm == "separate", **chunking)


@dataclass
class HostStagedRun:
    """One host-staged run: the outcome in the executor's usual form (one device, the global
    batch) plus what the emulation adds (emulated ranks, their routed copies, the device)."""

    outcome: RunOutcome
    emulated_world_size: int
    batch_per_emulated_rank: int
    router_hist_WTLE: np.ndarray
    staged_nbytes_per_step: list[int]  # through host memory by the dispatches and combines issued in each step
    device_name: str
    chunking: dict[str, int]

    def extra(self) -> dict[str, Any]:
        """What the trace metadata carries under ``host_staged``."""
        return {"host_staged": {
            "transport": "host-staged", "emulated_world_size": self.emulated_world_size,
            "batch_per_emulated_rank": self.batch_per_emulated_rank, "device_name": self.device_name,
            "router_hist_axes": ["emulated_rank", "step", "layer", "expert"],
            "router_hist": self.router_hist_WTLE.tolist(), "chunking": dict(self.chunking),
            "staged_nbytes_per_step": self.staged_nbytes_per_step}}

    def summary(self) -> dict[str, Any]:
        """The executor's JSON summary plus the emulation's fields (units in the names)."""
        s = summarize(self.outcome)
        s.update(transport="host-staged", emulated_world_size=self.emulated_world_size,
                 batch_per_emulated_rank=self.batch_per_emulated_rank, device_name=self.device_name,
                 staged_nbytes_per_step=self.staged_nbytes_per_step)
        return s

    def write_trace(self, out_dir: Any, stem: str | None = None) -> dict[str, Any]:
        """Trace files in the shared schema (atomic), metadata as the module doc says."""
        return write_run_trace(self.outcome, out_dir, stem, extra=self.extra())


def run_host_staged(spec: RunSpec, world_size: int, device: torch.device | str = "cpu", *, model: Any = None,
                    **chunking: int) -> HostStagedRun:
    """Run ``spec`` as ``world_size`` emulated ranks on ``device`` (``model``: reuse a built one)."""
    device = torch.device(device)
    transport = host_staged_for(spec, world_size, **chunking)
    try:
        result = run_emulated(spec, world_size, device, transport=transport, model=model)
    finally:
        transport.close()
    outcome = RunOutcome(spec=replace(spec, batch=world_size * spec.batch), world_size=1, backend="host-staged",
                         ranks=[result], clock_offsets_ns={0: 0}, clock_method="single-process")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return HostStagedRun(outcome=outcome, emulated_world_size=world_size, batch_per_emulated_rank=spec.batch,
                         router_hist_WTLE=transport.router_hist_WTLE(),
                         staged_nbytes_per_step=transport.staged_nbytes_per_step(), device_name=name,
                         chunking={"max_chunks": transport.max_chunks, "min_chunk_nbytes": transport.min_chunk_nbytes})


def checked_device(device: str) -> torch.device:
    """``cpu`` or ``cuda[:N]`` where it exists; ConfigError otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError("device", f"unknown device {device!r}", ("cpu", "cuda")) from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError("device", f"unknown device {device!r}", ("cpu", "cuda"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda needs a CUDA GPU and a CUDA build of torch", ("cpu",))
    return dev


def cli_run(spec: RunSpec, *, transport: str, world_size: int, device: str, trace_out: Any) -> dict[str, Any]:
    """``python -m validate run --transport host-staged``: run, write the trace, return the summary."""
    if transport not in TRANSPORTS:
        raise ConfigError("transport", f"unknown transport {transport!r}", TRANSPORTS)
    if type(spec.strategy).family != "expert_parallel":  # it stages expert-parallel all-to-all rows
        raise ConfigError("transport", f"host-staged mode runs expert-parallel strategies, not {spec.strategy.name!r}",
                          ("distributed",))
    dev = checked_device(device)
    if dev.type == "cpu":
        # one compute thread, as each spawned rank gets: the copy worker is the other, and OpenMP
        # threads spinning next to it made tiny-model steps ~40x slower on a loaded 2-core machine
        torch.set_num_threads(1)
    run = run_host_staged(spec, world_size, dev)
    summary = run.summary()
    if trace_out is not None:
        summary["trace_files"] = {k: str(v) for k, v in run.write_trace(trace_out).items()}
    return summary
