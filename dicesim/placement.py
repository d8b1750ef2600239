"""Which rank holds which routed expert, and which ranks exchange tokens with each other.

One definition for both halves (the simulator's routing and the executor's dispatcher).
Placement is pure bookkeeping, kept apart from the math and the communication:

- ``W`` divides ``E``: one expert-parallel (EP) group of all ``W`` ranks, ``E / W`` experts
  per rank; expert ``e`` lives on EP rank ``e mod W`` (``expert_layout="modulo"``, the
  default) or on rank ``e // (E / W)`` (``"block"``).
- ``E`` divides ``W``: ``W / E`` EP groups of ``E`` ranks, one expert per rank; groups are
  data-parallel replicas. ``group_layout`` decides membership: ``"contiguous"`` groups
  ``{0..E-1}, {E..2E-1}, ...`` (inside a node), ``"strided"`` groups ``{g, g + W/E, ...}``
  (spread across nodes).
- anything else is a :class:`~dicesim.errors.ConfigError`.

The data-parallel baseline (:func:`replicated`) holds every expert on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dicesim.errors import ConfigError

GROUP_LAYOUTS: tuple[str, ...] = ("contiguous", "strided")
EXPERT_LAYOUTS: tuple[str, ...] = ("modulo", "block")


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Expert placement for ``world_size`` ranks and ``num_experts`` routed experts (immutable).

    Build it with :func:`make_placement` (validated) or :func:`replicated`.
    """

    world_size: int
    num_experts: int
    group_layout: Literal["contiguous", "strided"] = "contiguous"
    expert_layout: Literal["modulo", "block"] = "modulo"
    replicate_all: bool = False  # data-parallel baseline: every rank holds every expert

    @property
    def ep_size(self) -> int:
        """Ranks per expert-parallel group (1 when every expert is replicated)."""
        return 1 if self.replicate_all else min(self.world_size, self.num_experts)

    @property
    def num_groups(self) -> int:
        return self.world_size // self.ep_size

    @property
    def experts_per_rank(self) -> int:
        return self.num_experts // self.ep_size

    def groups(self) -> tuple[tuple[int, ...], ...]:
        """Global ranks of every EP group, group 0 first; every rank is in exactly one."""
        G, S = self.num_groups, self.ep_size
        if self.group_layout == "contiguous":
            return tuple(tuple(range(g * S, (g + 1) * S)) for g in range(G))
        return tuple(tuple(range(g, self.world_size, G)) for g in range(G))

    def group_of(self, rank: int) -> int:
        self._check_rank(rank)
        G, S = self.num_groups, self.ep_size
        if rank < G * S:  # closed forms of :meth:`groups` (a search of every group is O(W) per rank)
            return rank // S if self.group_layout == "contiguous" else rank % G
        return next(g for g, members in enumerate(self.groups()) if rank in members)

    def ep_rank(self, rank: int) -> int:
        """Position of global ``rank`` inside its EP group."""
        self._check_rank(rank)
        G, S = self.num_groups, self.ep_size
        if rank < G * S:
            return rank % S if self.group_layout == "contiguous" else rank // G
        return self.groups()[self.group_of(rank)].index(rank)

    def experts_of(self, ep_rank: int) -> tuple[int, ...]:
        """Global ids of the experts held by EP rank ``ep_rank`` (sorted)."""
        if not 0 <= ep_rank < self.ep_size:
            raise ConfigError("ep_rank", f"{ep_rank} out of range", f"0..{self.ep_size - 1}")
        if self.replicate_all:
            return tuple(range(self.num_experts))
        return tuple(e for e in range(self.num_experts) if self.owner(e) == ep_rank)

    def owner(self, expert: int) -> int:
        """EP rank (inside any group) that holds ``expert``."""
        if not 0 <= expert < self.num_experts:
            raise ConfigError("expert", f"{expert} out of range", f"0..{self.num_experts - 1}")
        if self.replicate_all:
            return 0
        if self.expert_layout == "modulo":
            return expert % self.ep_size
        return expert // self.experts_per_rank

    def owner_table(self) -> tuple[int, ...]:
        """``owner(e)`` for every expert, indexable by expert id."""
        return tuple(self.owner(e) for e in range(self.num_experts))

    def local_slot_table(self) -> tuple[int, ...]:
        """Index of expert ``e`` among its owner's experts (the order rows are grouped in)."""
        return tuple(self.experts_of(self.owner(e)).index(e) for e in range(self.num_experts))

    def describe(self) -> str:
        if self.replicate_all:
            return f"{self.world_size} ranks x all {self.num_experts} experts (data parallel)"
        groups = "" if self.num_groups == 1 else f", {self.num_groups} {self.group_layout} EP groups"
        return (f"{self.world_size} ranks, {self.num_experts} experts, {self.experts_per_rank} per rank "
                f"({self.expert_layout}){groups}")

    def _check_rank(self, rank: int) -> None:
        if not 0 <= rank < self.world_size:
            raise ConfigError("rank", f"{rank} out of range", f"0..{self.world_size - 1}")


def make_placement(
    world_size: int, num_experts: int, *, group_layout: str = "contiguous", expert_layout: str = "modulo"
) -> Placement:
    """Validated expert-parallel placement; ConfigError unless W divides E or E divides W."""
    if world_size < 1:
        raise ConfigError("world_size", f"must be >= 1, got {world_size}", ">= 1")
    if num_experts < 1:
        raise ConfigError("model.num_experts", f"must be >= 1, got {num_experts}", ">= 1")
    if group_layout not in GROUP_LAYOUTS:
        raise ConfigError("group_layout", f"unknown layout {group_layout!r}", GROUP_LAYOUTS)
    if expert_layout not in EXPERT_LAYOUTS:
        raise ConfigError("expert_layout", f"unknown layout {expert_layout!r}", EXPERT_LAYOUTS)
    if num_experts % world_size and world_size % num_experts:
        raise ConfigError(
            "world_size",
            f"{world_size} GPUs cannot hold {num_experts} experts evenly (neither divides the other)",
            "a divisor or a multiple of the expert count",
        )
    return Placement(world_size=world_size, num_experts=num_experts,
                     group_layout=group_layout, expert_layout=expert_layout)  # type: ignore[arg-type]


def replicated(world_size: int, num_experts: int) -> Placement:
    """Every rank holds every expert (the data-parallel baseline, no all-to-all)."""
    if world_size < 1:
        raise ConfigError("world_size", f"must be >= 1, got {world_size}", ">= 1")
    return Placement(world_size=world_size, num_experts=num_experts, replicate_all=True)
