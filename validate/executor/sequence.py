"""The sequence-parallel family's executor: one handler per action kind, on one rank or emulated.

:class:`SequenceRunner` runs a plan of :mod:`dicesim.plan.sequence` (``sp``, DistriFusion) the way
the reference's ``seqpara/`` does: every rank embeds the whole batch, keeps its contiguous slice
of every image's tokens (rank 0's, scattered), computes Q, K and V of its tokens, attends with its
queries to every key of their images (the other ranks' K/V gathered: fresh for ``sp``, from the
previous step under DistriFusion, its own always fresh: ``df.py:107-113``), runs every expert on
its tokens, and all-gathers the tokens before the final layer. Under Ulysses (``kv_exchange = "ulysses"``)
each attention layer instead all-to-alls Q, K and V to every token with this rank's H/W heads, attends
over the whole sequence, all-to-alls the output back and projects it (microsoft/DeepSpeed@38327e0
``deepspeed/sequence/layer.py:386-416``). Under ring attention (``kv_exchange = "ring"``) each rank keeps its
queries, passes its K/V block to rank+1 W-1 times, attends to the block in hand under each pass and merges
the partial outputs in float32 with the log-sum-exp rule (:func:`merge_out_lse`; zhuzilin/ring-flash-attention
@8996282 ``ring_flash_attn/ring_flash_attn.py:26-65``, ``utils.py:33-73``). The collectives and DistriFusion's
buffers are :mod:`validate.executor.kvcomm`; this module takes no decision the plan has not taken.

Measured, not assumed: the K/V lag of every (step, layer) is read from the data (the step the
gather that filled the layer's slots carried); with ``shadow`` the attention output is recomputed
with freshly gathered K/V (a separate group), giving its relative L2 error and whether the other
ranks' K/V used equal the fresh ones.

Shape legend: B images (CFG halves included), T tokens per image, W slices, S = T/W, N tokens this
process owns (S on a rank, T emulated), D hidden, H heads, d = D/H, K copies per token, E experts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dicesim.models import BlockWorkload
from dicesim.plan import Action, Plan, build_plan
from dicesim.plan.sequence.kinds import (
    ATTEND, ATTEND_HEADS, ATTN_OUT, BROADCAST, DRAIN, EMBED, FINAL, GATHER_TOKENS, HEADS_IN, HEADS_OUT, KV_BUFFER,
    KV_CLEAR, KV_ENQUEUE, KV_FRESH, KV_ISSUE, KV_SYNC, KV_WAIT, MOE, QKV, RING_ATTEND, RING_LAST, SCATTER,
    USP_ATTEND, USP_LAST,
)
from validate.executor.interpreter import Handler, PlanInterpreter
from validate.executor.kvcomm import DistributedKV, EmulatedKV, SliceComm
from validate.executor.runner import RunRecord
from validate.executor.tracing import RankTracer
from validate.executor.worker import GroupCache, RankResult, RunSpec, build_model, global_inputs, sample_run
from validate.model.model import DiTMoE, combine_copies, copies_to_rows, layer_norm, modulate


class SequenceRunner(PlanInterpreter):
    """Runs one sequence-parallel plan over the slices ``comm.owned`` (see the module docstring)."""

    def __init__(self, *, model: DiTMoE, plan: Plan, comm: SliceComm, tracer: RankTracer, rank: int,
                 shadow: SliceComm | None = None, probe: Callable[..., None] | None = None,
                 sync_step: Callable[[], None] | None = None):
        super().__init__(plan, sync_step=sync_step)
        self.model, self.comm, self.tracer, self.shadow, self.probe = model, comm, tracer, shadow, probe
        preset = model.preset
        self.L, self.T, self.E, self.H = plan.num_layers, plan.num_steps, preset.num_experts, preset.heads
        self.W, self.n = comm.W, len(comm.owned)
        param = next(model.parameters())
        self.param_dtype = param.dtype
        elem = torch.empty((), dtype=self.param_dtype).element_size()
        S = model.tokens_per_image // self.W
        self._S = S
        # the trace's flops: the work of the slices this process owns (emulated: of whole images)
        split = 1 if self.n == self.W else self.W
        self._work = lambda images: BlockWorkload(model=preset, images=images, tokens_per_image=S * self.n,
                                                  dtype_nbytes=elem, token_split=split)
        self.record = RunRecord(
            rank=rank, lag_kept=np.full((self.T, self.L), -1, dtype=np.int32),
            lag_dropped=np.full((self.T, self.L), -1, dtype=np.int32), lag_score=np.zeros((self.T, self.L, 2)),
            shadow_sq=np.full((self.T, self.L, 2), np.nan),
            router_hist=np.zeros((self.T, self.L, self.E), dtype=np.int64), row_nbytes=preset.hidden * elem,
            kv_equal_fresh=np.zeros((self.T, self.L), dtype=bool))
        self._usp_kv_used: tuple[torch.Tensor, torch.Tensor] | None = None

    def handlers(self) -> Mapping[StrEnum, Handler]:
        return {EMBED: self._embed, SCATTER: self._scatter, BROADCAST: self._broadcast, QKV: self._qkv,
                KV_SYNC: self._kv_sync, KV_FRESH: self._kv_fresh, KV_WAIT: self._kv_wait, KV_ENQUEUE: self._kv_enqueue,
                KV_ISSUE: self._kv_issue, KV_CLEAR: self._kv_clear, ATTEND: self._attend, MOE: self._moe,
                GATHER_TOKENS: self._gather_tokens, FINAL: self._final, DRAIN: self._kv_clear,
                HEADS_IN: self._heads_in, ATTEND_HEADS: self._attend_heads, HEADS_OUT: self._heads_out,
                ATTN_OUT: self._attn_out, RING_ATTEND: self._ring_attend, RING_LAST: self._ring_last,
                USP_ATTEND: self._usp_attend, USP_LAST: self._usp_last}

    def begin_step(self, x_BCLL: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor, t: int) -> None:
        self._x_in = (x_BCLL.to(self.param_dtype), t_B, y_B)

    def end_step(self, t: int, latency_s: float) -> None:
        self.tracer.end_step(t, int(latency_s * 1e9))
        last = t + 1 == self.T  # the run ends: nothing is held after it (as the plan counts)
        held = {} if last else {(l, str(KV_BUFFER), -1): n for l, n in self.comm.held_nbytes().items()}
        self.record.held_nbytes.append(held)
        self.record.held_meta_nbytes.append(0)
        self.record.step_latency_s.append(latency_s)
        self.record.exposed_comm_s.append(self.tracer.exposed_ns.get(t, 0) / 1e9)

    # ------------------------------------------------------------------ tokens in, tokens out
    def _embed(self, a: Action, t: int) -> None:
        x_BCLL, t_B, y_B = self._x_in
        with self.tracer.compute("embed", step=t, tok_step=t):
            self._x_BTD, self._c_BD = self.model.embed(x_BCLL, t_B, y_B)

    def _scatter(self, a: Action, t: int) -> None:
        self._x_BND = self.comm.scatter(self._x_BTD, t)
        self.record.local_tokens = self._x_BND.shape[0] * self._x_BND.shape[1]

    def _broadcast(self, a: Action, t: int) -> None:
        self._c_BD = self.comm.broadcast(self._c_BD, t)

    def _gather_tokens(self, a: Action, t: int) -> None:
        self._x_BTD = self.comm.gather_tokens(self._x_BND, t)

    def _final(self, a: Action, t: int) -> torch.Tensor:
        with self.tracer.compute("final", step=t, tok_step=t):
            return self.model.head(self._x_BTD, self._c_BD)

    # ------------------------------------------------------------------ attention
    def _qkv(self, a: Action, t: int) -> None:
        blk = self.model.blocks[a.layer]
        B, N, D = self._x_BND.shape
        with self.tracer.compute("sp_qkv", layer=a.layer, step=t, tok_step=t, flops=self._work(B).attention_qkv().flops):
            self._mod = blk.modulation(self._c_BD)
            h_BND = modulate(layer_norm(self._x_BND), self._mod.shift_msa, self._mod.scale_msa)
            qkv_3BHNd = blk.attn.qkv(h_BND).reshape(B, N, 3, self.H, D // self.H).permute(2, 0, 3, 1, 4)
            self._q_BHNd, self._k_BHNd, self._v_BHNd = qkv_3BHNd.unbind(0)

    def _owned_kv(self) -> list[torch.Tensor]:
        """Stacked K and V of each owned slice, ``[2, B, H, S, d]`` each."""
        S = self._S
        return [torch.stack([self._k_BHNd[:, :, i * S:(i + 1) * S], self._v_BHNd[:, :, i * S:(i + 1) * S]])
                for i in range(self.n)]

    def _kv_sync(self, a: Action, t: int) -> None:
        full = self.comm.gather_sync(a.layer, t, self._k_BHNd, self._v_BHNd)
        self._kv_used = [full] * self.n

    def _kv_fresh(self, a: Action, t: int) -> None:
        self.comm.fresh(a.layer, t, self._owned_kv())

    def _kv_wait(self, a: Action, t: int) -> None:
        self.comm.wait(a.layer, a.span, a.tok_step, t)

    def _kv_enqueue(self, a: Action, t: int) -> None:
        # the K/V attention uses are put together (copied) before this layer's own slot is rewritten and
        # before a gather this layer sends can overwrite the other slots (df.py:107-115: cat, then enqueue)
        self._kv_used = self._used_kv(a.layer)
        self.comm.enqueue(a.layer, self._owned_kv())

    def _kv_issue(self, a: Action, t: int) -> None:
        self.comm.issue(a.layer, a.span, a.tok_step, t)

    def _kv_clear(self, a: Action, t: int) -> None:
        self.comm.wait_all(t)

    def _used_kv(self, layer: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """K and V ``[B, H, T, d]`` each owned slice's queries attend to under DistriFusion: the other ranks'
        slots of the layer's buffer with this slice's own fresh K/V (df.py:107-113)."""
        slots = self.comm.slots(layer)
        own = self._owned_kv()
        out = []
        for i, s in enumerate(self.comm.owned):
            kv_W = [own[i] if w == s else slots[w] for w in range(self.W)]
            out.append((torch.cat([kv[0] for kv in kv_W], dim=2), torch.cat([kv[1] for kv in kv_W], dim=2)))
        return out

    def _attention(self, layer: int, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Each owned slice's queries against its K/V, then the output projection: ``[B, N, D]``."""
        S = self._S
        o = [F.scaled_dot_product_attention(self._q_BHNd[:, :, i * S:(i + 1) * S], k, v) for i, (k, v) in enumerate(kv)]
        o_BHNd = torch.cat(o, dim=2)
        B, _, N, _ = o_BHNd.shape
        return self.model.blocks[layer].attn.proj(o_BHNd.transpose(1, 2).reshape(B, N, -1))

    def _attend(self, a: Action, t: int) -> None:
        l = a.layer
        with self.tracer.compute("sp_attend", layer=l, step=t, tok_step=t,
                                 flops=self._work(self._x_BND.shape[0]).attention_core().flops):
            kv = self._kv_used
            out_BND = self._attention(l, kv)
            self._x_BND = self._x_BND + self._mod.gate_msa.unsqueeze(1) * out_BND
        fresh = self._record_layer(l, t, out_BND)
        if fresh is not None:
            self.record.kv_equal_fresh[t, l] = all(torch.equal(k, fresh[0]) and torch.equal(v, fresh[1]) for k, v in kv)

    def _project(self, name: str, l: int, t: int, o_BHNd: torch.Tensor) -> torch.Tensor:
        """The output projection of the attention output ``o_BHNd`` and the gated residual, as compute op ``name``;
        returns the projected ``[B, N, D]``."""
        B, _, N, _ = o_BHNd.shape
        with self.tracer.compute(name, layer=l, step=t, tok_step=t, flops=self._work(B).attention_out().flops):
            out_BND = self.model.blocks[l].attn.proj(o_BHNd.transpose(1, 2).reshape(B, N, -1))
            self._x_BND = self._x_BND + self._mod.gate_msa.unsqueeze(1) * out_BND
        return out_BND

    def _record_layer(self, l: int, t: int, out_BND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Record layer ``l``'s K/V lag at step ``t`` (every key of the other slices carries the same lag) and,
        under ``--shadow``, the attention output's error against sp's fresh K/V all-gather; returns that fresh
        ``(K, V)`` (None without a shadow) for the variant's own check of the K/V it used."""
        lag = t - self.comm.produced[l]
        rec = self.record
        rec.lag_kept[t, l] = rec.lag_dropped[t, l] = lag
        rec.lag_score[t, l] = (lag, 1.0)
        if self.shadow is None:
            return None
        fresh = self.shadow.gather_sync(l, t, self._k_BHNd, self._v_BHNd)
        ref_BND = self._attention(l, [fresh] * self.n)
        rec.shadow_sq[t, l] = (float((out_BND - ref_BND).double().square().sum()),
                               float(ref_BND.double().square().sum()))
        return fresh

    # ------------------------------------------------------------------ Ulysses: heads, not K/V, exchanged
    def _heads_in(self, a: Action, t: int) -> None:
        # three all-to-alls, Q, K, V in that order (layer.py:386-396): [B, H/W, T, d] each (emulated: every head)
        self._qkv_heads = [self.comm.heads_in(a.layer, t, x) for x in (self._q_BHNd, self._k_BHNd, self._v_BHNd)]

    def _attend_heads(self, a: Action, t: int) -> None:
        with self.tracer.compute("uly_attend", layer=a.layer, step=t, tok_step=t,
                                 flops=self._work(self._x_BND.shape[0]).attention_heads().flops):
            self._o_heads = F.scaled_dot_product_attention(*self._qkv_heads)

    def _heads_out(self, a: Action, t: int) -> None:
        self._o_BHNd = self.comm.heads_out(a.layer, t, self._o_heads)

    def _attn_out(self, a: Action, t: int) -> None:
        l = a.layer
        fresh = self._record_layer(l, t, self._project("uly_proj", l, t, self._o_BHNd))
        if fresh is not None:  # the K/V this rank's heads used are its heads' slice of a fresh all-gather
            heads = self.comm.head_slice(self.H)
            _, k_used, v_used = self._qkv_heads if self._usp_kv_used is None else (None, *self._usp_kv_used)
            self.record.kv_equal_fresh[t, l] = (torch.equal(k_used, fresh[0][:, heads])
                                                and torch.equal(v_used, fresh[1][:, heads]))
        self._qkv_heads = self._o_heads = self._o_BHNd = self._usp_kv_used = None  # nothing is kept past the layer

    # ------------------------------------------------------------------ ring attention: K/V blocks passed on
    def _ring_block_flops(self, q_BhNd: torch.Tensor) -> float:
        """One block's attention and merge for every block of ``q`` this process owns: 4 B s^2 h d + 3 B s h d
        each (s: a block's tokens, h heads of d)."""
        B, h, N, d = q_BhNd.shape
        s, n = N // len(self._ring_acc), len(self._ring_acc)
        return float(n * (4 * B * s * s * h * d + 3 * B * s * h * d))

    def _ring_step(self, held: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Attend each owned block of queries to the K/V block it holds and merge into its running output."""
        q, n = self._ring_q, len(held)
        s = q.shape[2] // n
        for i, (k, v) in enumerate(held):
            self._ring_acc[i] = merge_out_lse(*self._ring_acc[i], *block_attention(q[:, :, i * s:(i + 1) * s], k, v))
            if self.shadow is not None:
                self._ring_seen[i].append((k, v))

    def _ring_passes(self, name: str, l: int, t: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """The R-1 passes of one layer (ring_flash_attn.py:26-63): issue the next pass, attend the block in hand
        (compute op ``name``), wait; ``q, k, v`` ``[B, h, n s, d]``: the n ring positions this process owns."""
        self.comm.ring_begin(l, t)
        n = len(self.comm.ring_owned)
        s = q.shape[2] // n
        held = [(k[:, :, i * s:(i + 1) * s], v[:, :, i * s:(i + 1) * s]) for i in range(n)]
        self._ring_q, self._ring_acc, self._ring_seen = q, [(None, None)] * n, [[] for _ in range(n)]
        flops = self._ring_block_flops(q)
        passes = self.comm.ring_size - 1
        for p in range(passes):
            pending = self.comm.ring_issue(l, t, held)
            with self.tracer.compute(name, layer=l, step=t, tok_step=t, flops=flops):
                self._ring_step(held)
            held = self.comm.ring_wait(l, t, pending, last=p == passes - 1)
        self._ring_held = held

    def _ring_finish(self) -> torch.Tensor:
        """The last block attended and merged; the output in the parameters' dtype (ring_flash_attn.py:65)."""
        self._ring_step(self._ring_held)
        return torch.cat([o for o, _ in self._ring_acc], dim=2).to(self.param_dtype)

    def _ring_kv_used(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The K and V every owned position attended to, in token order (at pass p position s holds the block of
        position (s - p) mod R); each owned position's must be the same, else None."""
        R, out = self.comm.ring_size, None
        for i, s in enumerate(self.comm.ring_owned):
            seen = self._ring_seen[i]
            blocks = [seen[(s - j) % R] for j in range(R)]
            kv = tuple(torch.cat([b[x] for b in blocks], dim=2) for x in (0, 1))
            if out is None:
                out = kv
            elif not (torch.equal(kv[0], out[0]) and torch.equal(kv[1], out[1])):
                return torch.empty(0), torch.empty(0)
        return out

    def _ring_attend(self, a: Action, t: int) -> None:
        self._ring_passes("ring_blocks", a.layer, t, self._q_BHNd, self._k_BHNd, self._v_BHNd)

    def _ring_last(self, a: Action, t: int) -> None:
        l = a.layer
        with self.tracer.compute("ring_block", layer=l, step=t, tok_step=t, flops=self._ring_block_flops(self._ring_q)):
            o_BHNd = self._ring_finish()
        fresh = self._record_layer(l, t, self._project("ring_proj", l, t, o_BHNd))
        if fresh is not None:
            k_used, v_used = self._ring_kv_used()
            self.record.kv_equal_fresh[t, l] = torch.equal(k_used, fresh[0]) and torch.equal(v_used, fresh[1])
        self._ring_acc = self._ring_held = self._ring_seen = self._ring_q = None  # nothing is kept past the layer

    # ------------------------------------------------------------------ USP: Ulysses inside, ring across
    def _usp_attend(self, a: Action, t: int) -> None:
        # the ring over the Ulysses all-to-all's output (yunchang/hybrid/attn_layer.py:132-146)
        self._ring_passes("usp_blocks", a.layer, t, *self._qkv_heads)

    def _usp_last(self, a: Action, t: int) -> None:
        l = a.layer
        if self.comm.ring_size == 1:  # a one-rank ring: the attention itself, nothing to merge (Ulysses' core)
            with self.tracer.compute("usp_block", layer=l, step=t, tok_step=t,
                                     flops=self._work(self._x_BND.shape[0]).attention_heads().flops):
                self._o_heads = F.scaled_dot_product_attention(*self._qkv_heads)
            self._ring_acc = self._ring_held = self._ring_seen = self._ring_q = None
            return
        with self.tracer.compute("usp_block", layer=l, step=t, tok_step=t, flops=self._ring_block_flops(self._ring_q)):
            self._o_heads = self._ring_finish()
        if self.shadow is not None:  # the K/V this rank's heads attended to, over every token (checked in attn_out)
            self._usp_kv_used = self._ring_kv_used()
        self._ring_acc = self._ring_held = self._ring_seen = self._ring_q = None

    # ------------------------------------------------------------------ MoE: every expert local
    def _moe(self, a: Action, t: int) -> None:
        l, blk, tr = a.layer, self.model.blocks[a.layer], self.tracer
        B = self._x_BND.shape[0]
        work = self._work(B)
        with tr.compute("gate", layer=l, step=t, tok_step=t, flops=work.gate().flops):
            h_ND, gate_mlp_BD = blk.moe_input(self._x_BND, self._c_BD, mod=self._mod)
            idx_NK, score_NK = blk.route(h_ND)
        self.record.router_hist[t, l] += torch.bincount(idx_NK.reshape(-1), minlength=self.E).cpu().numpy()
        if self.probe is not None:
            self.probe(step=t, layer=l, score_NK=score_NK, idx_NK=idx_NK)
        rows_RD, ids_R = copies_to_rows(h_ND, idx_NK)
        with tr.compute("local_moe", layer=l, step=t, tok_step=t, rows=rows_RD.shape[0],
                        flops=work.expert_rows(rows_RD.shape[0], self.E).flops):
            out_RD = blk.experts.forward_rows(rows_RD, ids_R)
        with tr.compute("shared_expert", layer=l, step=t, tok_step=t, flops=work.shared_expert().flops):
            shared_ND = blk.shared_expert(h_ND)
        with tr.compute("local_combine", layer=l, step=t, tok_step=t, flops=work.local_combine().flops):
            routed_ND = combine_copies(out_RD.view(*idx_NK.shape, -1), score_NK)
            self._x_BND = blk.moe_output(self._x_BND, routed_ND, shared_ND, gate_mlp_BD)


def block_attention(q_BHSd: torch.Tensor, k_BHSd: torch.Tensor, v_BHSd: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of ``q`` on one K/V block in float32: the block's output and its log-sum-exp per
    query row, ``[B, H, S, 1]`` (what ``_flash_attn_forward`` returns as ``block_out, block_lse``; scale
    1/sqrt(head dim), scaled_dot_product_attention's default)."""
    s_BHSS = torch.matmul(q_BHSd.float(), k_BHSd.float().transpose(-2, -1)) * q_BHSd.shape[-1] ** -0.5
    lse = torch.logsumexp(s_BHSS, dim=-1, keepdim=True)
    return torch.matmul(torch.exp(s_BHSS - lse), v_BHSd.float()), lse


def merge_out_lse(out: torch.Tensor | None, lse: torch.Tensor | None, block_out: torch.Tensor,
                  block_lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a block's output into the running float32 output (zhuzilin/ring-flash-attention@8996282
    ring_flash_attn/utils.py:40-48, 60-64): ``out - sigmoid(block_lse - lse) * (out - block_out)`` and
    ``lse - logsigmoid(lse - block_lse)``, the softmax over both blocks' keys; the first block is taken as is."""
    if out is None:
        return block_out.float(), block_lse
    out = out - torch.sigmoid(block_lse - lse) * (out - block_out.float())
    return out, lse - F.logsigmoid(lse - block_lse)


def _inputs(spec: RunSpec, world_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, range]:
    images = spec.layout(world_size).images_of(0, spec.batch)  # every rank computes every image
    z_GCLL, y_G = global_inputs(spec, len(images))
    return z_GCLL.to(device), y_G.to(device), images


def run_rank(spec: RunSpec, *, rank: int, world_size: int, device: torch.device, groups: GroupCache) -> RankResult:
    """Run ``spec`` on this rank of an initialised default process group; the rank returns its share
    of the samples (every rank computed all of them: the reference scatters them, sample_ddp.py:288-308;
    with ``single_img`` rank 0 keeps them all, :313)."""
    preset, layout = spec.preset, spec.layout(world_size)
    tracer = RankTracer(rank, device=device, enabled=spec.trace)
    kw = dict(rank=rank, world_size=world_size, num_layers=preset.depth, clock=tracer.clock)
    if layout.usp_ulysses:  # USP: the Ulysses groups, then the ring groups (yunchang/globals.py:42-57)
        kw.update(ulysses=groups.subgroup(layout.ulysses_groups(), rank), ring=groups.subgroup(layout.ring_groups(), rank))
    comm = DistributedKV(group=groups.group(layout, rank, layout.communicators[0].purpose), sink=tracer.sink,
                         mark=tracer.mark, **kw)
    shadow = DistributedKV(group=groups.group(layout, rank, "shadow"), sink=None, mark=tracer.clock,
                           **{k: v for k, v in kw.items() if k not in ("ulysses", "ring")}) if spec.shadow else None
    model = build_model(spec, None, device)
    runner = SequenceRunner(model=model, plan=build_plan(spec.strategy, preset.depth, spec.steps), comm=comm,
                            tracer=tracer, rank=rank, shadow=shadow)
    z_GCLL, y_G, _ = _inputs(spec, world_size, device)
    samples = sample_run(runner, spec, z_GCLL, y_G, model.null_class, rank).float().cpu()
    if spec.strategy.single_img:
        mine = samples if rank == 0 else samples[:0]
    else:
        mine = samples.chunk(world_size)[rank]
    return RankResult(rank=rank, samples_BCLL=mine, record=runner.record, trace_rows=tracer.rows(),
                      device=str(device))


def run_emulated(spec: RunSpec, world_size: int, device: torch.device | str = "cpu", *,
                 probe: Callable[..., None] | None = None, model: DiTMoE | None = None, **_: Any) -> RankResult:
    """The same plan in one process holding every slice of every image (:class:`EmulatedKV`): the reference
    a distributed run must match, and what the quality study samples with."""
    spec.check(world_size)
    device = torch.device(device)
    preset = spec.preset
    tracer = RankTracer(0, device=device, enabled=spec.trace)
    kw = dict(world_size=world_size, num_layers=preset.depth)
    shadow_kw = dict(kw)
    if spec.strategy.usp:
        kw["ring_size"] = spec.layout(world_size).ring_size
    model = build_model(spec, None, device) if model is None else model
    runner = SequenceRunner(model=model, plan=build_plan(spec.strategy, preset.depth, spec.steps),
                            comm=EmulatedKV(**kw), tracer=tracer, rank=0,
                            shadow=EmulatedKV(**shadow_kw) if spec.shadow else None, probe=probe)
    z_GCLL, y_G, _ = _inputs(spec, world_size, device)
    samples = sample_run(runner, spec, z_GCLL, y_G, model.null_class, -1)
    return RankResult(rank=0, samples_BCLL=samples.float().cpu(), record=runner.record, trace_rows=tracer.rows(),
                      device=str(device))
