"""The sequence-parallel family's plan rules: what every rank runs at every step, and the K/V lags.

:func:`build` turns a :class:`~dicesim.strategy.sequence.SequenceParallelStrategy` into the
ordered actions (:mod:`dicesim.plan.sequence.kinds`) every rank runs; every rank runs the same
ones (rank 0 is the root of the scatter and the broadcast). The K/V lags (:func:`lag_table`)
are derived by replaying the plan, so the rules live in one place: the loop below, and
:class:`KVQueue`, the comm manager's queue of layers waiting to be sent.

DistriFusion, as the reference's comm manager runs it (``seqpara/df.py:90-118``,
``comm_manager.py``): at each attention layer, wait for the gather that carries the other ranks'
K/V of the previous step (or, when none is pending, gather this step's K/V at once, blocking),
then queue this layer's fresh K/V; every fourth queued layer sends the queue in one flattened
asynchronous all-gather. Layers left in the queue when ``L % 4 != 0`` are sent when the next
step queues layer 0 (or by the ``clear()`` before a warm-up step). Gathers of the last step are
issued too (the reference does not know it is the last) and waited for when the sampler
synchronises.

Ulysses (``kv_exchange = "ulysses"``; DeepSpeed-Ulysses, microsoft/DeepSpeed@38327e0
``deepspeed/sequence/layer.py:386-416``, not in the DICE reference): at each attention layer,
three blocking all-to-alls turn this rank's Q, K and V (its token slice, every head) into every
token's Q, K and V for H/W heads; attention runs over the whole sequence with those heads; one
all-to-all brings the output back to the token slice; then the output projection. Nothing is kept
across layers or steps: K/V are always this step's (lag 0).

Ring attention (``kv_exchange = "ring"``; zhuzilin/ring-flash-attention@8996282
``ring_flash_attn/ring_flash_attn.py:26-63``, not in the DICE reference): at each attention layer,
``ring_attend`` passes the K/V block in hand to the next rank W-1 times while attending to it, and
``ring_last`` attends to the last block received, then projects. The plan does not know W (it is
built per strategy, layer count and step count): the W-1 passes are one action, whose collective
moves them one after the other and whose compute covers W-1 blocks (the layout's ``ring_passes``).
Nothing is kept across layers or steps: lag 0.

USP (``kv_exchange = "usp"``; feifeibear/long-context-attention@56118e0
``yunchang/hybrid/attn_layer.py:111-158``, not in the DICE reference): ``heads_in`` inside the Ulysses
group, ``usp_attend`` (the ring group's passes under the blocks in hand) and ``usp_last``, then
``heads_out`` and ``attn_out``. A degree of 1 leaves the collectives it names empty (the layout's
``empty_kinds``: nobody issues them), so USP at ``ulysses_degree = 1`` runs ring attention's work and at
``ulysses_degree = world`` Ulysses'. Lag 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dicesim.plan.sequence.kinds import (
    ATTEND, ATTEND_HEADS, ATTN_OUT, BROADCAST, DRAIN, EMBED, FINAL, GATHER_TOKENS, HEADS_IN, HEADS_OUT, KV_CLEAR,
    KV_ENQUEUE, KV_FRESH, KV_ISSUE, KV_SYNC, KV_WAIT, MOE, QKV, RING_ATTEND, RING_LAST, SCATTER, USP_ATTEND, USP_LAST,
)
from dicesim.plan.vocabulary import Action, LagTable, Plan
from dicesim.strategy.sequence import KV_GROUP_LAYERS, SequenceParallelStrategy


class KVQueue:
    """The comm manager's queue (``comm_manager.py:79-97``): consecutive layers of one step's K/V
    waiting to be sent; ``push`` returns the flattened gathers that queuing a layer sends."""

    def __init__(self, group_layers: int = KV_GROUP_LAYERS):
        self.group_layers = group_layers
        self.first, self.count, self.tok_step = 0, 0, -1

    def flush(self) -> list[Action]:
        """Send what is queued (``_communicate``), as one gather; nothing if the queue is empty."""
        if not self.count:
            return []
        out = [Action(KV_ISSUE, self.first, self.tok_step, span=self.count)]
        self.count = 0
        return out

    def push(self, layer: int, t: int) -> tuple[list[Action], list[Action]]:
        """Queue ``layer`` of step ``t``: the gathers sent before its K/V is copied into the own slot
        (what the previous step left queued, sent when layer 0 comes: comm_manager.py:90-91), and after
        (the queue, once it holds 4 layers: comm_manager.py:96-97)."""
        before = self.flush() if layer == 0 else []
        if not self.count:
            self.first, self.tok_step = layer, t
        self.count += 1
        return before, self.flush() if self.count == self.group_layers else []


def build(strategy: SequenceParallelStrategy, num_layers: int, num_steps: int, rules: Any) -> Plan:
    """Every rank's ordered actions for ``num_steps`` steps of a ``num_layers``-block model;
    ``rules``: the family object the plan asks for what it implies (lags, buffers)."""
    T, L = num_steps, num_layers
    queue = KVQueue()
    handle: dict[int, Action] = {}  # layer -> the last gather that carries it (comm_manager.handles)
    waited: set[Action] = set()  # gathers some layer has waited for
    steps: list[tuple[Action, ...]] = []
    for t in range(T):
        acts: list[Action] = []
        if strategy.kv_async and t > 0 and strategy.step_is_sync(t, T):
            # sp_require_sync clears the comm manager before a warm-up step (diffusion/warmup.py:29-32):
            # it sends what is queued and waits for every gather in flight (comm_manager.py:99-106)
            acts += queue.flush()
            acts.append(Action(KV_CLEAR, -1, t))
            handle.clear()
        # every rank embeds the whole batch; rank 0's tokens are scattered, its conditioning broadcast
        acts += [Action(EMBED, -1, t), Action(SCATTER, -1, t), Action(BROADCAST, -1, t)]
        for l in range(L):
            acts.append(Action(QKV, l, t))
            if strategy.ulysses:  # q, k, v to heads, attention over every token, output back, projection
                acts += [Action(HEADS_IN, l, t), Action(ATTEND_HEADS, l, t), Action(HEADS_OUT, l, t),
                         Action(ATTN_OUT, l, t), Action(MOE, l, t)]
                continue
            if strategy.usp:  # Ulysses all-to-alls in, the ring over the exchanged heads, the all-to-all out, projection
                acts += [Action(HEADS_IN, l, t), Action(USP_ATTEND, l, t), Action(USP_LAST, l, t),
                         Action(HEADS_OUT, l, t), Action(ATTN_OUT, l, t), Action(MOE, l, t)]
                continue
            if strategy.ring:  # W-1 K/V passes under the attention on the blocks in hand, the last block, projection
                acts += [Action(RING_ATTEND, l, t), Action(RING_LAST, l, t), Action(MOE, l, t)]
                continue
            if not strategy.kv_async:
                acts.append(Action(KV_SYNC, l, t))
            elif l not in handle:  # nothing gathered for this layer since the last clear: gather now, blocking
                acts.append(Action(KV_FRESH, l, t))
            elif handle[l] not in waited:  # the first layer of a gather waits; the others find it done
                gather = handle[l]
                waited.add(gather)
                acts.append(Action(KV_WAIT, gather.layer, gather.tok_step, span=gather.span))
            if strategy.kv_async:
                before, after = queue.push(l, t)
                acts += before + [Action(KV_ENQUEUE, l, t)] + after
                for gather in before + after:
                    handle.update(dict.fromkeys(gather.layers, gather))
            acts += [Action(ATTEND, l, t), Action(MOE, l, t)]
        acts += [Action(GATHER_TOKENS, -1, t), Action(FINAL, -1, t)]
        if t == T - 1 and any(g not in waited for g in handle.values()):
            acts.append(Action(DRAIN, -1, t))  # the sampler synchronises the device before it returns
        steps.append(tuple(acts))
    async_layers = tuple(range(L)) if strategy.kv_async else ()
    return Plan(strategy=strategy, num_layers=L, num_steps=T, steps=tuple(steps), async_layers=async_layers,
                rules=rules)


def lag_table(plan: Plan) -> LagTable:
    """Replay the plan: the K/V of the other ranks' slices a layer attends to at step t came from the
    step of the gather that last filled that layer's buffer slots (a fresh gather: this step)."""
    T, L = plan.num_steps, plan.num_layers
    lag = np.zeros((T, L), dtype=np.int32)
    producer = [0] * L
    for t, actions in plan:
        for a in actions:
            if a.kind == KV_SYNC or a.kind == KV_FRESH or a.kind == HEADS_IN or a.kind == RING_ATTEND:
                producer[a.layer] = t
            elif a.kind == KV_WAIT:
                for l in a.layers:
                    producer[l] = a.tok_step
            elif a.kind == ATTEND or a.kind == ATTEND_HEADS or a.kind == RING_LAST or a.kind == USP_LAST:
                lag[t, a.layer] = t - producer[a.layer]
    # K and V travel together: one lag per (step, layer); no copy is ever dropped
    return LagTable(kept=lag, dropped=lag.copy(), skip=np.zeros((T, L), dtype=bool))
