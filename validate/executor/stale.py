"""What one rank keeps of each layer's expert outputs between steps, per buffer policy.

The strategy's ``buffer_policy`` (see :mod:`dicesim.strategy.expert`) picks the store
(:func:`make_store`); every store implements :class:`OutputStore`, so the runner never asks
which one it has. :attr:`dicesim.plan.Plan.held` predicts the bytes and the runner measures the
tensors a store really holds at every step end:

- :class:`SeparateStore` (``separate``): a per-layer output cache ``[N, K, D]`` in role order,
  refreshed from each used exchange; in-flight exchanges keep their own buffers (the runner's).
- :class:`ReferenceStore` (``reference``, ``reference_gc``): the DICE reference's caches
  (``expertpara/ep_cache.py``): one dispatch and one combine entry per async layer, each the
  exchange's own send/receive tensors, replaced by the next put; the combine's receive
  buffer *is* the stale output, un-permuted when used; a skip cache of the dropped copies.
  The ``--auto-gc`` frees come from :attr:`dicesim.plan.Plan.gc_frees`.

Both return the routed expert output a layer uses (weighted, summed over copies). Copies are
in role order (role 0 = the copy a skip exchange keeps). With ``producer`` weights the stored
outputs are already weighted by the scores of the step that produced them.

Shape legend: N local token rows, K copies per token, D hidden, R rows sent, Q rows received.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from dicesim.plan.expert.kinds import Held
from validate.executor.dispatcher import A2AHandle, RouteLayout, DispatcherBase
from validate.model.model import combine_copies


@dataclass
class Exchange:
    """An exchange's handle and row layout, with the producing step's role scores for producer weights."""

    handle: A2AHandle
    layout: RouteLayout
    skip: bool
    score_NK: torch.Tensor | None


class OutputStore(Protocol):
    """What the runner asks of a buffer policy's store of expert outputs (see the module docstring)."""

    def begin_step(self) -> None: ...

    def synced(self, layer: int, out_NkD: torch.Tensor, score_NK: torch.Tensor, *, skip: bool,
               dispatch: Exchange | None, combine: Exchange, cache_it: bool) -> None: ...

    def put(self, kind: str, layer: int, ex: Exchange) -> None: ...

    def holds(self, kind: str, ex: Exchange) -> bool: ...

    def waited(self, layer: int, back_NkD: torch.Tensor, ex: Exchange) -> None: ...

    def routed(self, layer: int, score_NK: torch.Tensor, *, next_one_copy: bool = False) -> torch.Tensor: ...

    def end_layer(self, layer: int, pending: list[Exchange]) -> None: ...

    def end_step(self, reads_next: set[int], pending: list[Exchange]) -> None: ...

    def clear(self) -> None: ...

    def gc(self, what: Held, layer: int, tok_step: int) -> None: ...

    def held(self) -> dict[tuple[int, str, int], int]: ...


def weigh(out_NkD: torch.Tensor, score_Nk: torch.Tensor | None) -> torch.Tensor:
    """Outputs weighted by their scores (``None``: keep them as they are)."""
    return out_NkD if score_Nk is None else out_NkD * score_Nk.unsqueeze(-1).to(out_NkD.dtype)


class SeparateStore:
    """dicesim's own accounting: an output cache per layer that may reuse old copies."""

    def __init__(self, *, producer: bool):
        self.producer = producer
        self.cache: dict[int, torch.Tensor] = {}
        self._fresh: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def synced(self, layer: int, out_NkD: torch.Tensor, score_NK: torch.Tensor, *, skip: bool,
               dispatch: Exchange | None, combine: Exchange, cache_it: bool) -> None:
        """A synchronous exchange of this step: ``out_NkD`` holds the copies it sent."""
        if skip:  # role 0 is fresh; the dropped roles stay as cached
            self.cache[layer][:, :1] = weigh(out_NkD, score_NK[:, :1] if self.producer else None)
            return
        self._fresh[layer] = (out_NkD, score_NK)
        if cache_it:
            self.cache[layer] = weigh(out_NkD, score_NK if self.producer else None).clone()

    def put(self, kind: str, layer: int, ex: Exchange) -> None:
        """In-flight exchanges keep their own buffers (the runner's): nothing to store."""

    def holds(self, kind: str, ex: Exchange) -> bool:
        return False

    def waited(self, layer: int, back_NkD: torch.Tensor, ex: Exchange) -> None:
        """A combine arrived: refresh the roles it carried."""
        out = weigh(back_NkD, ex.score_NK[:, :back_NkD.shape[1]] if self.producer else None)
        self.cache[layer][:, :out.shape[1]] = out
        ex.handle.release()

    def routed(self, layer: int, score_NK: torch.Tensor, *, next_one_copy: bool = False) -> torch.Tensor:
        if layer in self._fresh:
            out_NKD, score = self._fresh.pop(layer)
            return combine_copies(out_NKD, score)
        cache = self.cache[layer]
        return cache.sum(dim=1) if self.producer else combine_copies(cache, score_NK)

    def begin_step(self) -> None:
        """Nothing to note: the cache is the state."""

    def end_layer(self, layer: int, pending: list[Exchange]) -> None:
        """In-flight exchanges are the runner's: nothing to release here."""

    def end_step(self, reads_next: set[int], pending: list[Exchange]) -> None:
        """Drop the caches of layers the next step does not read."""
        for l in list(self.cache):
            if l not in reads_next:
                del self.cache[l]

    def clear(self) -> None:
        self.cache.clear()

    def gc(self, what: Held, layer: int, tok_step: int) -> None:
        raise RuntimeError(f"buffer policy 'separate' frees nothing by gc, got {what} of layer {layer}")

    def held(self) -> dict[tuple[int, str, int], int]:
        return {(l, "cache", -1): c.nbytes for l, c in self.cache.items()}


class ReferenceStore:
    """The reference's per-layer cache entries; stale outputs read from the combine receive buffers."""

    def __init__(self, *, producer: bool, top_k: int, skip_layers: frozenset[int], disp: DispatcherBase):
        self.producer, self.K, self.skip_layers, self.disp = producer, top_k, skip_layers, disp
        self.entries: dict[str, dict[int, Exchange]] = {"dispatch": {}, "combine": {}}
        self.skip: dict[int, torch.Tensor] = {}
        self._used: dict[int, tuple[Exchange | None, torch.Tensor, torch.Tensor | None]] = {}
        self._before: dict[int, Exchange] = {}  # combine entries as the step began
        self._dropped: list[Exchange] = []  # left the caches this step

    def holds(self, kind: str, ex: Exchange) -> bool:
        return any(e is ex for e in self.entries[kind].values())

    def put(self, kind: str, layer: int, ex: Exchange) -> None:
        """Store ``ex`` as the layer's entry. The one it replaces stays usable until the step ends
        (the reference reads it before the put and keeps it in a local until the layer is done)."""
        old = self.entries[kind].get(layer)
        self.entries[kind][layer] = ex
        if old is not None:
            self._dropped.append(old)

    def begin_step(self) -> None:
        self._before = dict(self.entries["combine"])

    def end_layer(self, layer: int, pending: list[Exchange]) -> None:
        """A layer's output is formed: release what left the caches and nothing reads any more
        (the reference drops the entry it replaced when the layer's forward returns, so a step
        holds one layer's old and new entries at a time, not every layer's)."""
        self._dropped = [ex for ex in self._dropped if not self._release_if_unused(ex, pending)]

    def end_step(self, reads_next: set[int], pending: list[Exchange]) -> None:
        """Release what left the caches this step and is not in flight."""
        self._before.clear()
        self._dropped = [ex for ex in self._dropped if not self._release_if_unused(ex, pending)]
        self._dropped.clear()

    def _release_if_unused(self, ex: Exchange, pending: list[Exchange]) -> bool:
        """Release ``ex`` unless it is a cache entry, in flight, or a later layer's entry from before."""
        if (self.holds("dispatch", ex) or self.holds("combine", ex) or any(p is ex for p in pending)
                or any(b is ex for b in self._before.values())):
            return False
        ex.handle.release()
        return True

    def synced(self, layer: int, out_NkD: torch.Tensor, score_NK: torch.Tensor, *, skip: bool,
               dispatch: Exchange | None, combine: Exchange, cache_it: bool) -> None:
        """A synchronous exchange; an async layer's receive buffers become its cache entries."""
        if dispatch is not None:  # a forced-sync step of an async layer
            dispatch.handle.release(recv=False)
            combine.handle.release(recv=False)
            self.put("dispatch", layer, dispatch)
            self.put("combine", layer, combine)
        self._used[layer] = (None, out_NkD, score_NK)

    def waited(self, layer: int, back_NkD: torch.Tensor, ex: Exchange) -> None:
        self._used[layer] = (ex, back_NkD, ex.score_NK)

    def routed(self, layer: int, score_NK: torch.Tensor, *, next_one_copy: bool = False) -> torch.Tensor:
        """The output used at this step; keeps or takes the skip cache as the reference does
        (``next_one_copy``: the layer's next output is one-copy too, so the dropped copies stay; only
        with ``cond_gate='every_candidate'``: the reference's gate refuses such a plan)."""
        ex, out_NkD, produced = self._used.pop(layer, (None, None, None))
        before = self._before.pop(layer, None)  # read once per step; released with the layer if dropped
        if out_NkD is None:  # no exchange of this layer finished this step: the entry from before
            ex = before
            out_NkD = self.disp.unpermute(ex.handle.recv_QD, ex.layout).view(score_NK.shape[0], -1,
                                                                               ex.handle.recv_QD.shape[-1])
            produced = ex.score_NK
        weights = produced if self.producer else score_NK
        k = out_NkD.shape[1]
        routed_ND = weigh(out_NkD, weights[:, :k]).sum(dim=1)
        if k < self.K:  # a one-copy exchange: the dropped copies come from the skip cache (and leave it)
            dropped_NkD = self.skip[layer] if next_one_copy else self.skip.pop(layer)
            routed_ND = routed_ND + weigh(dropped_NkD, None if self.producer else score_NK[:, k:]).sum(dim=1)
        elif layer in self.skip_layers:
            self.skip[layer] = weigh(out_NkD[:, 1:], weights[:, 1:] if self.producer else None).clone()
        if ex is not None:
            self._dropped.append(ex)  # released at the step end unless still a cache entry
        return routed_ND

    def clear(self) -> None:
        for c in self.entries.values():
            self._dropped += c.values()
            c.clear()
        self.skip.clear()
        self._before.clear()

    def gc(self, what: Held, layer: int, tok_step: int) -> None:
        """``--auto-gc``: free one finished buffer of a cache entry."""
        kind, part = what.exchange, what.part
        ex = self.entries[kind].get(layer)
        if ex is None or ex.handle.tok_step != tok_step or part not in ex.handle.held_parts():
            raise RuntimeError(f"gc of {kind}_{part} of layer {layer}, step {tok_step}: the cache does not hold it")
        ex.handle.release(send=part == "send", recv=part == "recv")

    def held(self) -> dict[tuple[int, str, int], int]:
        out: dict[tuple[int, str, int], int] = {}
        for kind, c in self.entries.items():
            for l, ex in c.items():
                for part, n in ex.handle.held_parts().items():
                    out[(l, f"{kind}_{part}", ex.handle.tok_step)] = n
        out.update({(l, "skip_cache", -1): t.nbytes for l, t in self.skip.items()})
        return out


#: buffer policy -> its store, built from the run's facts
STORES: dict[str, Callable[..., OutputStore]] = {
    "separate": lambda *, producer, **_: SeparateStore(producer=producer),
    "reference": lambda **kw: ReferenceStore(**kw),
    "reference_gc": lambda **kw: ReferenceStore(**kw),
}


def make_store(policy: str, *, producer: bool, top_k: int, skip_layers: frozenset[int],
               disp: DispatcherBase) -> OutputStore:
    """The store of buffer policy ``policy`` (``producer``: outputs kept weighted by the producing
    step's scores; ``skip_layers``: layers whose exchanges may send one copy per token)."""
    return STORES[policy](producer=producer, top_k=top_k, skip_layers=skip_layers, disp=disp)
