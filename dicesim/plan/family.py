"""The per-family interface of the plan, and the registry that finds a strategy's family.

A family (expert parallelism now, sequence parallelism next) implements :class:`PlanFamily`
in a package of its own under :mod:`dicesim.plan` (:mod:`dicesim.plan.expert`) and is registered
once, by :mod:`dicesim.plan`'s ``__init__`` (or by :func:`register_plan_family`, as a test's toy
family is). Everything that follows from a strategy's rules asks its family here; nothing else
in the project decides by family or scheme:

- **plan rules**: :meth:`PlanFamily.build`, the ordered actions of every rank and step;
- **collectives**: :meth:`PlanFamily.lower`, each action as effects over the one collective
  vocabulary (:class:`~dicesim.plan.vocabulary.CollectiveKind`), which the simulator compiles;
  :meth:`PlanFamily.window_cuts`, which blocking collectives cut a run into repeatable windows;
- **staleness**: :meth:`PlanFamily.lags`;
- **held buffers and their bytes**: :meth:`PlanFamily.held_buffers`, :meth:`PlanFamily.gc_frees`,
  :meth:`PlanFamily.buffer_nbytes_TW`;
- **memory**: :meth:`PlanFamily.memory_TW`, per-GPU bytes by what holds them (today the stale
  buffers; the per-GPU memory model adds weights, activations and K/V buffers there);
- **layout**: :meth:`PlanFamily.layout`, which ranks form which groups and where experts live
  (:class:`dicesim.layout.ParallelLayout`, shared by simulator and executor).

The registry holds immutable family objects and is written once per family at import (or by
a test), never during a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dicesim.errors import ConfigError
from dicesim.plan.vocabulary import Action, CollectiveKind, Effect, GcFrees, HeldBuffer, LagTable, Plan

if TYPE_CHECKING:
    from dicesim.layout import ParallelLayout
    from dicesim.strategy import Strategy


@dataclass(frozen=True)
class WindowCuts:
    """Where a run may be cut into windows that repeat (:mod:`dicesim.sim.engine.reuse`).

    A blocking collective of one of ``kinds`` on the group's main communicator is a cut: when it
    completes every member waits on it and nothing earlier is in flight. A collective of one of
    ``stream`` on the main communicator that every member's stream waits for at once is a cut too,
    where the host is not held there: the reuse then also checks that the host never held a
    stream back in the window it repeats (:mod:`dicesim.sim.engine.streamcut`). ``blocked`` says
    why a strategy has no cuts at all; ``none_found`` what to report when a program holds none.
    """

    kinds: frozenset[CollectiveKind]
    stream: frozenset[CollectiveKind] = frozenset()
    blocked: str | None = None
    none_found: str = "no blocking collective to cut at"


class PlanFamily(Protocol):
    """What a family of strategies implements (see the module docstring)."""

    name: str
    #: action kinds whose effects depend on the kind alone -> those effects (what :meth:`lower`
    #: returns for them; the compiler reads it instead of calling ``lower`` thousands of times)
    static_lowering: Mapping[StrEnum, tuple[Effect, ...]]

    def build(self, strategy: Strategy, num_layers: int, num_steps: int) -> Plan: ...

    def lower(self, action: Action) -> tuple[Effect, ...]: ...

    def window_cuts(self, strategy: Strategy) -> WindowCuts: ...

    def lags(self, plan: Plan) -> LagTable: ...

    def held_buffers(self, plan: Plan) -> tuple[tuple[HeldBuffer, ...], ...]: ...

    def gc_frees(self, plan: Plan) -> GcFrees: ...

    def buffer_nbytes_TW(self, plan: Plan, routing: Any, row_nbytes: int) -> np.ndarray: ...

    def memory_TW(self, plan: Plan, routing: Any, row_nbytes: int) -> dict[str, np.ndarray]: ...

    def layout(self, strategy: Strategy, world_size: int, num_experts: int, *, group_layout: str = "contiguous",
               expert_layout: str = "modulo") -> ParallelLayout: ...


_FAMILIES: dict[str, PlanFamily] = {}


def register_plan_family(family: PlanFamily) -> None:
    """Add a family's plan rules; ValueError if the name is taken."""
    if family.name in _FAMILIES:
        raise ValueError(f"plan family {family.name!r} is already registered")
    _FAMILIES[family.name] = family


def unregister_plan_family(name: str) -> None:
    """Remove a family added by :func:`register_plan_family` (tests)."""
    _FAMILIES.pop(name, None)


def family_of(strategy: Strategy | str) -> PlanFamily:
    """The plan rules of ``strategy``'s family (or of the family named)."""
    name = strategy if isinstance(strategy, str) else type(strategy).family
    fam = _FAMILIES.get(name)
    if fam is None:
        raise ConfigError("strategy.family", f"no plan rules for strategy family {name!r}", tuple(_FAMILIES))
    return fam


def build_plan(strategy: Strategy, num_layers: int, num_steps: int, *, actions: dict | None = None) -> Plan:
    """Every rank's ordered actions for ``num_steps`` steps of a ``num_layers``-layer model.
    ``actions``: a pool its owner keeps for all its plans (:class:`~dicesim.plan.cache.PlanCache`):
    a family that sets ``pools_actions`` takes an equal action from it instead of making another
    (actions are frozen values; making them is most of a build)."""
    if num_layers < 1:
        raise ConfigError("model.depth", f"must be >= 1, got {num_layers}", ">= 1")
    if num_steps < 1:
        raise ConfigError("steps", f"must be >= 1, got {num_steps}", ">= 1")
    family = family_of(strategy)
    if actions is not None and getattr(family, "pools_actions", False):
        return family.build(strategy, num_layers, num_steps, actions=actions)
    return family.build(strategy, num_layers, num_steps)
