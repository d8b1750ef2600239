"""The per-step operation plan every rank executes, and what follows from it.

``build_plan`` turns a :class:`~dicesim.strategy.StrategyConfig` into the ordered list of
:class:`Action` each rank runs at each step. The simulator schedules these actions on
simpy streams; the executor runs them with torch.distributed. Lags (:func:`lag_table`)
and cross-step buffers (:func:`held_buffers`) are *derived* by replaying the plan, so the
rules live in one place: the issue/consume decisions below.

Action kinds (``layer`` = MoE layer, ``tok_step`` = step whose tokens the op carries):

- ``embed`` / ``final``: per-step work outside the blocks (layer -1).
- ``attention``: attention half of block ``layer``.
- ``gate``: LN + modulation, router, local permutation of the k copies.
- ``sync_moe``: blocking count exchange, dispatch, experts, combine.
- ``local_moe``: every expert local (data-parallel baseline), no communication.
- ``issue_dispatch``: blocking count exchange, then an asynchronous dispatch all-to-all;
  ``skip`` = one copy per token (conditional communication).
- ``run_experts``: wait for the dispatch of (layer, tok_step), run that layer's experts,
  issue its combine asynchronously.
- ``wait_combine``: wait for the combine of (layer, tok_step) and refresh the layer's cache.
- ``shared_expert``: shared expert on all local tokens.
- ``local_combine``: weight cached/fresh copies by router score, sum, gated residual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from dicesim.errors import ConfigError
from dicesim.strategy import StrategyConfig

ACTION_KINDS = (
    "embed", "attention", "gate", "sync_moe", "local_moe", "issue_dispatch", "run_experts",
    "shared_expert", "wait_combine", "local_combine", "final",
)


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    layer: int = -1
    tok_step: int = -1
    skip: bool = False


@dataclass(frozen=True)
class Plan:
    """Ordered actions per step, plus the facts they were built from."""

    strategy: StrategyConfig
    num_layers: int
    num_steps: int
    steps: tuple[tuple[Action, ...], ...]
    async_layers: tuple[int, ...]

    def __iter__(self) -> Iterator[tuple[int, tuple[Action, ...]]]:
        return iter(enumerate(self.steps))

    def layer_is_sync(self, layer: int, t: int) -> bool:
        """Whether ``layer`` runs synchronously (fresh output, lag 0) at step ``t``."""
        return layer not in self.async_layers or self.strategy.step_is_sync(t, self.num_steps)


def build_plan(strategy: StrategyConfig, num_layers: int, num_steps: int) -> Plan:
    """Every rank's ordered actions for ``num_steps`` steps of a ``num_layers``-layer model."""
    if num_layers < 1:
        raise ConfigError("model.depth", f"must be >= 1, got {num_layers}", ">= 1")
    if num_steps < 1:
        raise ConfigError("steps", f"must be >= 1, got {num_steps}", ">= 1")
    sync_set = strategy.sync_layer_set(num_layers)
    async_layers = tuple(l for l in range(num_layers) if l not in sync_set) if strategy.is_async else ()
    T = num_steps

    def step_async(t: int) -> bool:
        return 0 <= t < T and not strategy.step_is_sync(t, T)

    if strategy.scheme == "displaced":
        # D(l,t) is processed at t+1 and its combine used at t+2: issue only if both happen.
        def issues(t: int) -> bool:
            return step_async(t + 1) and step_async(t + 2)
    else:
        def issues(t: int) -> bool:
            return step_async(t + 1)

    ring_prev = {a: async_layers[i - 1] for i, a in enumerate(async_layers)}  # wraps to the last
    steps: list[tuple[Action, ...]] = []
    for t in range(T):
        acts: list[Action] = [Action("embed", -1, t)]
        full_sync = not step_async(t)
        for l in range(num_layers):
            acts += [Action("attention", l, t), Action("gate", l, t)]
            if strategy.scheme == "data_parallel":
                acts.append(Action("local_moe", l, t))
            elif full_sync or l in sync_set:
                acts.append(Action("sync_moe", l, t))
            else:
                if issues(t):
                    acts.append(Action("issue_dispatch", l, t, strategy.step_skips_copy(t)))
                if strategy.scheme == "displaced":
                    src_layer, src_step = l, t - 1
                else:  # interweaved: the previous async layer of this step, or the ring's last one of t-1
                    src_layer = ring_prev[l]
                    src_step = t if src_layer < l else t - 1
                if step_async(src_step) and issues(src_step):
                    acts.append(Action("run_experts", src_layer, src_step,
                                       strategy.step_skips_copy(src_step)))
            acts.append(Action("shared_expert", l, t))
            if not (full_sync or l in sync_set) and strategy.scheme != "data_parallel":
                used = t - 2 if strategy.scheme == "displaced" else t - 1
                if step_async(used) and issues(used):
                    acts.append(Action("wait_combine", l, used, strategy.step_skips_copy(used)))
            acts.append(Action("local_combine", l, t))
        acts.append(Action("final", -1, t))
        steps.append(tuple(acts))
    return Plan(strategy=strategy, num_layers=num_layers, num_steps=T, steps=tuple(steps),
                async_layers=async_layers)


@dataclass(frozen=True)
class LagTable:
    """Lag of each layer's expert output per step, for the kept and the dropped copy.

    ``kept[t, l]`` is the lag of the copy every token sends (for conditional communication:
    the one the policy keeps); ``dropped[t, l]`` that of the copy a skip step does not send
    (equal to ``kept`` when nothing is skipped). ``skip[t, l]``: the output used at (t, l)
    came from a one-copy dispatch.
    """

    kept: np.ndarray
    dropped: np.ndarray
    skip: np.ndarray

    @property
    def max_lag(self) -> int:
        return int(max(self.kept.max(initial=0), self.dropped.max(initial=0)))


def lag_table(plan: Plan) -> LagTable:
    """Replay the plan's cache updates and read off the producing step of each output used."""
    T, L = plan.num_steps, plan.num_layers
    kept = np.zeros((T, L), dtype=np.int32)
    dropped = np.zeros((T, L), dtype=np.int32)
    skip = np.zeros((T, L), dtype=bool)
    producer = [[0, 0] for _ in range(L)]  # (kept copy, dropped copy) producing step
    last_skip = [False] * L
    for t, actions in plan:
        for a in actions:
            if a.kind in ("sync_moe", "local_moe"):
                producer[a.layer] = [t, t]
                last_skip[a.layer] = False
            elif a.kind == "wait_combine":
                producer[a.layer][0] = a.tok_step
                if not a.skip:
                    producer[a.layer][1] = a.tok_step
                last_skip[a.layer] = a.skip
            elif a.kind == "local_combine":
                kept[t, a.layer] = t - producer[a.layer][0]
                dropped[t, a.layer] = t - producer[a.layer][1]
                skip[t, a.layer] = last_skip[a.layer]
    return LagTable(kept=kept, dropped=dropped, skip=skip)


@dataclass(frozen=True, slots=True)
class HeldBuffer:
    """A tensor a rank keeps from one step into the next.

    ``what``: ``dispatch_send`` / ``combine_recv`` hold this rank's own token copies
    (rows = local tokens x copies sent); ``dispatch_recv`` / ``combine_send`` hold the rows
    this rank received for its experts; ``cache`` holds every local token's k expert outputs.
    """

    layer: int
    what: str
    tok_step: int
    skip: bool


def held_buffers_by_step(plan: Plan) -> list[list[HeldBuffer]]:
    """Buffers alive at the end of every step (issued but not yet consumed, plus caches), one pass."""
    pending: dict[tuple[str, int, int], HeldBuffer] = {}
    by_step: list[list[HeldBuffer]] = []
    for t, actions in plan:
        for a in actions:
            if a.kind == "issue_dispatch":
                pending[("d", a.layer, a.tok_step)] = HeldBuffer(a.layer, "dispatch", a.tok_step, a.skip)
            elif a.kind == "run_experts":
                pending.pop(("d", a.layer, a.tok_step))
                pending[("c", a.layer, a.tok_step)] = HeldBuffer(a.layer, "combine", a.tok_step, a.skip)
            elif a.kind == "wait_combine":
                pending.pop(("c", a.layer, a.tok_step))
        out: list[HeldBuffer] = []
        for hb in pending.values():
            out += [HeldBuffer(hb.layer, f"{hb.what}_send", hb.tok_step, hb.skip),
                    HeldBuffer(hb.layer, f"{hb.what}_recv", hb.tok_step, hb.skip)]
        # the cache carries a layer's last outputs into the next step when that step reads it
        if t + 1 < plan.num_steps:
            out += [HeldBuffer(l, "cache", -1, False) for l in plan.async_layers if not plan.layer_is_sync(l, t + 1)]
        by_step.append(out)
    return by_step


def held_buffers(plan: Plan, t: int) -> list[HeldBuffer]:
    """Buffers alive at the end of step ``t``; see :func:`held_buffers_by_step`."""
    return held_buffers_by_step(plan)[t]


def buffer_rows(hb: HeldBuffer, *, local_tokens: int, top_k: int, recv_rows: int) -> int:
    """Rows of a held buffer; ``recv_rows`` = rows this rank received for (layer, tok_step)."""
    own = local_tokens * (1 if hb.skip else top_k)
    return {
        "dispatch_send": own, "combine_recv": own,
        "dispatch_recv": recv_rows, "combine_send": recv_rows,
        "cache": local_tokens * top_k,
    }[hb.what]
