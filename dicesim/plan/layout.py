"""One parallel layout shared by both halves: which ranks form which groups, which images each
rank owns, where each expert lives, and which communicators a group needs.

Like torchtitan's ``ParallelDims``: the strategy's family builds it once per run
(:meth:`dicesim.plan.family.PlanFamily.layout`), and the simulator's engine and the executor's
worker read it; no call site decides placement or communicators on its own.

- **groups** (:meth:`ParallelLayout.groups`): the ranks that exchange with each other; groups are
  data-parallel replicas of each other (expert parallelism: the expert-parallel groups of its
  :class:`~dicesim.placement.Placement`; sequence parallelism: the ranks sharing images);
- **experts** (:meth:`ParallelLayout.experts_of`): the routed experts a rank holds (``placement``);
- **images** (:meth:`ParallelLayout.images_of`): the images whose tokens a rank owns (rank ``r``
  of a batch of ``b`` per rank: images ``r*b .. r*b+b-1``, numbered globally);
- **communicators** (:attr:`ParallelLayout.communicators`): per group, the in-order collective
  streams it opens, and which one each :class:`~dicesim.plan.vocabulary.CollectiveKind` runs on.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicesim.placement import Placement
from dicesim.plan.vocabulary import CollectiveKind



def head_groups(world_size: int, u: int) -> tuple[tuple[int, ...], ...]:
    """Ulysses' head groups: ``u`` consecutive ranks each (feifeibear/long-context-attention@56118e0
    yunchang/globals.py:42-48, ``use_ulysses_low``); the one rule the executor's subgroups and the simulator's
    all-to-all flows both read."""
    return tuple(tuple(range(i, i + u)) for i in range(0, world_size, u))


def ring_groups(world_size: int, u: int) -> tuple[tuple[int, ...], ...]:
    """Ring attention's rings: the ranks ``u`` apart, in rank order (yunchang/globals.py:53-54; ``u = 1``: one
    ring of every rank)."""
    return tuple(tuple(range(i, world_size, u)) for i in range(u))


def ring_successors(world_size: int, u: int) -> tuple[int, ...]:
    """Each rank's next rank in its ring (:func:`ring_groups`): where its K/V blocks go."""
    nxt = [0] * world_size
    for ring in ring_groups(world_size, u):
        for i, r in enumerate(ring):
            nxt[r] = ring[(i + 1) % len(ring)]
    return tuple(nxt)

@dataclass(frozen=True)
class CommSpec:
    """One communicator of a group: ``purpose`` names its torch.distributed group, ``suffix`` the
    simulator's communicator name after the group's (``ep0`` + suffix), ``stream`` its trace stream."""

    purpose: str
    suffix: str
    stream: str


#: the communicator every group opens (collectives of every kind unless routed elsewhere)
MAIN_COMM = CommSpec(purpose="rows", suffix="", stream="comm")
#: the separate communicator for count exchanges (``count_comm = "separate"``)
COUNTS_COMM = CommSpec(purpose="counts", suffix=".counts", stream="comm:counts")


@dataclass(frozen=True, kw_only=True)
class ParallelLayout:
    """How one run's ranks split the work (see the module docstring); build it with a family's
    :meth:`~dicesim.plan.family.PlanFamily.layout`."""

    placement: Placement
    #: global ranks of every group, group 0 first; every rank is in exactly one
    group_ranks: tuple[tuple[int, ...], ...]
    #: the communicators each group opens; the first is the main one
    communicators: tuple[CommSpec, ...] = (MAIN_COMM,)
    #: collective kind -> index into ``communicators`` (kinds not named run on the main one)
    comm_by_kind: tuple[tuple[CollectiveKind, int], ...] = ()

    @property
    def world_size(self) -> int:
        return self.placement.world_size

    @property
    def replicated(self) -> bool:
        """Every rank holds every expert (no expert exchange at all)."""
        return self.placement.replicate_all

    def groups(self) -> tuple[tuple[int, ...], ...]:
        """Global ranks of every group, group 0 first; every rank is in exactly one."""
        return self.group_ranks

    def group_rank(self, rank: int) -> int:
        """Position of global ``rank`` inside its group."""
        return next(members.index(rank) for members in self.group_ranks if rank in members)

    def experts_of(self, rank: int) -> tuple[int, ...]:
        """Global ids of the routed experts global ``rank`` holds."""
        p = self.placement
        return p.experts_of(0 if p.replicate_all else p.ep_rank(rank))

    @property
    def token_split(self) -> int:
        """Ranks that share each image's tokens (1: every rank holds whole images)."""
        return 1

    @property
    def head_split(self) -> int:
        """Ranks that split each attention layer's heads (Ulysses' all-to-all; 1: every rank has every head)."""
        return 1

    @property
    def ring_passes(self) -> int:
        """K/V blocks each attention layer passes to the next rank of a ring (ring attention; 0: none)."""
        return 0

    @property
    def ring_size(self) -> int:
        """Ranks of one ring-attention ring (``ring_passes + 1``; 1: no ring)."""
        return self.ring_passes + 1

    @property
    def empty_kinds(self) -> frozenset[CollectiveKind]:
        """Collective kinds the plan names but this layout runs over one-rank subgroups: nobody issues them."""
        return frozenset()

    @property
    def empty_ops(self) -> frozenset[str]:
        """Compute ops the plan names but this layout gives no work: nobody launches them."""
        return frozenset()

    @property
    def experts_per_rank(self) -> int:
        return self.placement.experts_per_rank

    def images_of(self, rank: int, batch: int) -> range:
        """Global ids of the images whose tokens ``rank`` owns, with ``batch`` images per rank."""
        return range(rank * batch, (rank + 1) * batch)

    def comm_index(self, kind: CollectiveKind) -> int:
        """Which of :attr:`communicators` a collective of ``kind`` runs on."""
        return dict(self.comm_by_kind).get(kind, 0)

    def describe(self) -> str:
        return self.placement.describe()
