"""The expert-parallel family's config: the one definition simulator and executor share.

Every rank holds a slice of the routed experts; each MoE layer exchanges tokens with
all-to-alls. A strategy of this family is an immutable, validated
:class:`ExpertParallelStrategy`; :mod:`dicesim.plan.expert` turns it into the exact sequence of
operations every rank runs and derives lags and buffers from that sequence, so no rule is
written twice. Semantics follow ``strategies.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Literal, Union

from pydantic import Field, field_validator

from dicesim.errors import ConfigError
from dicesim.limits import MAX_STEPS
from dicesim.strategy.base import FamilyConfig, Strategy

Scheme = Literal["sync", "displaced", "interweaved", "data_parallel"]
SyncPreset = Literal["none", "deep", "shallow", "alternate"]
CondPolicy = Literal["low", "high", "random"]
AsyncWork = Literal["consumed_only", "every_step"]
CondScope = Literal["async", "all"]
CondGate = Literal["reference", "every_candidate"]
SlotOrder = Literal["shared_first", "combine_first"]
BufferPolicy = Literal["separate", "reference", "reference_gc"]
SCHEMES: tuple[str, ...] = ("sync", "displaced", "interweaved", "data_parallel")
SYNC_PRESETS: tuple[str, ...] = ("none", "deep", "shallow", "alternate")
ASYNC_SCHEMES = frozenset({"displaced", "interweaved"})


class ExpertParallelStrategy(Strategy):
    """How each MoE layer communicates at each step.

    ``cond_interval`` 1 means every step sends both copies; with ``n > 1`` a step is a
    *candidate* for sending one copy per token (``cond_policy`` picks which to drop) as
    ``cond_gate`` says (:meth:`cond_candidate`).
    ``warmup_steps`` is raised to 1 for asynchronous schemes: nothing is cached before the
    first step. ``sync_every`` 0 disables periodic synchronisation.

    Five fields choose between the DICE reference code's semantics and dicesim's original
    ones (docs/strategies.md cites the reference lines); the defaults are the original ones,
    the paper's presets pick the reference's:

    - ``async_work``: ``every_step`` issues dispatch, experts and combine at every
      asynchronous step, the last one included, re-runs the experts on a sync step's
      dispatched rows at the next asynchronous step, discards what is in flight when a
      synchronous step starts and drains it after the last step (the reference);
      ``consumed_only`` issues only work whose result is used.
    - ``cond_scope``: conditional communication on ``all`` layers (the reference: synced
      layers too, on asynchronous steps) or on asynchronous layers only (``async``).
    - ``slot_order``: ``combine_first`` waits for the old combine before the shared expert
      (the reference); ``shared_first`` runs the shared expert while it is in flight.
    - ``buffer_policy``: ``separate`` counts a pending exchange's send and receive buffers
      plus a per-layer output cache (an upper bound); ``reference`` keeps the reference's
      per-layer cache entries (the combine receive buffer is the stale output);
      ``reference_gc`` adds its ``--auto-gc`` (finished send buffers freed; with
      ``interweaved`` also finished dispatch receive buffers).
    - ``cond_gate``: ``reference`` skips a copy only on candidate steps ``(T - t) % n != 0``
      (the reference counts its steps down) when the layer's skip-cache entry exists: a full
      output stores it, a one-copy output reads and deletes it, a fully synchronous step clears
      it (``expertpara/diep.py:61-68``, ``ep_fwd.py:177-187``, ``diffusion/rectified_flow.py:102-105``);
      a plan where a one-copy output finds no entry is refused, as the reference fails there.
      ``every_candidate`` skips on every candidate step ``t % n != 0``, the entry kept until
      the next full output replaces it.
    """

    family: ClassVar[str] = "expert_parallel"
    allowed: ClassVar[dict[str, tuple[str, ...]]] = {
        "scheme": SCHEMES, "sync_layers": SYNC_PRESETS + ("a list of layer indices",),
        "cond_policy": ("low", "high", "random"), "stale_weights": ("current", "producer"),
        "count_comm": ("shared", "separate"), "async_work": ("consumed_only", "every_step"),
        "cond_scope": ("async", "all"), "slot_order": ("shared_first", "combine_first"),
        "buffer_policy": ("separate", "reference", "reference_gc"),
        "cond_gate": ("reference", "every_candidate"),
    }

    scheme: Scheme = "sync"
    sync_layers: Union[SyncPreset, tuple[int, ...]] = "none"
    cond_interval: int = Field(1, ge=1, le=MAX_STEPS)
    cond_policy: CondPolicy = "low"
    warmup_steps: int = Field(1, ge=0, le=MAX_STEPS)
    cooldown_steps: int = Field(0, ge=0, le=MAX_STEPS)
    sync_every: int = Field(0, ge=0, le=MAX_STEPS)
    stale_weights: Literal["current", "producer"] = "current"
    count_comm: Literal["shared", "separate"] = "shared"
    seed: int = 0  # fixes the per-token choice of the `random` conditional-communication policy
    async_work: AsyncWork = "consumed_only"
    cond_scope: CondScope = "async"
    slot_order: SlotOrder = "shared_first"
    buffer_policy: BufferPolicy = "separate"
    cond_gate: CondGate = "every_candidate"

    @field_validator("sync_layers", mode="before")
    @classmethod
    def _layers_tuple(cls, v: object) -> object:
        if isinstance(v, (list, set, frozenset)):
            try:
                return tuple(sorted(int(x) for x in v))
            except (TypeError, ValueError, OverflowError):
                return tuple(v)  # not layer indices: the field's validation names the bad item
        return v

    @property
    def is_async(self) -> bool:
        return self.scheme in ASYNC_SCHEMES

    @property
    def effective_warmup(self) -> int:
        return max(self.warmup_steps, 1) if self.is_async else self.warmup_steps

    def sync_layer_set(self, num_layers: int) -> frozenset[int]:
        """Layers that always run synchronously, for a model of ``num_layers`` MoE layers."""
        sl = self.sync_layers
        if isinstance(sl, tuple):
            bad = [l for l in sl if not 0 <= l < num_layers]
            if bad:
                raise ConfigError("strategy.sync_layers", f"layer {bad[0]} out of range for {num_layers} layers",
                                  f"0..{num_layers - 1}")
            return frozenset(sl)
        half = num_layers // 2
        by_preset = {
            "none": (),
            "deep": range(half, num_layers),  # the paper's best-quality choice
            "shallow": range(0, half),
            "alternate": range(1, num_layers, 2),  # odd layers sync, so layer 0 starts the async ring
        }
        return frozenset(by_preset[sl])

    def check_model(self, num_layers: int) -> None:
        self.sync_layer_set(num_layers)

    def step_is_sync(self, t: int, num_steps: int) -> bool:
        """Whether step ``t`` runs every layer synchronously (warm-up, cool-down, periodic)."""
        if not self.is_async:
            return True
        if t < self.effective_warmup or t >= num_steps - self.cooldown_steps:
            return True
        return self.sync_every > 0 and t % self.sync_every == 0

    def kept_copy(self, top_k: int) -> int | None:
        """Score rank (0 = highest) of the copy a skip step keeps; None for ``random``, which
        keeps a fixed per-token random copy. ``low`` drops the lower-scored copy: it keeps 0."""
        return {"low": 0, "high": top_k - 1}.get(self.cond_policy)

    def cond_candidate(self, t: int, num_steps: int) -> bool:
        """Whether step ``t`` of ``num_steps`` may send one copy per token (whether a layer does is
        :func:`dicesim.plan.expert.rules.layer_skips_copy`'s answer). ``reference``: the
        reference's counter ``i = T - t`` (``rectified_flow.py:83-91``) and ``i % n != 0``
        (``diep.py:68``); ``every_candidate``: ``t % n != 0``. The same steps when n divides T."""
        n = self.cond_interval
        return n > 1 and ((num_steps - t) if self.cond_gate == "reference" else t) % n != 0

    def describe(self) -> str:
        parts = [self.scheme]
        if self.sync_layers != "none":
            parts.append(f"sync_layers={self.sync_layers}")
        if self.cond_interval > 1:
            parts.append(f"cond=({self.cond_interval},{self.cond_policy})")
        if self.cooldown_steps or self.sync_every or self.warmup_steps > 1:
            parts.append(f"warmup={self.effective_warmup},cooldown={self.cooldown_steps},every={self.sync_every}")
        if self.count_comm != "shared":
            parts.append("counts on separate communicator")
        if self.is_async:
            differ = [f"{k}={getattr(self, k)}" for k, v in REFERENCE_SEMANTICS.items()
                      if getattr(self, k) != v and (k not in _COND_FIELDS or self.cond_interval > 1)]
            parts += differ or ["as the DICE code"]
        return " + ".join(parts)


#: what the DICE reference code runs (docs/strategies.md, "The reference implementation");
#: ``--auto-gc`` because the paper's memory saving of interweaved needs it
REFERENCE_SEMANTICS: dict[str, str] = dict(async_work="every_step", cond_scope="all", slot_order="combine_first",
                                           buffer_policy="reference_gc", cond_gate="reference")
#: semantics fields that matter only with conditional communication
_COND_FIELDS = frozenset({"cond_scope", "cond_gate"})


#: preset name -> fields (docs/strategies.md); read-only
PRESETS: Mapping[str, Mapping[str, object]] = MappingProxyType({
    "sync": dict(scheme="sync"),
    "data_parallel": dict(scheme="data_parallel"),
    "displaced": dict(scheme="displaced", **REFERENCE_SEMANTICS),
    "interweaved": dict(scheme="interweaved", **REFERENCE_SEMANTICS),
    "displaced-deep": dict(scheme="displaced", sync_layers="deep", **REFERENCE_SEMANTICS),
    "interweaved-deep": dict(scheme="interweaved", sync_layers="deep", **REFERENCE_SEMANTICS),
    "dice": dict(scheme="interweaved", sync_layers="deep", cond_interval=2, cond_policy="low", **REFERENCE_SEMANTICS),
})

#: what comparisons put beside the other families: the baselines (sync, data parallel) and the DICE ladder
FAMILY = FamilyConfig(name="expert_parallel", config=ExpertParallelStrategy, presets=PRESETS,
                      compare=("sync", "data_parallel", "displaced", "interweaved", "interweaved-deep", "dice"))
