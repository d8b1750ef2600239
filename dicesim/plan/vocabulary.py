"""The words every family's plan is written in, and both interpreters read.

- :class:`CollectiveKind`: the one collective vocabulary, from the plan to the flow network
  (the simulator's communicators and transfers, the executor's trace names);
- :class:`ActionKind`: the action kinds every family may use; a family adds its own kinds as
  a ``StrEnum`` of its own (the expert-parallel ones: :class:`dicesim.plan.expert.kinds.MoEAction`);
- :class:`Action` and :class:`Plan`: the ordered actions every rank runs at every step;
- effects (:class:`Compute`, :class:`Issue`, :class:`Wait`, :class:`Blocking`, ...): what an
  action does in terms the simulator compiles to its generic instructions;
- :class:`LagTable` and :class:`HeldBuffer`: what a plan implies for staleness and memory.

Kinds are ``StrEnum``: an action kind equals its name as a string (``"sync_moe"``), so traces,
cost tables and result files keep the names they always had.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from dicesim.errors import ConfigError

if TYPE_CHECKING:
    from dicesim.strategy import Strategy


class CollectiveKind(IntEnum):
    """Every collective a plan may issue. The value indexes per-kind tables; ``label`` is the
    name traces carry (``"dispatch"``, ...)."""

    DISPATCH = 0  # all-to-all: routed token rows to the ranks holding their experts
    COMBINE = 1  # all-to-all: expert outputs back to the ranks owning the tokens
    COUNTS = 2  # all-to-all of row counts before a dispatch (latency-bound, the host needs them)
    KV_GATHER = 3  # all-gather: every rank's keys and values of its token slice (sequence parallelism)
    TOKEN_GATHER = 4  # all-gather: one row per token of every rank's slice (K or V alone; a forward's tokens)
    SCATTER = 5  # rank 0 sends every other rank its slice of the tokens (one row per token)
    BROADCAST = 6  # rank 0 sends every other rank one row per image (the conditioning)
    HEAD_A2A = 7  # all-to-all: a q-sized tensor between (token slice, every head) and (every token, H/W heads)
    KV_RING = 8  # point-to-point: a K/V block to the next rank of a ring, W-1 passes in a row (ring attention)

    @property
    def label(self) -> str:
        return self.name.lower()


class ActionKind(StrEnum):
    """Action kinds any family may use (a family's own kinds are a ``StrEnum`` of its own)."""

    EMBED = "embed"  # per-step work before the blocks (layer -1)
    ATTENTION = "attention"  # attention half of a block
    FINAL = "final"  # per-step work after the blocks (layer -1)
    DISCARD = "discard"  # drop every collective still in flight, unused (they still run, in order)
    DRAIN = "drain"  # wait for every collective still in flight (the last action of a run)


@dataclass(frozen=True, slots=True)
class Action:
    """One action of one rank at one step.

    ``layer``: the first layer it covers (``-1``: outside the blocks); ``span``: how many
    consecutive layers it covers; ``tok_step``: the step whose tokens it carries; ``skip``: one
    copy per token (conditional communication); ``keep``: its dispatched rows stay for a later
    action (expert parallelism's reference semantics).
    """

    kind: StrEnum
    layer: int = -1
    tok_step: int = -1
    skip: bool = False
    keep: bool = False
    span: int = 1

    @property
    def layers(self) -> range:
        return range(self.layer, self.layer + self.span)


@dataclass(frozen=True)
class LagTable:
    """Lag of each layer's output per step, for the kept and the dropped copy.

    ``kept[t, l]`` is the lag of the copy every token sends (for conditional communication:
    the one the policy keeps); ``dropped[t, l]`` that of the copy a skip step does not send
    (equal to ``kept`` when nothing is skipped). ``skip[t, l]``: the output used at (t, l)
    came from a one-copy exchange.
    """

    kept: np.ndarray
    dropped: np.ndarray
    skip: np.ndarray

    @property
    def max_lag(self) -> int:
        return int(max(self.kept.max(initial=0), self.dropped.max(initial=0)))


class HeldBuffer(NamedTuple):
    """A tensor a rank keeps from one step into the next: ``what`` (a family's buffer kind) of
    ``layer``, filled by the exchange of ``tok_step`` (-1: not tied to one exchange). A named tuple,
    not a frozen dataclass: a plan holds thousands (a 50-step plan of 28 layers ~2,800), and a frozen
    dataclass costs ~3x as much to make (``recommend`` replays ~130 plans)."""

    layer: int
    what: StrEnum
    tok_step: int
    skip: bool


#: (layer, what, tok_step) of a buffer freed right after an action, per (step, action index)
GcFrees = dict[tuple[int, int], list[tuple[int, StrEnum, int]]]


@dataclass(frozen=True)
class Plan:
    """Ordered actions per step, plus the facts they were built from.

    What the plan implies (lags, buffers held at step ends, buffers freed early) is derived
    once by the family's rules that built it (``rules``, a :class:`dicesim.plan.PlanFamily`) and
    kept here, so every reader (metrics, quality model, search, executor) reads the same table.
    """

    strategy: Strategy
    num_layers: int
    num_steps: int
    steps: tuple[tuple[Action, ...], ...]
    async_layers: tuple[int, ...]
    rules: Any = field(compare=False, repr=False)
    cache_reads: frozenset[tuple[int, int]] = frozenset()

    def __iter__(self) -> Iterator[tuple[int, tuple[Action, ...]]]:
        return iter(enumerate(self.steps))

    def layer_is_sync(self, layer: int, t: int) -> bool:
        """Whether ``layer`` runs synchronously (fresh output, lag 0) at step ``t``."""
        return layer not in self.async_layers or self.strategy.step_is_sync(t, self.num_steps)

    def reads_cache(self, layer: int, t: int) -> bool:
        """Whether ``layer``'s output at step ``t`` may use copies kept from an earlier step."""
        return (t, layer) in self.cache_reads

    @cached_property
    def lags(self) -> LagTable:
        return self.rules.lags(self)

    @cached_property
    def held(self) -> tuple[tuple[HeldBuffer, ...], ...]:
        """Buffers alive at the end of every step (nothing after the last one)."""
        return self.rules.held_buffers(self)

    @cached_property
    def issued_kinds(self) -> frozenset[CollectiveKind]:
        """Collective kinds the plan issues (from its family's effects of every distinct action;
        :func:`dicesim.plan.footprint.collective_kinds`)."""
        lower, static = self.rules.lower, self.rules.static_lowering
        kinds: set[CollectiveKind] = set()
        seen: set = set()
        for actions in self.steps:
            for a in actions:
                key = a.kind if a.kind in static else a
                if key in seen:
                    continue
                seen.add(key)
                effects = static[a.kind] if a.kind in static else lower(a)
                kinds.update(e.kind for e in effects if isinstance(e, (Issue, Blocking)))
        return frozenset(kinds)

    @cached_property
    def memo(self) -> dict[Hashable, Any]:
        """Storage of :meth:`derived`."""
        return {}

    def derived(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """What ``build()`` derives from this plan alone for ``key`` (never from a run's routing or
        hardware; the model's routing constants, top-k and top-1 share, only where ``key`` names
        them), built once and kept beside the plan, so configurations that share it derive it once.
        Figures that also depend on an owner's layout (compiled programs, window searches) are kept
        in the owner's :class:`~dicesim.plan.cache.PlanCache` instead, which bounds them."""
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = build()
        return hit

    @cached_property
    def gc_frees(self) -> GcFrees:
        """Buffers freed right after an action, before the step ends (empty for most strategies)."""
        return self.rules.gc_frees(self)


class PlanRefused(ConfigError):
    """A strategy whose plan cannot run as written: the reference code it follows fails at a known
    step of this run (one line, exit code 2, like every :class:`ConfigError`). Searches drop such
    candidates and say why in ``brief`` (``dicesim recommend``); a sweep records the point as skipped.

    ``allowed`` may be a function returning it, called when the message is first read (``str``,
    ``args``, pickling): what runs instead costs probe builds, and a search reads only ``brief``
    (the default ``recommend``: 50 refusals, 350 probes, ~0.17 s)."""

    def __init__(self, field: str, problem: str, allowed: str | Callable[[], str], *, brief: str):
        self.brief = brief
        if callable(allowed):
            self.field = field
            Exception.__init__(self)
            self._unread = (field, problem, allowed)
        else:
            super().__init__(field, problem, allowed)

    def _read(self) -> None:
        unread = self.__dict__.pop("_unread", None)
        if unread is not None:
            field, problem, allowed = unread
            ConfigError.__init__(self, field, problem, allowed())

    @property  # type: ignore[override]
    def args(self) -> tuple:
        self._read()
        return BaseException.args.__get__(self)

    @args.setter
    def args(self, value: tuple) -> None:
        self.__dict__.pop("_unread", None)
        BaseException.args.__set__(self, value)

    def __str__(self) -> str:
        self._read()
        return super().__str__()

    def __repr__(self) -> str:
        self._read()
        return super().__repr__()


# ---------------------------------------------------------------- effects (what the simulator compiles)
@dataclass(frozen=True, slots=True)
class Compute:
    """Compute whose time is fixed by the workload; ``op`` names its cost (a cost-model key)."""

    op: str


@dataclass(frozen=True, slots=True)
class RowsCompute:
    """Compute whose time depends on the rows this rank received for (layer, tok_step, skip)."""

    op: str


@dataclass(frozen=True, slots=True)
class Issue:
    """Issue a collective of the action's (layer, tok_step, skip); it runs while the rank goes on."""

    kind: CollectiveKind


@dataclass(frozen=True, slots=True)
class Wait:
    """The compute stream waits for the collective of this kind issued for (layer, tok_step);
    ``release=False`` keeps it pending for a later wait (rows kept for a later action)."""

    kind: CollectiveKind
    release: bool = True


@dataclass(frozen=True, slots=True)
class Blocking:
    """The host issues a collective and waits for it (it needs the result to go on)."""

    kind: CollectiveKind


@dataclass(frozen=True, slots=True)
class Forget:
    """Collectives in flight will never be waited for (they still run, in order)."""


@dataclass(frozen=True, slots=True)
class WaitAll:
    """The compute stream waits for every collective still in flight."""


Effect = Compute | RowsCompute | Issue | Wait | Blocking | Forget | WaitAll
