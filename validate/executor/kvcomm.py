"""The token and K/V movement of sequence parallelism, between ranks or emulated in one process.

Ulysses' head all-to-alls (``heads_in``, ``heads_out``) are here too: Q, K and V from (this rank's
token slice, every head) to (every token, this rank's H/W heads) and the attention output back, each
one ``all_to_all_single`` as DeepSpeed's ``single_all_to_all`` does (microsoft/DeepSpeed@38327e0
``deepspeed/sequence/layer.py:221-244``); nothing is kept between layers.

Ring attention's passes (``ring_issue``, ``ring_wait``) too: each pass sends the K/V block in hand to
rank+1 and receives rank-1's with one ``batch_isend_irecv`` of (send K, receive K, send V, receive V),
as ``RingComm.send_recv_kv`` does (zhuzilin/ring-flash-attention@8996282 ring_flash_attn/utils.py:98-151);
gloo runs these point-to-point ops on CPU. A layer's W-1 passes are traced as one ``kv_ring``
collective (from the first pass's issue to the last one's end, the bytes of all of them), as the
simulator moves them; each wait is traced on its own.

USP (Ulysses inside, ring across: feifeibear/long-context-attention@56118e0 yunchang/hybrid/attn_layer.py:
111-158) runs the same calls on two subgroups: the head all-to-alls on the Ulysses group (``u`` consecutive
ranks), the passes on the ring group (the ranks ``u`` apart; yunchang/globals.py:42-57); a one-rank
subgroup moves nothing and traces nothing.

:class:`SliceComm` holds what the reference's ``seqpara/`` holds: the scatter of the tokens, the
broadcast of the conditioning, the blocking K and V all-gathers of ``sp`` (``sp_fwd.py:224-257``),
and DistriFusion's comm manager (``comm_manager.py``): one flat buffer per rank slot holding every
layer's stacked K and V of that rank's slice, blocking per-layer gathers into it when nothing is
pending, and asynchronous flattened gathers of a range of layers. It takes no decision: the plan's
actions say when to gather, send, wait and clear (:mod:`validate.executor.sequence` calls it).

- :class:`DistributedKV`: one rank on a torch.distributed group (gloo on CPU, NCCL on GPU); every
  collective is traced in the shared schema, its lag carried by the handle's ``tok_step``.
- :class:`EmulatedKV`: all W slices in one process, no communication. Every rank's buffer holds the
  same other-rank slots, so one set of W slots stands for all of them: a slot is written when its
  own rank queues its K/V, which no rank reads before the gather that would carry it has been
  waited for; the held bytes are one rank's, byte for byte.

Shape legend: B images, H heads, S tokens of one slice, d head dim, W slices (ranks), D hidden,
n owned slices (1 on a rank, W emulated); ``kv_2BHSd`` stacks K and V.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from dicesim.plan import CollectiveKind
from validate.executor.dispatcher import A2AHandle, EventSink

KV, ROWS = CollectiveKind.KV_GATHER.label, CollectiveKind.TOKEN_GATHER.label
SCATTER, BROADCAST = CollectiveKind.SCATTER.label, CollectiveKind.BROADCAST.label
HEAD_A2A, KV_RING = CollectiveKind.HEAD_A2A.label, CollectiveKind.KV_RING.label


class SliceComm:
    """What both variants share: the comm manager's flat buffers (allocated at the first K/V a
    layer stores, ``df.py:93-95``) and the producing step of every layer's other-rank slots."""

    def __init__(self, *, world_size: int, num_layers: int, owned: tuple[int, ...], ring_size: int = 0,
                 ring_owned: tuple[int, ...] | None = None):
        self.W, self.L, self.owned = world_size, num_layers, owned
        #: ranks of one attention ring (ring attention: all W; USP: W / u) and the ring positions owned here
        self.ring_size = ring_size or world_size
        self.ring_owned = owned if ring_owned is None else ring_owned
        self.buffers_W: list[torch.Tensor] | None = None
        self._shape: tuple[int, ...] = ()
        self._numel = 0
        #: layer -> step whose K/V the other ranks' slots hold (what the lag is read from)
        self.produced: dict[int, int] = {}

    def _allocate(self, kv_2BHSd: torch.Tensor) -> None:
        if self.buffers_W is None:
            self._shape, self._numel = tuple(kv_2BHSd.shape), kv_2BHSd.numel()
            self.buffers_W = [kv_2BHSd.new_empty(self.L * self._numel) for _ in range(self.W)]

    def _range(self, layer: int, span: int = 1) -> slice:
        return slice(layer * self._numel, (layer + span) * self._numel)

    def slots(self, layer: int) -> list[torch.Tensor]:
        """Layer ``layer``'s slot of every rank, each ``[2, B, H, S, d]``."""
        r = self._range(layer)
        return [buf[r].view(self._shape) for buf in self.buffers_W]

    def ring_begin(self, layer: int, step: int) -> None:
        """A layer's ring starts: its K/V are this step's (every block is sent during the layer)."""
        self.produced[layer] = step

    def held_nbytes(self) -> dict[int, int]:
        """Bytes of every layer's K/V buffer (all W slots; nothing before the first allocation)."""
        if self.buffers_W is None:
            return {}
        per_layer = sum(buf[self._range(0)].nbytes for buf in self.buffers_W)
        return dict.fromkeys(range(self.L), per_layer)


class DistributedKV(SliceComm):
    """One rank's sequence-parallel collectives on ``group`` (its slice: ``rank``)."""

    def __init__(self, *, rank: int, world_size: int, num_layers: int, group: Any, sink: EventSink | None,
                 clock: Callable[[], int], mark: Callable[[], Any], ulysses: tuple[Any, int, int] | None = None,
                 ring: tuple[Any, int, int] | None = None):
        """``ulysses`` / ``ring``: USP's (group, this rank's position in it, its size); default: ``group``."""
        self.h_group, self.h_rank, self.hW = ulysses if ulysses is not None else (group, rank, world_size)
        self.r_group, self.r_rank, r_size = ring if ring is not None else (group, rank, world_size)
        super().__init__(world_size=world_size, num_layers=num_layers, owned=(rank,), ring_size=r_size,
                         ring_owned=(self.r_rank,))
        self.rank, self.group = rank, group
        self._row_nbytes = 0  # one token's row (hidden x element size), set by the first scatter
        self.sink, self.clock, self.mark = sink, clock, mark
        self._pending: dict[tuple[int, int], A2AHandle] = {}  # (first layer, tok_step) -> flattened gather

    def _handle(self, name: str, work: Any, issue: Any, send: torch.Tensor, *, layer: int, step: int, tok_step: int,
                rows: int) -> A2AHandle:
        h = A2AHandle(name=name, layer=layer, step=step, tok_step=tok_step, send_RD=send, recv_QD=None, work=work,
                      issue_mark=issue, stream="comm", sink=self.sink, clock=self.clock, mark=self.mark)
        h.sent_rows, h.sent_nbytes = rows, rows * self._row_nbytes  # what left this rank, as the simulator counts it
        return h

    def _gather(self, name: str, out: list[torch.Tensor], x: torch.Tensor, *, rows: int, layer: int, step: int,
                tok_step: int, wait: bool) -> A2AHandle:
        issue = self.mark()
        work = dist.all_gather(out, x, group=self.group, async_op=True)
        h = self._handle(name, work, issue, x, layer=layer, step=step, tok_step=tok_step, rows=rows * (self.W - 1))
        if wait:
            h.wait(step=step)
        return h

    def scatter(self, x_BTD: torch.Tensor, step: int) -> torch.Tensor:
        """Rank 0's tokens cut into W contiguous slices along the tokens, one to each rank (sp_fwd.py:193-222)."""
        chunks = [c.contiguous() for c in x_BTD.chunk(self.W, dim=1)] if self.rank == 0 else None
        self._row_nbytes = x_BTD.shape[-1] * x_BTD.element_size()
        x_BSD = x_BTD.new_empty((x_BTD.shape[0], x_BTD.shape[1] // self.W, x_BTD.shape[2]))
        issue = self.mark()
        work = dist.scatter(x_BSD, chunks, src=0, group=self.group, async_op=True)
        rows = x_BSD.shape[0] * x_BSD.shape[1] * (self.W - 1) if self.rank == 0 else 0
        self._handle(SCATTER, work, issue, x_BSD, layer=-1, step=step, tok_step=step, rows=rows).wait(step=step)
        return x_BSD

    def broadcast(self, c_BD: torch.Tensor, step: int) -> torch.Tensor:
        """Rank 0's conditioning to every rank (sp_fwd.py:183-191)."""
        c_BD = c_BD.contiguous()
        issue = self.mark()
        work = dist.broadcast(c_BD, src=0, group=self.group, async_op=True)
        rows = c_BD.shape[0] * (self.W - 1) if self.rank == 0 else 0
        self._handle(BROADCAST, work, issue, c_BD, layer=-1, step=step, tok_step=step, rows=rows).wait(step=step)
        return c_BD

    def gather_tokens(self, x_BSD: torch.Tensor, step: int) -> torch.Tensor:
        """Every rank's tokens, in slice order (models.py:677-678): ``[B, W*S, D]``."""
        x_BSD = x_BSD.contiguous()
        out = [torch.empty_like(x_BSD) for _ in range(self.W)]
        self._gather(ROWS, out, x_BSD, rows=x_BSD.shape[0] * x_BSD.shape[1], layer=-1, step=step, tok_step=step,
                     wait=True)
        return torch.cat(out, dim=1)

    def gather_sync(self, layer: int, step: int, k_BHSd: torch.Tensor, v_BHSd: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``sp``: blocking all-gathers of K, then of V (sp_fwd.py:151-152); every slice, concatenated."""
        rows = k_BHSd.shape[0] * k_BHSd.shape[2]
        full = []
        for x in (k_BHSd.contiguous(), v_BHSd.contiguous()):
            out = [torch.empty_like(x) for _ in range(self.W)]
            self._gather(ROWS, out, x, rows=rows, layer=layer, step=step, tok_step=step, wait=True)
            full.append(torch.cat(out, dim=2))
        self.produced[layer] = step
        return full[0], full[1]

    def fresh(self, layer: int, step: int, kv_n2BHSd: list[torch.Tensor]) -> None:
        """No gather pending for the layer: gather this step's K/V into its slots, blocking (df.py:100-106)."""
        kv = kv_n2BHSd[0].contiguous()
        self._allocate(kv)
        self._gather(KV, self.slots(layer), kv, rows=2 * kv.shape[1] * kv.shape[3], layer=layer, step=step,
                     tok_step=step, wait=True)
        self.produced[layer] = step

    def enqueue(self, layer: int, kv_n2BHSd: list[torch.Tensor]) -> None:
        """Copy this rank's fresh K/V into its own slot (comm_manager.py:94)."""
        self._allocate(kv_n2BHSd[0])
        self.slots(layer)[self.rank].copy_(kv_n2BHSd[0])

    def issue(self, layer: int, span: int, tok_step: int, step: int) -> None:
        """One asynchronous all-gather of the own slots of ``span`` layers from ``layer`` (comm_manager.py:79-87)."""
        r = self._range(layer, span)
        own = self.buffers_W[self.rank][r]
        rows = 2 * self._shape[1] * self._shape[3] * span
        self._pending[(layer, tok_step)] = self._gather(
            KV, [buf[r] for buf in self.buffers_W], own, rows=rows, layer=layer, step=step, tok_step=tok_step,
            wait=False)

    def wait(self, layer: int, span: int, tok_step: int, step: int) -> None:
        """Wait for the gather of (layer, tok_step): its layers' slots now hold that step's K/V (df.py:97-99)."""
        h = self._pending.pop((layer, tok_step))
        h.wait(step=step)
        self.produced.update(dict.fromkeys(range(layer, layer + span), h.tok_step))

    def wait_all(self, step: int) -> None:
        """Wait for every gather in flight and forget them (comm_manager.py:99-106)."""
        for h in self._pending.values():
            h.wait(step=step)
        self._pending.clear()

    # ------------------------------------------------------------------ Ulysses
    def head_slice(self, heads: int) -> slice:
        """The heads this rank attends with after ``heads_in``: the rank-th group of H/W (USP: of its Ulysses group)."""
        h = heads // self.hW
        return slice(self.h_rank * h, (self.h_rank + 1) * h)

    def _a2a(self, send_W: torch.Tensor, *, layer: int, step: int) -> torch.Tensor:
        """One blocking ``all_to_all_single`` of ``send_W`` (dim 0: the W destinations); dim 0 of the result
        holds what each rank sent this one. Traced with what left this rank: (W-1)/W of it."""
        send_W = send_W.contiguous()
        if self.hW == 1:  # a one-rank Ulysses group keeps everything
            return send_W
        recv_W = torch.empty_like(send_W)
        issue = self.mark()
        work = dist.all_to_all_single(recv_W, send_W, group=self.h_group, async_op=True)
        sent_nbytes = send_W.nbytes * (self.hW - 1) // self.hW
        h = self._handle(HEAD_A2A, work, issue, send_W, layer=layer, step=step, tok_step=step, rows=0)
        h.sent_rows = sent_nbytes // self._row_nbytes
        h.sent_nbytes = sent_nbytes
        h.wait(step=step)
        return recv_W

    def heads_in(self, layer: int, step: int, x_BHSd: torch.Tensor) -> torch.Tensor:
        """One of Q, K, V: this rank's ``S`` tokens with every head -> every token (slice order) with its
        ``H/W`` heads, ``[B, H/W, W*S, d]`` (layer.py:386-396; scatter the heads, gather the tokens)."""
        B, H, S, d = x_BHSd.shape
        u = self.hW
        send_WBhSd = x_BHSd.reshape(B, u, H // u, S, d).transpose(0, 1)
        recv_WBhSd = self._a2a(send_WBhSd, layer=layer, step=step)  # [source rank = token slice, ...]
        self.produced[layer] = step
        return recv_WBhSd.permute(1, 2, 0, 3, 4).reshape(B, H // u, u * S, d)

    def heads_out(self, layer: int, step: int, o_BhTd: torch.Tensor) -> torch.Tensor:
        """The attention output back: every token with this rank's heads -> this rank's tokens with every head,
        ``[B, H, S, d]`` (layer.py:416; scatter the tokens, gather the heads)."""
        B, h, T, d = o_BhTd.shape
        u = self.hW
        S = T // u
        send_WBhSd = o_BhTd.reshape(B, h, u, S, d).permute(2, 0, 1, 3, 4)
        recv_WBhSd = self._a2a(send_WBhSd, layer=layer, step=step)  # [source rank = head group, ...]
        return recv_WBhSd.transpose(0, 1).reshape(B, u * h, S, d)

    # ------------------------------------------------------------------ ring attention
    def ring_begin(self, layer: int, step: int) -> None:
        super().ring_begin(layer, step)
        self._ring_issue, self._ring_rows = None, 0

    def ring_issue(self, layer: int, step: int, blocks: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
        """Send the K/V block in hand (``blocks[0]``) to rank+1, receive rank-1's: one batched pass (utils.py:
        113-132, 142-151). Returns what :meth:`ring_wait` takes."""
        k, v = (x.contiguous() for x in blocks[0])
        nk, nv = torch.empty_like(k), torch.empty_like(v)
        g, R = self.r_group, self.ring_size
        to = dist.get_global_rank(g, (self.r_rank + 1) % R)
        frm = dist.get_global_rank(g, (self.r_rank - 1) % R)
        if self._ring_issue is None:
            self._ring_issue = self.mark()
        ops = [dist.P2POp(dist.isend, k, to, group=g), dist.P2POp(dist.irecv, nk, frm, group=g),
               dist.P2POp(dist.isend, v, to, group=g), dist.P2POp(dist.irecv, nv, frm, group=g)]
        self._ring_rows += 2 * k.nbytes // self._row_nbytes  # K and V: one row of D per token of the slice
        return dist.batch_isend_irecv(ops), [(nk, nv)]

    def ring_wait(self, layer: int, step: int, pending: Any, *, last: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Wait for a pass (utils.py:134-140); the block received is the one in hand. After the layer's last
        pass, trace its passes as one ``kv_ring`` collective."""
        reqs, blocks = pending
        start_ns = self.clock()
        for req in reqs:
            req.wait()
        end_ns = self.clock()
        if self.sink is not None:
            self.sink("compute", "wait", f"wait:{KV_RING}", layer, step, step, start_ns, end_ns, 0, 0)
            if last:
                self.sink("comm", "collective", KV_RING, layer, step, step, self._ring_issue, self.mark(),
                          self._ring_rows * self._row_nbytes, self._ring_rows)
        return blocks


class EmulatedKV(SliceComm):
    """Every slice in one process: the same calls, no communication (see the module docstring)."""

    def __init__(self, *, world_size: int, num_layers: int, ring_size: int = 0):
        """``ring_size``: ranks of one ring (the layout's; under USP every head of every token stands for all
        Ulysses groups, and the ring positions are its rings' members); 0: every rank."""
        R = ring_size or world_size
        super().__init__(world_size=world_size, num_layers=num_layers, owned=tuple(range(world_size)), ring_size=R,
                         ring_owned=tuple(range(R)))
        self._pending: dict[tuple[int, int], int] = {}  # (first layer, tok_step) -> tok_step

    def scatter(self, x_BTD: torch.Tensor, step: int) -> torch.Tensor:
        return x_BTD

    def broadcast(self, c_BD: torch.Tensor, step: int) -> torch.Tensor:
        return c_BD

    def gather_tokens(self, x_BTD: torch.Tensor, step: int) -> torch.Tensor:
        return x_BTD

    def gather_sync(self, layer: int, step: int, k_BHTd: torch.Tensor, v_BHTd: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.produced[layer] = step
        return k_BHTd, v_BHTd

    def fresh(self, layer: int, step: int, kv_n2BHSd: list[torch.Tensor]) -> None:
        self._allocate(kv_n2BHSd[0])
        for slot, kv in zip(self.slots(layer), kv_n2BHSd):
            slot.copy_(kv)
        self.produced[layer] = step

    def enqueue(self, layer: int, kv_n2BHSd: list[torch.Tensor]) -> None:
        self._allocate(kv_n2BHSd[0])
        for slot, kv in zip(self.slots(layer), kv_n2BHSd):
            slot.copy_(kv)

    def issue(self, layer: int, span: int, tok_step: int, step: int) -> None:
        self._pending[(layer, tok_step)] = tok_step

    def wait(self, layer: int, span: int, tok_step: int, step: int) -> None:
        produced = self._pending.pop((layer, tok_step))
        self.produced.update(dict.fromkeys(range(layer, layer + span), produced))

    def wait_all(self, step: int) -> None:
        self._pending.clear()

    def head_slice(self, heads: int) -> slice:
        return slice(None)  # every rank's head group, side by side: every head

    def heads_in(self, layer: int, step: int, x_BHTd: torch.Tensor) -> torch.Tensor:
        """Every rank's head group over every token is every head over every token: nothing moves."""
        self.produced[layer] = step
        return x_BHTd

    def heads_out(self, layer: int, step: int, o_BHTd: torch.Tensor) -> torch.Tensor:
        return o_BHTd

    def ring_issue(self, layer: int, step: int, blocks: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
        """Every slice side by side: slice i receives the block slice i-1 holds."""
        return blocks[-1:] + blocks[:-1]

    def ring_wait(self, layer: int, step: int, pending: Any, *, last: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return pending
