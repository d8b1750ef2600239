"""Strategy configuration: the one definition of a strategy that simulator and executor share.

A strategy is an immutable, validated :class:`StrategyConfig`. :mod:`dicesim.plan` turns it
into the exact sequence of operations every rank runs, and derives lags and buffers from
that sequence, so no rule is written twice. Semantics follow ``strategies.md``.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dicesim.errors import ConfigError, config_error_from_pydantic

Scheme = Literal["sync", "displaced", "interweaved", "data_parallel"]
SyncPreset = Literal["none", "deep", "shallow", "alternate"]
CondPolicy = Literal["low", "high", "random"]
AsyncWork = Literal["consumed_only", "every_step"]
CondScope = Literal["async", "all"]
SlotOrder = Literal["shared_first", "combine_first"]
BufferPolicy = Literal["separate", "reference", "reference_gc"]
SCHEMES: tuple[str, ...] = ("sync", "displaced", "interweaved", "data_parallel")
SYNC_PRESETS: tuple[str, ...] = ("none", "deep", "shallow", "alternate")
ASYNC_SCHEMES = frozenset({"displaced", "interweaved"})


class StrategyConfig(BaseModel):
    """How each MoE layer communicates at each step.

    ``cond_interval`` 1 means every step sends both copies; ``n > 1`` means steps with
    ``t % n != 0`` send one copy per token (``cond_policy`` picks which to drop).
    ``warmup_steps`` is raised to 1 for asynchronous schemes: nothing is cached before the
    first step. ``sync_every`` 0 disables periodic synchronisation.

    Four fields choose between the DICE reference code's semantics and dicesim's original
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
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    scheme: Scheme = "sync"
    sync_layers: Union[SyncPreset, tuple[int, ...]] = "none"
    cond_interval: int = Field(1, ge=1)
    cond_policy: CondPolicy = "low"
    warmup_steps: int = Field(1, ge=0)
    cooldown_steps: int = Field(0, ge=0)
    sync_every: int = Field(0, ge=0)
    stale_weights: Literal["current", "producer"] = "current"
    count_comm: Literal["shared", "separate"] = "shared"
    seed: int = 0  # fixes the per-token choice of the `random` conditional-communication policy
    async_work: AsyncWork = "consumed_only"
    cond_scope: CondScope = "async"
    slot_order: SlotOrder = "shared_first"
    buffer_policy: BufferPolicy = "separate"

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

    def step_skips_copy(self, t: int) -> bool:
        """Whether a dispatch carrying step ``t``'s tokens sends only one copy per token."""
        return self.cond_interval > 1 and t % self.cond_interval != 0

    def layer_skips_copy(self, exchange_is_async: bool, t: int, num_steps: int) -> bool:
        """Whether an exchange of step ``t``'s tokens sends one copy per token.

        Asynchronous exchanges follow :meth:`step_skips_copy`. Synchronous ones (synced layers)
        skip too with ``cond_scope="all"``, but never on a fully synchronous step: the reference
        clears its skip cache when such a step starts, so nothing is there to reuse.
        """
        if not self.is_async or not self.step_skips_copy(t):
            return False
        return exchange_is_async or (self.cond_scope == "all" and not self.step_is_sync(t, num_steps))

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
                      if getattr(self, k) != v and (k != "cond_scope" or self.cond_interval > 1)]
            parts += differ or ["as the DICE code"]
        return " + ".join(parts)


#: what the DICE reference code runs (docs/strategies.md, "The reference implementation");
#: ``--auto-gc`` because the paper's memory saving of interweaved needs it
REFERENCE_SEMANTICS: dict[str, str] = dict(async_work="every_step", cond_scope="all", slot_order="combine_first",
                                           buffer_policy="reference_gc")


def _presets() -> dict[str, dict]:
    ref = REFERENCE_SEMANTICS
    return {
        "sync": dict(scheme="sync"),
        "data_parallel": dict(scheme="data_parallel"),
        "displaced": dict(scheme="displaced", **ref),
        "interweaved": dict(scheme="interweaved", **ref),
        "displaced-deep": dict(scheme="displaced", sync_layers="deep", **ref),
        "interweaved-deep": dict(scheme="interweaved", sync_layers="deep", **ref),
        "dice": dict(scheme="interweaved", sync_layers="deep", cond_interval=2, cond_policy="low", **ref),
    }


STRATEGY_NAMES: tuple[str, ...] = tuple(_presets())
#: strategies `dicesim compare` puts side by side by default
COMPARE_DEFAULT: tuple[str, ...] = ("sync", "displaced", "interweaved", "interweaved-deep", "dice")


_ALLOWED = {
    "scheme": SCHEMES, "sync_layers": SYNC_PRESETS + ("a list of layer indices",),
    "cond_policy": ("low", "high", "random"), "stale_weights": ("current", "producer"),
    "count_comm": ("shared", "separate"), "async_work": ("consumed_only", "every_step"),
    "cond_scope": ("async", "all"), "slot_order": ("shared_first", "combine_first"),
    "buffer_policy": ("separate", "reference", "reference_gc"),
}


def make_strategy(name: str | None = None, **overrides: object) -> StrategyConfig:
    """A named preset (``dice``, ``displaced``, ...) with field overrides, validated."""
    base: dict = {}
    if name is not None:
        presets = _presets()
        if name not in presets:
            raise ConfigError("strategy", f"unknown strategy {name!r}", STRATEGY_NAMES)
        base = dict(presets[name], name=name)
    given = {k: v for k, v in overrides.items() if v is not None}
    fields = {**base, **given}
    if given and name is not None:
        fields["name"] = str(given.get("name") or f"{name}*")
    try:
        return StrategyConfig(**fields)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, "strategy", _ALLOWED, model=StrategyConfig) from None
