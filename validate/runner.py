"""Interpret a :class:`dicesim.plan.Plan` on one rank: the expert-parallel DiT-MoE forward.

:class:`PlanRunner` is the per-run object. It owns everything that lives across steps
(per-layer expert-output caches, pending all-to-all handles, producing steps, measurements),
so two runs in one process never share state. Its :meth:`PlanRunner.denoise` has the
sampler's ``denoise(x, t, y, step_index)`` signature and executes exactly the actions of
``plan.steps[step_index]``, in order; no strategy rule is re-derived here.

Copy roles. Each token's K expert copies are re-ordered into *roles*: role 0 is the copy a
conditional-communication skip step keeps (policy ``low``: the higher-scored copy 0;
``high``: copy K-1; ``random``: a per-token choice fixed by ``strategy.seed``), roles 1.. the
copies it drops. What a layer keeps between steps, and the bytes it holds, belong to the
buffer policy's store (:mod:`validate.stale`); the ``--auto-gc`` frees come from
:attr:`dicesim.plan.Plan.gc_frees`. Exchanges a synchronous step discards are waited for at that
step's end and dropped.

Lag is read from the data: a combine's handle carries the step whose tokens it moved.

Shape legend: B images in the network batch, T tokens per image, N = B*T token rows, K copies
per token, D hidden, R routed rows sent, Q rows received.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from dicesim.models import BlockWorkload
from dicesim.plan import Action, Plan
from dicesim.plan.expert.rules import cond_layers
from validate.dispatcher import RouteLayout, _DispatcherBase
from validate.model import DiTMoE, DiTMoEBlock, combine_copies
from validate.stale import Exchange, ReferenceStore, SeparateStore
from validate.tracing import RankTracer

_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def random_kept_copy(seed: int, layer: int, token_keys_N: np.ndarray, top_k: int) -> torch.Tensor:
    """Copy index each token keeps under the ``random`` policy: fixed per (seed, layer, token).

    A hash of the token's global key, not an RNG stream, so any partition of the tokens over
    ranks (or the single-process emulation) picks the same copy.
    """
    salt = _mix64(np.array([(seed * 1_000_003 + layer) & _MASK64], dtype=np.uint64))
    h = _mix64(token_keys_N.astype(np.uint64) ^ salt)
    return torch.from_numpy((h % np.uint64(top_k)).astype(np.int64))


def role_order(idx_NK: torch.Tensor, kept: int | None, kept_random_N: torch.Tensor | None) -> torch.Tensor:
    """Copy index of each role, ``role_copy_NK[:, 0]`` = the copy a skip step keeps.

    ``kept`` is :meth:`ExpertParallelStrategy.kept_copy` (copies are sorted by score); None means the
    per-token choice ``kept_random_N``.
    """
    N, K = idx_NK.shape
    dev = idx_NK.device
    copies_K = torch.arange(K, device=dev)
    if kept is not None:
        kept_N = torch.full((N,), kept, dtype=torch.int64, device=dev)
    else:
        kept_N = kept_random_N.to(dev)
    others_NK = copies_K.expand(N, K)[copies_K.expand(N, K) != kept_N.unsqueeze(1)].view(N, K - 1)
    return torch.cat([kept_N.unsqueeze(1), others_NK], dim=1)


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

    @property
    def held_total_nbytes(self) -> list[int]:
        return [sum(d.values()) for d in self.held_nbytes]


class PlanRunner:
    """Runs one strategy plan on one rank; ``denoise`` plugs into :func:`validate.sampler.sample`."""

    def __init__(self, *, model: DiTMoE, plan: Plan, dispatcher: _DispatcherBase, tracer: RankTracer,
                 rank: int, image_keys_B: list[int], shadow: _DispatcherBase | None = None,
                 probe: Callable[..., None] | None = None, sync_step: Callable[[], None] | None = None):
        self.model, self.plan, self.disp, self.tracer, self.shadow = model, plan, dispatcher, tracer, shadow
        self.sync_step = sync_step or torch.cuda.synchronize  # GPU step end (host-staged: compute stream only)
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
        producer = self.strategy.stale_weights == "producer"
        if self.strategy.buffer_policy == "separate":
            self.store: SeparateStore | ReferenceStore = SeparateStore(producer=producer)
        else:
            self.store = ReferenceStore(producer=producer, top_k=self.K, skip_layers=cond_layers(plan),
                                        disp=dispatcher)
        self._gc = plan.gc_frees
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

    # ------------------------------------------------------------------ sampler hook
    @torch.no_grad()
    def denoise(self, x_BCLL: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor, step_index: int) -> torch.Tensor:
        """Run step ``step_index`` of the plan on this rank's network batch."""
        t = step_index
        start = time.perf_counter()
        self._x_in = (x_BCLL.to(self.param_dtype), t_B, y_B)
        self._cur = {}
        self.store.begin_step()
        out = None
        for i, action in enumerate(self.plan.steps[t]):
            result = getattr(self, f"_do_{action.kind}")(action, t)
            if action.kind == "final":
                out = result
            for layer, what, tok_step in self._gc.get((t, i), ()):
                self.store.gc(what.exchange, layer, what.part, tok_step)
        if x_BCLL.is_cuda:
            self.sync_step()
        latency_s = time.perf_counter() - start
        self.tracer.end_step(t, int(latency_s * 1e9))
        self._end_of_step(t)
        self.record.step_latency_s.append(latency_s)
        self.record.exposed_comm_s.append(self.tracer.exposed_ns.get(t, 0) / 1e9)
        return out

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
        self._put("dispatch", a.layer, ex)

    def _do_run_experts(self, a: Action, t: int) -> None:
        ex = self._pending.pop(("d", a.layer, a.tok_step))
        recv_QD = ex.handle.wait(step=t)
        out_QD = self._run_experts(a.layer, recv_QD, ex.layout, t, ex.handle.tok_step)
        if not self._cached("dispatch", ex):
            ex.handle.release()
        handle = self.disp.combine(out_QD, ex.layout, layer=a.layer, step=t, tok_step=ex.handle.tok_step,
                                   async_op=True)
        combine = Exchange(handle=handle, layout=ex.layout, skip=ex.skip, score_NK=ex.score_NK)
        self._pending[("c", a.layer, a.tok_step)] = combine
        self._put("combine", a.layer, combine)

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
        l, cur = a.layer, self._cur[a.layer]
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

    def _exchange_sync(self, disp: _DispatcherBase, layer: int, t: int, cur: _LayerStep, *, record: bool,
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

    def _cached(self, kind: str, ex: Exchange) -> bool:
        return isinstance(self.store, ReferenceStore) and self.store.holds(kind, ex)

    def _put(self, kind: str, layer: int, ex: Exchange) -> None:
        """Reference policy: the new exchange becomes the layer's cache entry."""
        if isinstance(self.store, ReferenceStore):
            self.store.put(kind, layer, ex)

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
            if not self._cached(what, ex):
                held.update({(layer, f"{what}_{part}", tok_step): n for part, n in ex.handle.held_parts().items()})
            meta += ex.layout.meta_nbytes() + (0 if ex.score_NK is None else ex.score_NK.nbytes)
        self.record.held_nbytes.append(held)
        self.record.held_meta_nbytes.append(meta)
