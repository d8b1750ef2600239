"""Token dispatch and combine between the ranks of one expert-parallel group.

Three steps per exchange, as in a real MoE layer:

1. :func:`route_layout` sorts this rank's routed rows by destination (EP rank, then the
   destination's local expert slot) and counts them: ``send_counts_SX``;
2. :meth:`Dispatcher.exchange_counts` swaps those counts (``all_to_all_single`` with equal
   splits) so every rank learns how many rows it will receive and for which expert;
3. :meth:`Dispatcher.all_to_all` moves the rows (uneven splits); the combine is the same
   call with the splits swapped. ``async_op=True`` returns at once; the :class:`A2AHandle`
   keeps the send and receive tensors alive (they are the cross-step buffers a strategy
   holds) and carries the step whose tokens it moves (``tok_step``).

Completion times come from ``work.get_future()`` callbacks, so the trace shows when the
transfer finished, not when someone got round to waiting for it. :class:`EmulatedDispatcher`
has the same interface for a single process holding every expert (no communication).

Shape legend: R routed rows on this rank, Q rows received, D hidden,
S ranks in the EP group, X experts per rank.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from dicesim.placement import Placement

#: tracer callback: (stream, kind, name, layer, step, tok_step, start, end, nbytes, rows); start/end are
#: host ns or, for collectives on GPU, CUDA events the tracer resolves later
EventSink = Callable[..., None]


@dataclass(frozen=True, kw_only=True)
class RouteLayout:
    """Where this rank's routed rows go and what it receives, for one exchange."""

    order_R: torch.Tensor  # send order: local row index of the i-th row sent
    send_counts_SX: torch.Tensor  # rows sent to (EP rank s, its local expert slot x)
    recv_counts_SX: torch.Tensor  # rows received from EP rank s for this rank's slot x
    recv_expert_ids_Q: torch.Tensor  # global expert id of every received row (receive order)

    @property
    def in_splits(self) -> list[int]:
        return self.send_counts_SX.sum(dim=1).tolist()

    @property
    def out_splits(self) -> list[int]:
        return self.recv_counts_SX.sum(dim=1).tolist()

    @property
    def recv_rows(self) -> int:
        return int(self.recv_counts_SX.sum())

    def meta_nbytes(self) -> int:
        """Index bookkeeping held with the payload (not part of the buffer-row formula)."""
        return sum(t.nbytes for t in (self.order_R, self.send_counts_SX, self.recv_counts_SX,
                                      self.recv_expert_ids_Q))


def send_plan(expert_ids_R: torch.Tensor, placement: Placement) -> tuple[torch.Tensor, torch.Tensor]:
    """Send order and per-(EP rank, slot) counts for rows bound to ``expert_ids_R``."""
    S, X = placement.ep_size, placement.experts_per_rank
    dev = expert_ids_R.device
    owner_E = torch.tensor(placement.owner_table(), dtype=torch.int64, device=dev)
    slot_E = torch.tensor(placement.local_slot_table(), dtype=torch.int64, device=dev)
    key_R = owner_E[expert_ids_R] * X + slot_E[expert_ids_R]
    order_R = torch.argsort(key_R, stable=True)
    send_counts_SX = torch.bincount(key_R, minlength=S * X).view(S, X)
    return order_R, send_counts_SX


def recv_expert_ids(recv_counts_SX: torch.Tensor, my_experts: tuple[int, ...]) -> torch.Tensor:
    """Global expert id of each received row: source-major, then the sender's slot order."""
    experts_SX = torch.tensor(my_experts, dtype=torch.int64, device=recv_counts_SX.device).expand_as(recv_counts_SX)
    return torch.repeat_interleave(experts_SX.reshape(-1), recv_counts_SX.reshape(-1))


class A2AHandle:
    """One issued all-to-all. Holds its tensors until :meth:`wait`; lag follows ``tok_step``."""

    def __init__(self, *, name: str, layer: int, step: int, tok_step: int, send_RD: torch.Tensor,
                 recv_QD: torch.Tensor, work: Any, issue_mark: Any, stream: str, sink: EventSink | None,
                 clock: Callable[[], int], mark: Callable[[], Any] | None = None):
        self.name, self.layer, self.tok_step, self.stream = name, layer, tok_step, stream
        self.issue_step = step
        self.send_RD, self.recv_QD = send_RD, recv_QD
        self.sent_nbytes, self.sent_rows = send_RD.nbytes, int(send_RD.shape[0])  # kept for the trace after release
        self.issue_mark = issue_mark
        self.done_mark: Any = None
        self._sink, self._clock, self._mark = sink, clock, mark or clock
        self._work = work
        self._callback_fut = None
        self._recorded = False
        if work is None:  # emulated or already complete
            self.done_mark = issue_mark
        else:
            self._callback_fut = work.get_future().then(self._on_done)

    def _on_done(self, fut: Any) -> None:
        # gloo: runs on the backend's thread when the transfer finishes, so the host clock is the
        # completion time. NCCL: runs at once, on a stream made to wait for the transfer, so the
        # mark (a CUDA event recorded here) completes when the transfer does.
        self.done_mark = self._mark()

    @property
    def nbytes(self) -> int:
        """Payload bytes this handle keeps alive (send plus receive buffer, what is not released)."""
        return sum(self.held_parts().values())

    def held_parts(self) -> dict[str, int]:
        """Bytes of the send and receive buffers this handle still holds, by part."""
        return {part: buf.nbytes for part, buf in (("send", self.send_RD), ("recv", self.recv_QD)) if buf is not None}

    def wait(self, *, step: int) -> torch.Tensor:
        """Block until the transfer is done; records the collective and the exposed wait."""
        start_ns = self._clock()
        if self._work is not None:
            self._work.wait()
            self._callback_fut.wait()  # the completion callback has run: done_mark is set
            self._work = None
        end_ns = self._clock()
        if self._sink is not None and not self._recorded:
            self._recorded = True
            done = self.done_mark if self.done_mark is not None else end_ns
            self._sink(self.stream, "collective", self.name, self.layer, self.issue_step, self.tok_step,
                       self.issue_mark, done, self.sent_nbytes, self.sent_rows)
            self._sink("compute", "wait", f"wait:{self.name}", self.layer, step, self.tok_step,
                       start_ns, end_ns, 0, 0)
        return self.recv_QD

    def release(self, *, send: bool = True, recv: bool = True) -> None:
        """Drop the buffers (the handle stays as a record of what it carried); call after :meth:`wait`."""
        if send:
            self.send_RD = None
        if recv:
            self.recv_QD = None


class DispatcherBase:
    """What every dispatcher shares: the layout of one exchange, dispatch, combine and un-permute
    (:class:`Dispatcher` moves rows over process groups, :class:`EmulatedDispatcher` does not)."""

    def __init__(self, placement: Placement, ep_rank: int, *, sink: EventSink | None,
                 clock: Callable[[], int] = time.monotonic_ns, mark: Callable[[], Any] | None = None):
        self.placement, self.ep_rank = placement, ep_rank
        self.my_experts = placement.experts_of(ep_rank)
        self.sink, self.clock = sink, clock
        self.mark = mark or clock  # host ns on CPU; a CUDA event on GPU (see RankTracer.mark)

    def layout(self, expert_ids_R: torch.Tensor, *, layer: int, step: int, tok_step: int) -> RouteLayout:
        """Send order plus the (blocking) count exchange for rows bound to ``expert_ids_R``."""
        order_R, send_counts_SX = send_plan(expert_ids_R, self.placement)
        recv_counts_SX = self.exchange_counts(send_counts_SX, layer=layer, step=step, tok_step=tok_step)
        return RouteLayout(order_R=order_R, send_counts_SX=send_counts_SX, recv_counts_SX=recv_counts_SX,
                           recv_expert_ids_Q=recv_expert_ids(recv_counts_SX, self.my_experts))

    def dispatch(self, rows_RD: torch.Tensor, lay: RouteLayout, *, layer: int, step: int, tok_step: int,
                 async_op: bool, name: str = "dispatch") -> A2AHandle:
        """Send rows (in local order) to their experts' ranks."""
        return self.all_to_all(rows_RD.index_select(0, lay.order_R), lay.in_splits, lay.out_splits, name=name,
                               layer=layer, step=step, tok_step=tok_step, async_op=async_op)

    def combine(self, out_QD: torch.Tensor, lay: RouteLayout, *, layer: int, step: int, tok_step: int,
                async_op: bool, name: str = "combine") -> A2AHandle:
        """Send expert outputs back to the ranks that own the tokens (splits swapped)."""
        return self.all_to_all(out_QD, lay.out_splits, lay.in_splits, name=name,
                               layer=layer, step=step, tok_step=tok_step, async_op=async_op)

    @staticmethod
    def unpermute(back_RD: torch.Tensor, lay: RouteLayout) -> torch.Tensor:
        """Rows returned by a combine, put back in this rank's local row order."""
        out_RD = torch.empty_like(back_RD)
        out_RD[lay.order_R] = back_RD
        return out_RD

    def all_to_all(self, send_RD: torch.Tensor, in_splits: list[int], out_splits: list[int], *, name: str,
                   layer: int, step: int, tok_step: int, async_op: bool) -> A2AHandle:
        raise NotImplementedError

    def exchange_counts(self, send_counts_SX: torch.Tensor, *, layer: int, step: int, tok_step: int) -> torch.Tensor:
        raise NotImplementedError


class Dispatcher(DispatcherBase):
    """All-to-all over a torch.distributed EP group; counts optionally on their own group.

    ``group`` carries the rows; ``count_group`` the token counts (the same group for
    ``count_comm="shared"``, so a pending asynchronous all-to-all delays the count exchange
    as it does on one NCCL communicator; a second group for ``"separate"``).
    """

    def __init__(self, placement: Placement, ep_rank: int, *, group: Any, count_group: Any,
                 sink: EventSink | None = None, clock: Callable[[], int] = time.monotonic_ns,
                 mark: Callable[[], Any] | None = None):
        super().__init__(placement, ep_rank, sink=sink, clock=clock, mark=mark)
        self.group, self.count_group = group, count_group
        self.count_stream = "comm" if count_group is group else "comm:counts"

    def exchange_counts(self, send_counts_SX: torch.Tensor, *, layer: int, step: int, tok_step: int) -> torch.Tensor:
        recv_counts_SX = torch.empty_like(send_counts_SX)
        issue = self.mark()
        work = dist.all_to_all_single(recv_counts_SX, send_counts_SX, group=self.count_group, async_op=True)
        handle = A2AHandle(name="counts", layer=layer, step=step, tok_step=tok_step, send_RD=send_counts_SX,
                           recv_QD=recv_counts_SX, work=work, issue_mark=issue, stream=self.count_stream,
                           sink=self.sink, clock=self.clock, mark=self.mark)
        return handle.wait(step=step)

    def all_to_all(self, send_RD: torch.Tensor, in_splits: list[int], out_splits: list[int], *, name: str,
                   layer: int, step: int, tok_step: int, async_op: bool) -> A2AHandle:
        send_RD = send_RD.contiguous()
        recv_QD = send_RD.new_empty((sum(out_splits),) + tuple(send_RD.shape[1:]))
        issue = self.mark()
        work = dist.all_to_all_single(recv_QD, send_RD, out_splits, in_splits, group=self.group, async_op=True)
        handle = A2AHandle(name=name, layer=layer, step=step, tok_step=tok_step, send_RD=send_RD, recv_QD=recv_QD,
                           work=work, issue_mark=issue, stream="comm", sink=self.sink, clock=self.clock,
                           mark=self.mark)
        if not async_op:
            handle.wait(step=step)
        return handle


class EmulatedDispatcher(DispatcherBase):
    """Same interface, one process holding every expert: rows are copied, nothing is sent.

    The receive buffer is a copy (not a view) so the emulation holds the same buffers,
    byte for byte, as one rank of a real run.
    """

    def __init__(self, placement: Placement, ep_rank: int = 0, *, sink: EventSink | None = None,
                 clock: Callable[[], int] = time.monotonic_ns, mark: Callable[[], Any] | None = None):
        if placement.ep_size != 1:
            raise ValueError(f"EmulatedDispatcher needs an EP group of one rank, got {placement.ep_size}")
        super().__init__(placement, ep_rank, sink=sink, clock=clock)

    def exchange_counts(self, send_counts_SX: torch.Tensor, *, layer: int, step: int, tok_step: int) -> torch.Tensor:
        return send_counts_SX.clone()

    def all_to_all(self, send_RD: torch.Tensor, in_splits: list[int], out_splits: list[int], *, name: str,
                   layer: int, step: int, tok_step: int, async_op: bool) -> A2AHandle:
        if list(in_splits) != list(out_splits):
            raise ValueError(f"emulated all-to-all needs equal splits, got {in_splits} and {out_splits}")
        return A2AHandle(name=name, layer=layer, step=step, tok_step=tok_step, send_RD=send_RD.contiguous(),
                         recv_QD=send_RD.clone(), work=None, issue_mark=self.clock(), stream="comm", sink=None,
                         clock=self.clock)
