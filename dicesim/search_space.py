"""The strategy-modifier space ``dicesim recommend`` searches, and what is known without simulating.

A :class:`SearchSpace` lists the values of each modifier: asynchronous scheme, selective-sync
layer set (the presets plus contiguous deep blocks of several sizes), conditional-communication
interval and policy, and warm-up steps. :func:`candidates` expands it into strategies.

Everything except time follows from the plan alone, exactly as the simulator reports it
(same functions): lags, router-weighted lag and stale-buffer memory (:func:`plan_metrics`).
Time needs the engine, but two facts cut the simulations needed:

- candidates whose plans are identical run identically (:func:`timing_key`): the policy and
  the stale-output weights change which copy is kept and how it is weighted, never what is
  sent or computed, so they share one simulation;
- :func:`at_least_as_fast`: a candidate that keeps a superset of the layers synchronous, on
  a superset of synchronous steps and sending both copies in a superset of the exchanges does
  at least the same blocking communication, so it is assumed no faster (the search checks this
  assumption on every pair it simulates and reports violations).

A candidate the DICE reference cannot run (its plan is refused, :class:`~dicesim.plan.PlanRefused`:
conditional communication whose one-copy outputs find no skip-cache entry) is screened out
with the refusal as its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.plan import Plan, PlanCache, PlanRefused, buffer_bytes_TW, build_plan
from dicesim.plan.staleness import kept_share, lag_means
from dicesim.strategy import REFERENCE_SEMANTICS, ExpertParallelStrategy
from dicesim.sweep import matching_preset

AsyncScheme = Literal["displaced", "interweaved"]
Policy = Literal["low", "high", "random"]
#: strategy fields that never change what is sent or computed (so never the timing)
TIMING_FREE = frozenset({"name", "cond_policy", "stale_weights", "seed"})


class SearchSpace(BaseModel):
    """Values of each modifier to combine; ``block_sizes`` None = every eighth of the depth."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schemes: tuple[AsyncScheme, ...] = Field(("displaced", "interweaved"), min_length=1)
    sync_presets: tuple[Literal["none", "deep", "shallow", "alternate"], ...] = ("none", "deep", "shallow",
                                                                                 "alternate")
    block_sizes: tuple[int, ...] | None = None
    cond_intervals: tuple[int, ...] = Field((1, 2, 4), min_length=1)
    cond_policies: tuple[Policy, ...] = Field(("low", "high", "random"), min_length=1)
    warmups: tuple[int, ...] = Field((1, 2, 4), min_length=1)
    include_sync: bool = True
    #: ``reference``: the DICE code's semantics, as the paper's presets run (strategy.REFERENCE_SEMANTICS);
    #: ``original``: the ExpertParallelStrategy defaults (only consumed work, separate buffers, ...)
    semantics: Literal["reference", "original"] = "reference"
    #: presets outside this space weighed beside it (data parallelism, other families;
    #: None: every family's comparison presets it cannot produce, :mod:`dicesim.alternatives`)
    alternatives: tuple[str, ...] | None = None

    @field_validator("block_sizes", "cond_intervals", "warmups")
    @classmethod
    def _positive(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(x < 1 for x in v):
            raise ValueError("values must be >= 1")
        return None if v is None else tuple(sorted(set(v)))

    def deep_blocks(self, num_layers: int) -> tuple[int, ...]:
        """Sizes of the contiguous deep blocks (last ``k`` layers synchronous), 0 < k < depth."""
        sizes = self.block_sizes or tuple(int(round(j * num_layers / 8)) for j in range(1, 8))
        return tuple(sorted({k for k in sizes if 0 < k < num_layers}))


def make_space(**fields: object) -> SearchSpace:
    """A validated search space from keyword fields (None = the default)."""
    try:
        return SearchSpace(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, "search", model=SearchSpace) from None


def _sync_sets(space: SearchSpace, num_layers: int) -> list[tuple[str, object]]:
    """(label, sync_layers value) per distinct layer set: presets first, then deep blocks."""
    seen: dict[frozenset[int], tuple[str, object]] = {}
    probe = ExpertParallelStrategy(scheme="interweaved")
    for preset in space.sync_presets:
        layers = probe.model_copy(update={"sync_layers": preset}).sync_layer_set(num_layers)
        seen.setdefault(frozenset(layers), (preset, preset))
    for k in space.deep_blocks(num_layers):
        layers = tuple(range(num_layers - k, num_layers))
        seen.setdefault(frozenset(layers), (f"deep{k}", layers))
    return list(seen.values())


def candidate_label(strategy: ExpertParallelStrategy, sync_label: str) -> str:
    """A preset's name when the candidate equals one, else ``scheme[sync=..,cond=n/policy,warmup=w]``."""
    preset = matching_preset(strategy)
    if preset:
        return preset
    parts = [f"sync={sync_label}"]
    if strategy.cond_interval > 1:
        parts.append(f"cond={strategy.cond_interval}/{strategy.cond_policy}")
    parts.append(f"warmup={strategy.effective_warmup}")
    return f"{strategy.scheme}[{','.join(parts)}]"


def candidates(space: SearchSpace, num_layers: int) -> list[tuple[ExpertParallelStrategy, str]]:
    """Every strategy of ``space`` with the short label of its sync set, in a fixed order."""
    out: list[tuple[ExpertParallelStrategy, str]] = []
    semantics = REFERENCE_SEMANTICS if space.semantics == "reference" else {}
    if space.include_sync:
        out.append((ExpertParallelStrategy(name="sync", scheme="sync"), "all"))
    try:
        for scheme in space.schemes:
            for sync_label, sync_layers in _sync_sets(space, num_layers):
                for n in space.cond_intervals:
                    for policy in (space.cond_policies if n > 1 else ("low",)):
                        for w in space.warmups:
                            s = ExpertParallelStrategy(scheme=scheme, sync_layers=sync_layers, cond_interval=n,
                                               cond_policy=policy, warmup_steps=w, **semantics)
                            out.append((s.model_copy(update={"name": candidate_label(s, sync_label)}), sync_label))
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, "search") from None
    names = [s.name for s, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError("search", "two candidates got the same label")  # pragma: no cover -- a labelling bug
    return out


def timing_key(strategy: ExpertParallelStrategy, num_layers: int) -> tuple:
    """Equal for two candidates whose plans are equal (so the engine runs them identically):
    the timing fields, with the sync layers as a set and the warm-up as it takes effect."""
    fields = strategy.model_dump(exclude=set(TIMING_FREE) | {"sync_layers", "warmup_steps"})
    return (tuple(sorted(fields.items())), tuple(sorted(strategy.sync_layer_set(num_layers))),
            strategy.effective_warmup)


@dataclass(frozen=True)
class TimingClass:
    """What the partial order compares: layers and steps that run synchronously, exchanges (token
    step, layer) that send both copies."""

    scheme: str
    fixed: tuple  # every other timing field: candidates differing here are not compared
    sync_layers: frozenset[int]
    sync_steps: frozenset[int]
    full_exchanges: frozenset[tuple[int, int]]

    #: layers and steps of the plan (the offsets of :attr:`mask`)
    shape: tuple[int, int] = (0, 0)

    @cached_property
    def mask(self) -> int:
        """The three sets as one bit set (layers, then steps, then exchanges, at disjoint offsets):
        the subset tests of :func:`at_least_as_fast` in one integer operation (a search compares
        every pair of classes; frozenset tests of ~10^3 exchanges were most of ``recommend``'s time)."""
        n_l, n_t = self.shape
        bits = sum(1 << layer for layer in self.sync_layers) | sum(1 << (n_l + t) for t in self.sync_steps)
        return bits | sum(1 << (n_l + n_t + t * n_l + layer) for t, layer in self.full_exchanges)

    @classmethod
    def of(cls, plan: Plan) -> "TimingClass":
        s, T = plan.strategy, plan.num_steps
        fixed = tuple(sorted(s.model_dump(exclude=set(TIMING_FREE) | {
            "scheme", "sync_layers", "warmup_steps", "cooldown_steps", "sync_every", "cond_interval"}).items()))
        layers = frozenset(range(plan.num_layers)) - frozenset(plan.async_layers)
        # an action's skip flag is its exchange's: the plan's gate decided it (rules.layer_skips_copy)
        one_copy = {(a.tok_step, a.layer) for _, actions in plan for a in actions if a.skip}
        full = frozenset((t, l) for t in range(T) for l in range(plan.num_layers) if (t, l) not in one_copy)
        return cls(scheme=s.scheme, fixed=fixed, sync_layers=layers,
                   sync_steps=frozenset(t for t in range(T) if s.step_is_sync(t, T)), full_exchanges=full,
                   shape=(plan.num_layers, T))

    def rank(self) -> int:
        """Grows along the order: a strictly slower class (by :func:`at_least_as_fast`) ranks higher."""
        return len(self.sync_layers) + len(self.sync_steps) + len(self.full_exchanges)


def at_least_as_fast(a: TimingClass, b: TimingClass) -> bool:
    """Whether ``a`` is assumed no slower than ``b``: same scheme, and every synchronous layer,
    synchronous step and full-communication exchange of ``a`` is one of ``b``'s too."""
    if a.scheme != b.scheme or a.fixed != b.fixed:
        return False
    if a.shape == b.shape and a.shape != (0, 0):
        return a.mask & ~b.mask == 0
    return a.sync_layers <= b.sync_layers and a.sync_steps <= b.sync_steps and a.full_exchanges <= b.full_exchanges


def lag_metrics(plan: Plan, top_k: int, share_kept: float) -> dict[str, float]:
    """Mean, router-weighted and largest lag of ``plan`` (the figures the simulator reports)."""
    means = lag_means(plan.lags, top_k, share_kept)
    return {"mean_lag_steps": means["mean_lag"], "weighted_lag_steps": means["weighted_lag"],
            "max_lag_steps": means["max_lag"]}


def class_metrics(routing, row_nbytes: int, num_layers: int, num_steps: int, strategy: ExpertParallelStrategy,
                  policies: tuple[str, ...], plans: PlanCache | None = None
                  ) -> tuple[TimingClass | None, float, dict[str, dict[str, float]]] | str:
    """Everything but time for one timing class: its order facts, peak stale-buffer bytes per GPU
    and the lags for each conditional-communication policy among its members; or, for a class
    whose plan is refused, why (short: ``dicesim strategy show`` gives the whole refusal).
    ``plans``: the search's plan cache (its quality model and simulations read the same plans)."""
    try:
        plan = plans.get(strategy, num_layers, num_steps) if plans is not None else build_plan(
            strategy, num_layers, num_steps)
    except PlanRefused as exc:
        return exc.brief
    buf = buffer_bytes_TW(plan, routing, row_nbytes)
    lags = {}
    for policy in policies:
        kept = strategy.model_copy(update={"cond_policy": policy}).kept_copy(routing.top_k)
        lags[policy] = lag_metrics(plan, routing.top_k, kept_share(kept, routing.top1_share))
    return TimingClass.of(plan), float(buf.max()) if buf.size else 0.0, lags
