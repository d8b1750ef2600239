"""The expert-parallel family's executor: one handler per action kind, on one rank.

:class:`PlanRunner` is the per-run object. It owns everything that lives across steps
(pending all-to-all handles, producing steps, measurements, and the buffer policy's store of
expert outputs, :mod:`validate.executor.stale`), so two runs in one process never share state.
It registers one handler per action kind (:meth:`PlanRunner.handlers`); the generic
:class:`~validate.executor.interpreter.PlanInterpreter` runs exactly the actions of
``plan.steps[step_index]``, in order, and hands the ``--auto-gc`` frees
(:attr:`dicesim.plan.Plan.gc_frees`) to the store; no strategy rule is re-derived here.

Copies are in role order (:mod:`validate.executor.roles`: role 0 is the copy a skip step
keeps). Exchanges a synchronous step discards are waited for at that step's end and dropped.

Lag is read from the data: a combine's handle carries the step whose tokens it moved.

Shape legend: B images in the network batch, T tokens per image, N = B*T token rows, K copies
per token, D hidden, R routed rows sent, Q rows received.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import torch

from dicesim.models import BlockWorkload
from dicesim.plan import Action, ActionKind as K, Plan
from dicesim.plan.expert.kinds import Held, MoEAction as M
from dicesim.plan.expert.rules import cond_layers
from validate.executor.dispatcher import RouteLayout, DispatcherBase
from validate.executor.interpreter import Handler, PlanInterpreter
from validate.executor.roles import random_kept_copy, role_order
from validate.executor.stale import Exchange, make_store
from validate.executor.tracing import RankTracer
from validate.model.model import DiTMoE, DiTMoEBlock, combine_copies

@dataclass
class _LayerStep:
    """What the gate produced for one layer at the current step (role order)."""

    x_BTD: torch.Tensor
    h_ND: torch.Tensor
    gate_mlp_BD: torch.Tensor
    idx_NK: torch.Tensor
    score_NK: torch.Tensor
    shared_ND: torch.Tensor | None = None
    local_ND: torch.Tensor | None = None  # data parallel: every expert ran here, weighted and summed


@dataclass
class RunRecord:
    """Measurements of one run on one rank (picklable)."""

    rank: int
    step_latency_s: list[float] = field(default_factory=list)
    exposed_comm_s: list[float] = field(default_factory=list)
    lag_kept: np.ndarray | None = None  # [T, L]
    lag_dropped: np.ndarray | None = None
    held_nbytes: list[dict[tuple[int, str, int], int]] = field(default_factory=list)  # per step
    held_meta_nbytes: list[int] = field(default_factory=list)
    recv_rows: dict[tuple[int, int], int] = field(default_factory=dict)  # (layer, tok_step) -> rows
    lag_score: np.ndarray | None = None  # [T, L, 2]: sum of score * lag over copies, sum of scores
    shadow_sq: np.ndarray | None = None  # [T, L, 2]: sum sq error, sum sq fresh (NaN if not measured)
    router_hist: np.ndarray | None = None  # [T, L, E] copies routed to each expert from this rank
    local_tokens: int = 0
    row_nbytes: int = 0
    kv_equal_fresh: np.ndarray | None = None  # [T, L] sequence parallelism, shadow: other ranks' K/V used == fresh

    @property
    def held_total_nbytes(self) -> list[int]:
        return [sum(d.values()) for d in self.held_nbytes]


class PlanRunner(PlanInterpreter):
    """Runs one expert-parallel plan on one rank; ``denoise`` plugs into :func:`validate.model.sampler.sample`.

    ``sync_step`` ends a GPU step (host-staged: the compute stream only)."""

    def __init__(self, *, model: DiTMoE, plan: Plan, dispatcher: DispatcherBase, tracer: RankTracer,
                 rank: int, image_keys_B: list[int], shadow: DispatcherBase | None = None,
                 probe: Callable[..., None] | None = None, sync_step: Callable[[], None] | None = None):
        super().__init__(plan, sync_step=sync_step)
        self.model, self.disp, self.tracer, self.shadow = model, dispatcher, tracer, shadow
        self.probe = probe  # test hook: sees every layer's used output and (with shadow) the fresh one
        self.strategy = plan.strategy
        preset = model.preset
        self.K, self.L, self.E, self.T = preset.top_k, plan.num_layers, preset.num_experts, plan.num_steps
        param = next(model.parameters())
        self.param_dtype, self.device = param.dtype, param.device
        T_img = model.tokens_per_image
        token_keys_N = (np.repeat(np.asarray(image_keys_B, dtype=np.int64), T_img) * T_img
                        + np.tile(np.arange(T_img, dtype=np.int64), len(image_keys_B)))
        self._kept_random = ([random_kept_copy(self.strategy.seed, l, token_keys_N, self.K).to(self.device)
                              for l in range(self.L)]
                             if self.strategy.cond_policy == "random" else [None] * self.L)
        self._work = BlockWorkload(model=preset, images=len(image_keys_B), tokens_per_image=T_img,
                                   dtype_nbytes=torch.empty((), dtype=self.param_dtype).element_size())
        # cross-step state
        self.store = make_store(self.strategy.buffer_policy, producer=self.strategy.stale_weights == "producer",
                                top_k=self.K, skip_layers=cond_layers(plan), disp=dispatcher)
        self._one_copy = plan.lags.skip  # [T, L]: the output used came from a one-copy exchange
        self._producer: dict[int, list[int]] = {}
        self._pending: dict[tuple[str, int, int], Exchange] = {}
        self._retired: list[Exchange] = []  # discarded by a sync step: waited for at its end
        # per-step scratch
        self._cur: dict[int, _LayerStep] = {}
        self.record = RunRecord(
            rank=rank,
            lag_kept=np.full((self.T, self.L), -1, dtype=np.int32),
            lag_dropped=np.full((self.T, self.L), -1, dtype=np.int32),
            lag_score=np.zeros((self.T, self.L, 2)),
            shadow_sq=np.full((self.T, self.L, 2), np.nan),
            router_hist=np.zeros((self.T, self.L, self.E), dtype=np.int64),
            local_tokens=len(image_keys_B) * T_img,
            row_nbytes=preset.hidden * self._work.dtype_nbytes,
        )

    # ------------------------------------------------------------------ the interpreter's hooks
    def handlers(self) -> Mapping[StrEnum, Handler]:
        return {
            K.EMBED: self._do_embed, K.ATTENTION: self._do_attention, M.GATE: self._do_gate,
            M.SYNC_MOE: self._do_sync_moe, M.LOCAL_MOE: self._do_local_moe, M.ISSUE_DISPATCH: self._do_issue_dispatch,
            M.RUN_EXPERTS: self._do_run_experts, M.SHARED_EXPERT: self._do_shared_expert,
            M.WAIT_COMBINE: self._do_wait_combine, M.LOCAL_COMBINE: self._do_local_combine, K.FINAL: self._do_final,
            K.DISCARD: self._do_discard, K.DRAIN: self._do_drain,
        }

    def begin_step(self, x_BCLL: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor, t: int) -> None:
        self._x_in = (x_BCLL.to(self.param_dtype), t_B, y_B)
        self._cur = {}
        self.store.begin_step()

    def free(self, what: StrEnum, layer: int, tok_step: int) -> None:
        self.store.gc(Held(what), layer, tok_step)

    def end_step(self, t: int, latency_s: float) -> None:
        self.tracer.end_step(t, int(latency_s * 1e9))
        self._end_of_step(t)
        self.record.step_latency_s.append(latency_s)
        self.record.exposed_comm_s.append(self.tracer.exposed_ns.get(t, 0) / 1e9)

    # ------------------------------------------------------------------ actions
    def _do_embed(self, a: Action, t: int) -> None:
        x_BCLL, t_B, y_B = self._x_in
        with self.tracer.compute("embed", step=t, tok_step=t):
            self._x_BTD, self._c_BD = self.model.embed(x_BCLL, t_B, y_B)

    def _do_attention(self, a: Action, t: int) -> None:
        blk = self._block(a.layer)
        with self.tracer.compute("attention", layer=a.layer, step=t, tok_step=t, flops=self._work.attention_half().flops):
            self._mod = blk.modulation(self._c_BD)
            self._x_BTD = blk.attention_half(self._x_BTD, self._c_BD, mod=self._mod)

    def _do_gate(self, a: Action, t: int) -> None:
        blk = self._block(a.layer)
        with self.tracer.compute("gate", layer=a.layer, step=t, tok_step=t, flops=self._work.gate().flops):
            h_ND, gate_mlp_BD = blk.moe_input(self._x_BTD, self._c_BD, mod=self._mod)
            idx_NK, score_NK = blk.route(h_ND)
            role_NK = role_order(idx_NK, self.strategy.kept_copy(idx_NK.shape[1]), self._kept_random[a.layer])
            self._cur[a.layer] = _LayerStep(x_BTD=self._x_BTD, h_ND=h_ND, gate_mlp_BD=gate_mlp_BD,
                                            idx_NK=idx_NK.gather(1, role_NK), score_NK=score_NK.gather(1, role_NK))
        self.record.router_hist[t, a.layer] += torch.bincount(idx_NK.reshape(-1), minlength=self.E).cpu().numpy()

    def _do_sync_moe(self, a: Action, t: int) -> None:
        l, cur = a.layer, self._cur[a.layer]
        out_NkD, dispatch, combine = self._exchange_sync(self.disp, l, t, cur, skip=a.skip, record=True)
        is_async = l in self.plan.async_layers
        self.store.synced(l, out_NkD, cur.score_NK, skip=a.skip, dispatch=dispatch if is_async else None,
                          combine=combine, cache_it=self.plan.reads_cache(l, t + 1))
        self._producer[l] = [t, self._producer[l][1] if a.skip else t]
        if a.keep:  # the next step re-runs this layer's experts on the rows it received
            dispatch.handle.release(recv=False)
            self._pending[("d", l, t)] = dispatch

    def _do_local_moe(self, a: Action, t: int) -> None:
        cur = self._cur[a.layer]
        rows_RD, ids_R = self._rows(cur, skip=False)
        with self.tracer.compute("run_experts", layer=a.layer, step=t, tok_step=t, rows=rows_RD.shape[0],
                                 flops=self._work.expert_rows(rows_RD.shape[0], self.E).flops):
            out_RD = self._block(a.layer).experts.forward_rows(rows_RD, ids_R)
        cur.local_ND = combine_copies(out_RD.view(-1, self.K, out_RD.shape[-1]), cur.score_NK)
        self._producer[a.layer] = [t, t]

    def _do_issue_dispatch(self, a: Action, t: int) -> None:
        cur = self._cur[a.layer]
        rows_RD, ids_R = self._rows(cur, skip=a.skip)
        lay = self.disp.layout(ids_R, layer=a.layer, step=t, tok_step=t)
        self.record.recv_rows[(a.layer, t)] = lay.recv_rows
        handle = self.disp.dispatch(rows_RD, lay, layer=a.layer, step=t, tok_step=t, async_op=True)
        keep_scores = self.strategy.stale_weights == "producer"
        ex = Exchange(handle=handle, layout=lay, skip=a.skip, score_NK=cur.score_NK if keep_scores else None)
        self._pending[("d", a.layer, t)] = ex
        self.store.put("dispatch", a.layer, ex)

    def _do_run_experts(self, a: Action, t: int) -> None:
        ex = self._pending.pop(("d", a.layer, a.tok_step))
        recv_QD = ex.handle.wait(step=t)
        out_QD = self._run_experts(a.layer, recv_QD, ex.layout, t, ex.handle.tok_step)
        if not self.store.holds("dispatch", ex):
            ex.handle.release()
        handle = self.disp.combine(out_QD, ex.layout, layer=a.layer, step=t, tok_step=ex.handle.tok_step,
                                   async_op=True)
        combine = Exchange(handle=handle, layout=ex.layout, skip=ex.skip, score_NK=ex.score_NK)
        self._pending[("c", a.layer, a.tok_step)] = combine
        self.store.put("combine", a.layer, combine)

    def _do_shared_expert(self, a: Action, t: int) -> None:
        cur = self._cur[a.layer]
        with self.tracer.compute("shared_expert", layer=a.layer, step=t, tok_step=t,
                                 flops=self._work.shared_expert().flops):
            cur.shared_ND = self._block(a.layer).shared_expert(cur.h_ND)

    def _do_wait_combine(self, a: Action, t: int) -> None:
        ex = self._pending.pop(("c", a.layer, a.tok_step))
        back_RD = self.disp.unpermute(ex.handle.wait(step=t), ex.layout)
        produced = ex.handle.tok_step  # lag comes from the data, not from the action
        self.store.waited(a.layer, back_RD.view(-1, 1 if ex.skip else self.K, back_RD.shape[-1]), ex)
        self._producer[a.layer] = [produced, self._producer[a.layer][1] if ex.skip else produced]

    def _do_discard(self, a: Action, t: int) -> None:
        self._retired += self._pending.values()
        self._pending.clear()
        self.store.clear()

    def _do_drain(self, a: Action, t: int) -> None:
        for ex in self._pending.values():
            ex.handle.wait(step=t)
            ex.handle.release()
        self._pending.clear()

    def _do_local_combine(self, a: Action, t: int) -> None:
        # the layer's gate outputs are not read after its output is formed: drop them (one layer's
        # working set at a time, as the model's forward holds it; docs/memory.md)
        l, cur = a.layer, self._cur.pop(a.layer)
        with self.tracer.compute("local_combine", layer=l, step=t, tok_step=t, flops=self._work.local_combine().flops):
            if cur.local_ND is not None:
                routed_ND = cur.local_ND
            else:
                routed_ND = self.store.routed(l, cur.score_NK,
                                              next_one_copy=t + 1 < self.T and bool(self._one_copy[t + 1, l]))
        kept, dropped = self._producer[l]
        self.record.lag_kept[t, l], self.record.lag_dropped[t, l] = t - kept, t - dropped
        s_kept, s_dropped = float(cur.score_NK[:, 0].sum()), float(cur.score_NK[:, 1:].sum())
        self.record.lag_score[t, l] = (s_kept * (t - kept) + s_dropped * (t - dropped), s_kept + s_dropped)
        shadow_NKD = None
        if self.shadow is not None:
            shadow_NKD = self._exchange_sync(self.shadow, l, t, cur, record=False)[0]
            used_ND, ref_ND = routed_ND + cur.shared_ND, combine_copies(shadow_NKD, cur.score_NK) + cur.shared_ND
            self.record.shadow_sq[t, l] = (float((used_ND - ref_ND).double().square().sum()),
                                           float(ref_ND.double().square().sum()))
        if self.probe is not None:
            self.probe(step=t, layer=l, routed_ND=routed_ND, score_NK=cur.score_NK, idx_NK=cur.idx_NK,
                       fresh_NKD=shadow_NKD)
        with self.tracer.compute("moe_output", layer=l, step=t, tok_step=t):
            self._x_BTD = self._block(l).moe_output(cur.x_BTD, routed_ND, cur.shared_ND, cur.gate_mlp_BD)
        self.store.end_layer(l, list(self._pending.values()))

    def _do_final(self, a: Action, t: int) -> torch.Tensor:
        with self.tracer.compute("final", step=t, tok_step=t):
            return self.model.head(self._x_BTD, self._c_BD)

    # ------------------------------------------------------------------ helpers
    def _block(self, layer: int) -> DiTMoEBlock:
        return self.model.blocks[layer]

    def _rows(self, cur: _LayerStep, *, skip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Routed rows in (token, role) order: every role, or only role 0 on a skip step."""
        if skip:
            return cur.h_ND, cur.idx_NK[:, 0].contiguous()
        return cur.h_ND.repeat_interleave(self.K, dim=0), cur.idx_NK.reshape(-1)

    def _run_experts(self, layer: int, recv_QD: torch.Tensor, lay: RouteLayout, t: int, tok_step: int) -> torch.Tensor:
        Q = recv_QD.shape[0]
        bank = self._block(layer).experts
        with self.tracer.compute("run_experts", layer=layer, step=t, tok_step=tok_step, rows=Q,
                                 flops=self._work.expert_rows(Q, len(bank)).flops):
            return bank.forward_rows(recv_QD, lay.recv_expert_ids_Q)

    def _exchange_sync(self, disp: DispatcherBase, layer: int, t: int, cur: _LayerStep, *, record: bool,
                       skip: bool = False) -> tuple[torch.Tensor, Exchange, Exchange]:
        """Blocking count exchange, dispatch, experts, combine of every role (``skip``: role 0 only).

        Returns the outputs ``[N, k, D]`` in role order and both (completed) exchanges.
        """
        rows_RD, ids_R = self._rows(cur, skip=skip)
        lay = disp.layout(ids_R, layer=layer, step=t, tok_step=t)
        if record:
            self.record.recv_rows[(layer, t)] = lay.recv_rows
        dispatch = disp.dispatch(rows_RD, lay, layer=layer, step=t, tok_step=t, async_op=False)
        recv_QD = dispatch.wait(step=t)
        out_QD = self._run_experts(layer, recv_QD, lay, t, t) if record else \
            self._block(layer).experts.forward_rows(recv_QD, lay.recv_expert_ids_Q)
        combine = disp.combine(out_QD, lay, layer=layer, step=t, tok_step=t, async_op=False)
        out_NkD = disp.unpermute(combine.wait(step=t), lay).view(cur.h_ND.shape[0], -1, rows_RD.shape[-1])
        producer = cur.score_NK if self.strategy.stale_weights == "producer" else None
        return (out_NkD, Exchange(handle=dispatch, layout=lay, skip=skip, score_NK=producer),
                Exchange(handle=combine, layout=lay, skip=skip, score_NK=producer))

    def _end_of_step(self, t: int) -> None:
        """Finish discarded exchanges, drop what the next step does not read, measure what is held."""
        for ex in self._retired:
            ex.handle.wait(step=t)
            ex.handle.release()
        self._retired.clear()
        if t + 1 == self.T:
            if self._pending:
                raise RuntimeError(f"plan left exchanges pending after the last step: {sorted(self._pending)}")
            self.store.clear()  # the sampler returns (the reference clears its caches: sample_ddp.py:281-283)
        self.store.end_step({l for l in range(self.L) if self.plan.reads_cache(l, t + 1)},
                            list(self._pending.values()))
        held = self.store.held()
        meta = 0
        for (kind, layer, tok_step), ex in self._pending.items():
            what = "dispatch" if kind == "d" else "combine"
            if not self.store.holds(what, ex):
                held.update({(layer, f"{what}_{part}", tok_step): n for part, n in ex.handle.held_parts().items()})
            meta += ex.layout.meta_nbytes() + (0 if ex.score_NK is None else ex.score_NK.nbytes)
        self.record.held_nbytes.append(held)
        self.record.held_meta_nbytes.append(meta)
