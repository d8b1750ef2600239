"""The sequence-parallel family's config: patch parallelism (``sp``), DistriFusion, Ulysses, ring attention and USP.

Every rank holds the whole model and a contiguous slice of every image's tokens; every
attention layer exchanges keys and values across the slices (``kv_exchange``), and MoE layers run
locally with every expert (the DICE reference's ``seqpara/``, ``--sp``; rules with the reference's
file:line in docs/sequence-parallel.md). :mod:`dicesim.plan.sequence` turns a
:class:`SequenceParallelStrategy` into what every rank runs and derives K/V lags and buffers from
it; the executor (``validate/executor/sequence.py``) runs the same plan.

- ``kv_async`` False (``sp``): each attention layer gathers K and V with two blocking all-gathers.
- ``kv_async`` True (``distrifusion``, ``--sp --sp-async``): attention at step t uses this rank's
  fresh K/V and the other ranks' K/V of step t-1, gathered asynchronously by the comm manager in
  flattened all-gathers of 4 layers; the first step and the ``warmup_steps`` steps after it
  gather K/V fresh (blocking, per layer), as ``--sp-async-warm-up`` does on the rectified-flow path.
- ``kv_exchange = "ulysses"`` (``ulysses``; DeepSpeed-Ulysses, not in the DICE reference): each
  attention layer all-to-alls Q, K and V from (this rank's token slice, every head) to (every token,
  this rank's H/W heads), attends over the whole sequence with those heads, and all-to-alls the
  output back (microsoft/DeepSpeed@38327e0 deepspeed/sequence/layer.py:386-416,
  ``DistributedAttention.forward``). Always fresh; needs ``heads % world_size == 0``.
- ``kv_exchange = "ring"`` (``ring``; ring attention, not in the DICE reference): each rank keeps its
  queries; the K/V blocks circulate around the ranks in W-1 point-to-point passes (send to rank+1,
  receive from rank-1), each overlapped with the attention on the block in hand, the partial outputs
  merged with the log-sum-exp rule (zhuzilin/ring-flash-attention@8996282
  ring_flash_attn/ring_flash_attn.py:26-63, utils.py:33-50, 98-151). Always fresh.
- ``kv_exchange = "usp"`` (``usp``; unified sequence parallelism, Ulysses inside, ring across, not in
  the DICE reference): the ranks form ``ulysses_degree`` x ring degree groups (Ulysses groups of
  ``ulysses_degree`` consecutive ranks, ring groups of the ranks ``ulysses_degree`` apart); each attention
  layer all-to-alls Q, K, V inside the Ulysses group (scatter the heads, gather the group's tokens), runs
  ring attention over the ring group with those heads, and all-to-alls the output back
  (feifeibear/long-context-attention@56118e0 yunchang/hybrid/attn_layer.py:111-119, 132-146, 156-158,
  ``LongContextAttention.forward``; groups: yunchang/globals.py:22-57, ``set_seq_parallel_pg`` with its
  default ``use_ulysses_low=True``). Always fresh; needs ``world % ulysses_degree == 0`` and
  ``heads % ulysses_degree == 0``. ``ulysses_degree == world`` is Ulysses, ``ulysses_degree == 1`` ring.
- ``single_img``: rank 0's per-rank batch is the whole batch, computed by all ranks
  (``--single-img``); otherwise every rank's batch is gathered and all ranks share all images.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from dicesim.errors import ConfigError
from dicesim.limits import MAX_STEPS
from dicesim.strategy.base import FamilyConfig, Strategy

#: layers per flattened asynchronous K/V all-gather: the reference's ``comm_checkpoint``
#: (sample_ddp.py:194 passes 4 to sp_init; seqpara/comm_manager.py:96-97 sends when 4 are queued)
KV_GROUP_LAYERS = 4
#: how an attention layer exchanges keys and values across the token slices
KV_EXCHANGES = ("allgather", "ulysses", "ring", "usp")


class SequenceParallelStrategy(Strategy):
    """How the attention layers exchange keys and values (see the module docstring)."""

    family: ClassVar[str] = "sequence"
    lag_subject: ClassVar[str] = "K/V of the other ranks' token slices"
    allowed: ClassVar[dict[str, tuple[str, ...]]] = {"kv_async": ("true", "false"), "single_img": ("true", "false"),
                                                     "kv_exchange": KV_EXCHANGES}

    kv_async: bool = False
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS)  # a count of steps: no longer than the longest run
    single_img: bool = False
    kv_exchange: Literal["allgather", "ulysses", "ring", "usp"] = "allgather"
    #: USP: ranks of one Ulysses group (heads split over them); the ring degree is world_size / ulysses_degree
    ulysses_degree: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _warmup_needs_async(self) -> "SequenceParallelStrategy":
        if self.warmup_steps and not self.kv_async:  # the reference asserts it too (sample_ddp.py:422-423)
            raise ValueError("warmup_steps > 0 needs kv_async = true (a blocking gather is never stale)")
        return self

    @model_validator(mode="after")
    def _ulysses_is_blocking(self) -> "SequenceParallelStrategy":
        # the head all-to-all / the ring passes feed this layer's attention: nothing to defer
        if self.kv_exchange != "allgather" and self.kv_async:
            raise ValueError(f"kv_exchange = {self.kv_exchange} needs kv_async = false "
                             "(allowed with kv_async = true: allgather)")
        return self

    @model_validator(mode="after")
    def _degree_needs_usp(self) -> "SequenceParallelStrategy":
        if self.ulysses_degree != 1 and not self.usp:
            raise ValueError(f"ulysses_degree = {self.ulysses_degree} needs kv_exchange = usp "
                             "(allowed with other exchanges: 1)")
        return self

    @property
    def ulysses(self) -> bool:
        """Heads all-to-all (DeepSpeed-Ulysses) instead of the K/V all-gather."""
        return self.kv_exchange == "ulysses"

    @property
    def ring(self) -> bool:
        """K/V blocks passed around a ring of ranks (ring attention) instead of the K/V all-gather."""
        return self.kv_exchange == "ring"

    @property
    def usp(self) -> bool:
        """Ulysses inside groups of ``ulysses_degree`` ranks, ring attention across them (USP)."""
        return self.kv_exchange == "usp"

    def head_split(self, world_size: int) -> int:
        """Ranks each attention layer's heads are split over: the world (Ulysses), ``ulysses_degree`` (USP), 1."""
        return world_size if self.ulysses else self.ulysses_degree if self.usp else 1

    def ring_degree(self, world_size: int) -> int:
        """Ranks of one ring: the world (ring attention), ``world_size / ulysses_degree`` (USP), 1 (no ring)."""
        return world_size if self.ring else world_size // self.ulysses_degree if self.usp else 1

    @property
    def is_async(self) -> bool:
        return self.kv_async

    def step_is_sync(self, t: int, num_steps: int) -> bool:
        """Fresh K/V at step ``t``: always for ``sp``; the first and the warm-up steps for DistriFusion
        (diffusion/warmup.py:29-32 clears the comm manager before steps 1..W)."""
        return not self.kv_async or t <= self.warmup_steps

    def check_split(self, world_size: int, tokens_per_image: int, *, heads: int) -> None:
        # seqpara/sp_fwd.py:206 asserts it: every rank takes an equal contiguous slice of every image
        if tokens_per_image % world_size:
            raise ConfigError("world_size", f"{tokens_per_image} tokens per image do not split over {world_size} "
                              "ranks (sequence parallelism needs equal slices: sp_fwd.py:206)",
                              f"divisors of {tokens_per_image}")
        # the all-to-all scatters the heads: every rank takes H/W of them. DeepSpeed's even path asserts it
        # (microsoft/DeepSpeed@38327e0 deepspeed/sequence/layer.py:34, 50: "Number of heads ... must be divisible
        # by the sequence parallel size"), as yunchang does (dicesim.sim.dense.ULYSSES_HEADS_RULE); DeepSpeed's
        # uneven-heads path (layer.py:226-235, uneven_heads_all2all) is not modelled
        if self.ulysses and heads % world_size:
            divisors = ", ".join(str(d) for d in range(1, heads + 1) if heads % d == 0)
            raise ConfigError("world_size", f"{heads} heads do not split over {world_size} ranks (Ulysses gives "
                              "every rank heads / world_size heads)", f"divisors of {heads}: {divisors}")
        if self.usp:  # world = ulysses_degree x ring degree (yunchang/globals.py:32-34 asserts world % sp_degree)
            u = self.ulysses_degree
            if world_size % u:
                raise ConfigError("world_size", f"{world_size} ranks do not form groups of ulysses_degree = {u} "
                                  "(USP: world = ulysses_degree x ring degree)", f"multiples of {u}")
            if heads % u:
                divisors = ", ".join(str(d) for d in range(1, heads + 1) if heads % d == 0)
                raise ConfigError("ulysses_degree", f"{heads} heads do not split over ulysses_degree = {u} (USP "
                                  "gives every rank heads / ulysses_degree heads)", f"divisors of {heads}: {divisors}")

    def images_in_batch(self, batch: int, world_size: int) -> int:
        """Images the ranks share, ``batch`` per rank: every rank's (gathered, sample_ddp.py:213-219), or only
        rank 0's with ``single_img``."""
        return batch if self.single_img else batch * world_size

    def describe(self) -> str:
        if self.ulysses:
            parts = ["sequence parallel, Ulysses head all-to-all per layer (q, k, v in; output back)"]
        elif self.ring:
            parts = ["sequence parallel, ring attention per layer (W-1 K/V passes to the next rank, "
                     "each under the attention on the block in hand)"]
        elif self.usp:
            parts = [f"sequence parallel, USP per layer (Ulysses all-to-alls in groups of {self.ulysses_degree} "
                     "ranks, ring attention across the groups)"]
        else:
            parts = ["sequence parallel, async K/V all-gather (other ranks' K/V from step t-1)" if self.kv_async
                     else "sequence parallel, blocking K/V all-gather per layer"]
        if self.kv_async and self.warmup_steps:
            parts.append(f"warm-up {self.warmup_steps} (fresh steps 0..{self.warmup_steps})")
        if self.single_img:
            parts.append("single image")
        return " + ".join(parts)


#: preset name -> fields (docs/sequence-parallel.md); read-only
PRESETS: Mapping[str, Mapping[str, object]] = MappingProxyType({
    "sp": dict(kv_async=False),
    "distrifusion": dict(kv_async=True),
    "ulysses": dict(kv_exchange="ulysses"),
    "ring": dict(kv_exchange="ring"),
    "usp": dict(kv_exchange="usp", ulysses_degree=2),
})

FAMILY = FamilyConfig(name="sequence", config=SequenceParallelStrategy, presets=PRESETS)
