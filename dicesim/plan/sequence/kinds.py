"""The sequence-parallel family's action kinds, its buffer kind, and what each action does.

Action kinds, beside the common ``embed``, ``final`` and ``drain``
(:class:`~dicesim.plan.vocabulary.ActionKind`); ``layer`` = block, ``tok_step`` = the step whose
keys and values a K/V collective carries, ``span`` = the layers it covers:

- ``scatter``: rank 0 scatters every image's token slices (``sp_fwd.py:193-222``);
- ``broadcast``: rank 0 broadcasts the conditioning (``sp_fwd.py:183-191``);
- ``qkv``: adaLN, LayerNorm + modulate, QKV projection of this rank's tokens;
- ``kv_sync``: ``sp``: a blocking all-gather of K, then one of V (``sp_fwd.py:74-75``);
- ``kv_fresh``: DistriFusion with no gather pending for the layer (the first and warm-up steps): a
  blocking all-gather of this layer's stacked K and V into the comm manager's buffers (``df.py:100-106``);
- ``kv_wait``: wait for the flattened gather of (layer .. layer+span-1, tok_step) (``df.py:97-99``; the
  later layers of the group find it done);
- ``kv_enqueue``: copy this rank's fresh K/V of the layer into its own buffer slot (``comm_manager.py:94``;
  a device copy, not timed);
- ``kv_issue``: the comm manager sends the queued layers' K/V of ``tok_step`` in one asynchronous,
  flattened all-gather (``comm_manager.py:79-97``);
- ``kv_clear``: the comm manager's ``clear()`` before a warm-up step: wait for every gather in flight
  (``comm_manager.py:99-106``);
- ``heads_in`` (Ulysses): three blocking all-to-alls, Q, K then V, each from (this rank's token slice,
  every head) to (every token, this rank's H/W heads) (microsoft/DeepSpeed@38327e0
  ``deepspeed/sequence/layer.py:386-396``);
- ``attend_heads`` (Ulysses): attention of every token's queries against every key with this rank's
  H/W heads (``layer.py:414``, the wrapped local attention);
- ``heads_out`` (Ulysses): one blocking all-to-all of the attention output back to (token slice, every
  head) (``layer.py:416``);
- ``attn_out`` (Ulysses): output projection and gated residual of this rank's tokens;
- ``ring_attend`` (ring attention): the layer's W-1 K/V passes, each a batched send of the K/V block in
  hand to rank+1 and receive of rank-1's (zhuzilin/ring-flash-attention@8996282
  ``ring_flash_attn/utils.py:113-151``, ``RingComm.send_recv_kv``, ``batch_isend_irecv``), issued as one
  ``kv_ring`` collective that moves them one after the other, while the compute stream attends this
  rank's queries to the W-1 blocks it holds in turn and merges each partial output into a float32
  running output with the log-sum-exp rule (``ring_flash_attn.py:26-63``, ``utils.py:33-50``), then waits;
- ``ring_last`` (ring attention): the attention on the last block received and its merge, the cast back,
  then the output projection and gated residual of this rank's tokens;
- ``usp_attend`` (USP, after ``heads_in`` inside the Ulysses group): the ring group's R-1 K/V passes (R =
  world / ulysses_degree; each block: the Ulysses group's tokens with this rank's H/ulysses_degree heads) as
  one ``kv_ring`` collective under the attention on the blocks in hand, as ``ring_attend`` does
  (feifeibear/long-context-attention@56118e0 yunchang/hybrid/attn_layer.py:132-146: ring attention on the
  all-to-all's output over ``ring_pg``);
- ``usp_last`` (USP): the attention on the last block and its merge (on a one-rank ring: the whole
  attention, no merge); then ``heads_out`` and ``attn_out`` as under Ulysses (attn_layer.py:156-158);
- ``attend``: this rank's queries against every key of their images, output projection, residual;
- ``moe``: gate, all E experts on the local tokens, shared expert, combine (``models.py:322-323``);
- ``gather_tokens``: the all-gather of every rank's tokens at the end of the blocks (``models.py:677-678``).

:func:`lower` gives each kind's effects over the one collective vocabulary (what the simulator
compiles; the executor runs the same kinds with torch.distributed).
"""

from __future__ import annotations

from enum import StrEnum

from dicesim.plan.vocabulary import (
    Action, ActionKind, CollectiveKind, Compute, Effect, Issue, Wait, WaitAll,
)


class SeqAction(StrEnum):
    """The sequence-parallel family's own action kinds (see the module docstring)."""

    SCATTER = "scatter"
    BROADCAST = "broadcast"
    QKV = "qkv"
    KV_SYNC = "kv_sync"
    KV_FRESH = "kv_fresh"
    KV_WAIT = "kv_wait"
    KV_ENQUEUE = "kv_enqueue"
    KV_ISSUE = "kv_issue"
    KV_CLEAR = "kv_clear"
    ATTEND = "attend"
    MOE = "moe"
    GATHER_TOKENS = "gather_tokens"
    HEADS_IN = "heads_in"
    ATTEND_HEADS = "attend_heads"
    HEADS_OUT = "heads_out"
    ATTN_OUT = "attn_out"
    RING_ATTEND = "ring_attend"
    RING_LAST = "ring_last"
    USP_ATTEND = "usp_attend"
    USP_LAST = "usp_last"


class SeqHeld(StrEnum):
    """What a rank keeps between steps: the comm manager's K/V buffer of one layer (every rank's
    slot: W x the stacked K and V of a slice, ``comm_manager.py:59-73``)."""

    KV_BUFFER = "kv_buffer"


#: the kinds as plain module names (the plan's loops build thousands of actions)
EMBED, FINAL, DRAIN = ActionKind.EMBED, ActionKind.FINAL, ActionKind.DRAIN
(SCATTER, BROADCAST, QKV, KV_SYNC, KV_FRESH, KV_WAIT, KV_ENQUEUE, KV_ISSUE, KV_CLEAR, ATTEND, MOE,
 GATHER_TOKENS, HEADS_IN, ATTEND_HEADS, HEADS_OUT, ATTN_OUT, RING_ATTEND, RING_LAST, USP_ATTEND, USP_LAST) = tuple(SeqAction)
KV_BUFFER = SeqHeld.KV_BUFFER

_KV, _ROWS = CollectiveKind.KV_GATHER, CollectiveKind.TOKEN_GATHER
_SC, _BC = CollectiveKind.SCATTER, CollectiveKind.BROADCAST
_HA, _KR = CollectiveKind.HEAD_A2A, CollectiveKind.KV_RING
#: every kind this family's plans use -> its effects; compute ops cost their names (cost-model keys)
LOWERING: dict[StrEnum, tuple[Effect, ...]] = {
    EMBED: (Compute("embed"),),
    FINAL: (Compute("final"),),
    DRAIN: (WaitAll(),),
    SCATTER: (Issue(_SC), Wait(_SC)),
    BROADCAST: (Issue(_BC), Wait(_BC)),
    QKV: (Compute("sp_qkv"),),
    KV_SYNC: (Issue(_ROWS), Wait(_ROWS), Issue(_ROWS), Wait(_ROWS)),  # K, then V
    KV_FRESH: (Issue(_KV), Wait(_KV)),
    KV_WAIT: (Wait(_KV),),
    KV_ENQUEUE: (),
    KV_ISSUE: (Issue(_KV),),
    KV_CLEAR: (WaitAll(),),
    ATTEND: (Compute("sp_attend"),),
    # Ulysses: blocking all-to-alls (deepspeed/sequence/layer.py:277-278: without an overlap stream the handle is
    # None, :336, and single_all_to_all runs with async_op=False)
    HEADS_IN: (Issue(_HA), Wait(_HA)) * 3,  # Q, K, V: three calls (layer.py:368 "TODO Merge three alltoall calls")
    ATTEND_HEADS: (Compute("uly_attend"),),
    HEADS_OUT: (Issue(_HA), Wait(_HA)),
    ATTN_OUT: (Compute("uly_proj"),),
    # ring attention: the W-1 passes under the attention on the blocks in hand (the passes move one after the
    # other inside the kv_ring collective: dicesim/sim/engine/groupcomm.py), then the last block and the projection
    RING_ATTEND: (Issue(_KR), Compute("ring_blocks"), Wait(_KR)),
    RING_LAST: (Compute("ring_block"), Compute("ring_proj")),
    # USP: the ring's passes over the ring group under the blocks in hand, then the last block (the all-to-alls
    # around them are HEADS_IN / HEADS_OUT over the Ulysses group: dicesim/sim/engine/groupcomm.py)
    USP_ATTEND: (Issue(_KR), Compute("usp_blocks"), Wait(_KR)),
    USP_LAST: (Compute("usp_block"),),
    # every expert is local: the data-parallel expert cost over this rank's tokens
    MOE: (Compute("gate"), Compute("local_moe"), Compute("shared_expert"), Compute("local_combine")),
    GATHER_TOKENS: (Issue(_ROWS), Wait(_ROWS)),
}
#: every kind's effects depend on the kind alone
STATIC_LOWERING = LOWERING


def lower(action: Action) -> tuple[Effect, ...]:
    """What ``action`` does, as effects the simulator compiles."""
    try:
        return LOWERING[action.kind]
    except KeyError:
        raise ValueError(f"plan action {action.kind!r} is not a sequence-parallel action kind") from None
