"""The expert-parallel family's action kinds, its buffer kinds, and what each action does.

Action kinds (``layer`` = MoE layer, ``tok_step`` = step whose tokens the op carries), beside
the common ``embed``, ``attention``, ``final``, ``discard`` and ``drain``
(:class:`~dicesim.plan.vocabulary.ActionKind`):

- ``gate``: LN + modulation, router, local permutation of the k copies.
- ``sync_moe``: blocking count exchange, dispatch, experts, combine (``skip``: one copy per
  token, on synced layers with ``cond_scope="all"``; ``keep``: the dispatched rows stay for
  the experts the next step re-runs, ``async_work="every_step"``).
- ``local_moe``: every expert local (data-parallel baseline), no communication.
- ``issue_dispatch``: blocking count exchange, then an asynchronous dispatch all-to-all;
  ``skip`` = one copy per token (conditional communication).
- ``run_experts``: wait for the dispatch of (layer, tok_step), run that layer's experts,
  issue its combine asynchronously.
- ``wait_combine``: wait for the combine of (layer, tok_step) and refresh the layer's cache.
- ``shared_expert``: shared expert on all local tokens.
- ``local_combine``: weight cached/fresh copies by router score, sum, gated residual.

:func:`lower` gives each kind's effects over the one collective vocabulary: what the
simulator compiles (the executor runs the same kinds with torch.distributed).
"""

from __future__ import annotations

from enum import StrEnum

from dicesim.plan.vocabulary import (
    Action, ActionKind, Blocking, CollectiveKind, Compute, Effect, Forget, Issue, RowsCompute, Wait, WaitAll,
)


class MoEAction(StrEnum):
    """The expert-parallel family's own action kinds (see the module docstring)."""

    GATE = "gate"
    SYNC_MOE = "sync_moe"
    LOCAL_MOE = "local_moe"
    ISSUE_DISPATCH = "issue_dispatch"
    RUN_EXPERTS = "run_experts"
    SHARED_EXPERT = "shared_expert"
    WAIT_COMBINE = "wait_combine"
    LOCAL_COMBINE = "local_combine"


#: the kinds as plain module names: the plan's loops compare and build thousands of actions, and
#: reading a member off its enum class costs a lookup each time
EMBED, ATTENTION, FINAL, DISCARD, DRAIN = (ActionKind.EMBED, ActionKind.ATTENTION, ActionKind.FINAL,
                                          ActionKind.DISCARD, ActionKind.DRAIN)
GATE, SYNC_MOE, LOCAL_MOE, SHARED_EXPERT, LOCAL_COMBINE = (MoEAction.GATE, MoEAction.SYNC_MOE, MoEAction.LOCAL_MOE,
                                                          MoEAction.SHARED_EXPERT, MoEAction.LOCAL_COMBINE)
ISSUE_DISPATCH, RUN_EXPERTS, WAIT_COMBINE = MoEAction.ISSUE_DISPATCH, MoEAction.RUN_EXPERTS, MoEAction.WAIT_COMBINE


class Held(StrEnum):
    """What a rank keeps of an exchange or a layer's outputs between steps.

    ``dispatch_send`` / ``combine_recv`` hold this rank's own token copies (rows = local tokens
    x copies sent); ``dispatch_recv`` / ``combine_send`` hold the rows this rank received for
    its experts; ``cache`` holds every local token's k expert outputs; ``skip_cache`` the k-1
    dropped copies of every local token (reference buffer policy).
    """

    DISPATCH_SEND = "dispatch_send"
    DISPATCH_RECV = "dispatch_recv"
    COMBINE_SEND = "combine_send"
    COMBINE_RECV = "combine_recv"
    CACHE = "cache"
    SKIP_CACHE = "skip_cache"

    @property
    def exchange(self) -> str:
        """``dispatch`` or ``combine`` (the exchange whose tensor it is), else the kind itself."""
        return self.value.rsplit("_", 1)[0] if self.value.endswith(("_send", "_recv")) else self.value

    @property
    def part(self) -> str:
        """``send`` or ``recv`` for an exchange's tensor, else ``""``."""
        return self.value.rsplit("_", 1)[1] if self.value.endswith(("_send", "_recv")) else ""

    @classmethod
    def of(cls, exchange: str, part: str) -> "Held":
        return HELD_OF[(exchange, part)]


#: (exchange, part) -> the buffer kind (``Held.of``)
HELD_OF = {(h.exchange, h.part): h for h in Held if h.part}
CACHE, SKIP_CACHE = Held.CACHE, Held.SKIP_CACHE
DISPATCH_SEND, DISPATCH_RECV, COMBINE_SEND, COMBINE_RECV = (Held.DISPATCH_SEND, Held.DISPATCH_RECV, Held.COMBINE_SEND,
                                                            Held.COMBINE_RECV)


_D, _C, _N = CollectiveKind.DISPATCH, CollectiveKind.COMBINE, CollectiveKind.COUNTS
_EXPERTS = RowsCompute("experts")
_COMPUTE = (ActionKind.EMBED, ActionKind.ATTENTION, ActionKind.FINAL, MoEAction.GATE, MoEAction.LOCAL_MOE,
            MoEAction.SHARED_EXPERT, MoEAction.LOCAL_COMBINE)
#: every kind this family's plans use -> its effects (compute kinds cost their own name)
LOWERING: dict[StrEnum, tuple[Effect, ...]] = {
    **{k: (Compute(k.value),) for k in _COMPUTE},
    ActionKind.DISCARD: (Forget(),),
    ActionKind.DRAIN: (WaitAll(),),
    # blocking count exchange (the host needs the counts to size the dispatch), then the dispatch
    MoEAction.ISSUE_DISPATCH: (Blocking(_N), Issue(_D)),
    MoEAction.RUN_EXPERTS: (Wait(_D), _EXPERTS, Issue(_C)),
    MoEAction.WAIT_COMBINE: (Wait(_C),),
    MoEAction.SYNC_MOE: (Blocking(_N), Issue(_D), Wait(_D), _EXPERTS, Issue(_C), Wait(_C)),
}
#: sync_moe whose dispatched rows a later run_experts re-runs: the dispatch stays pending
_SYNC_KEEP = (Blocking(_N), Issue(_D), Wait(_D, release=False), _EXPERTS, Issue(_C), Wait(_C))
#: kinds whose effects do not depend on the action's other fields (sync_moe does: ``keep``)
STATIC_LOWERING: dict[StrEnum, tuple[Effect, ...]] = {k: v for k, v in LOWERING.items() if k != MoEAction.SYNC_MOE}


def lower(action: Action) -> tuple[Effect, ...]:
    """What ``action`` does, as effects the simulator compiles."""
    if action.keep and action.kind == MoEAction.SYNC_MOE:
        return _SYNC_KEEP
    try:
        return LOWERING[action.kind]
    except KeyError:
        raise ValueError(f"plan action {action.kind!r} is not an expert-parallel action kind") from None
