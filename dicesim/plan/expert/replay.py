"""The reference's caches replayed once per distinct step: the held buffers and ``--auto-gc`` frees of
the ``reference`` and ``reference_gc`` buffer policies.

:func:`dicesim.plan.expert.buffers._reference` states the rules one action at a time; it is the
oracle this replay must equal (tests/test_buffer_replay.py: the same held buffers in the same order,
and the same frees, over policies, schemes, lags and layer counts). ``recommend`` replays ~130 plans
of 28 layers and 50 steps, ~1,900 exchanges each: replayed one by one, most of its screening time.

Two shortcuts, both exact:

- a put looks only at the entries it frees: an entry is known finished exactly when its issue
  number is at most the last one known finished (``done``), and the entries still holding a send
  buffer are kept in issue order, so the finished ones are a prefix (entries put by a synchronous
  step hold no send buffer and are numbered 0: always finished);
- a step repeats an earlier one: the rules are the same at every step up to a shift of the step
  numbers. When step ``u`` runs the same actions as step ``u - p`` with the token steps moved by
  ``p`` (and reads the same skip rows), and the caches entering it are those entering step
  ``u - p`` moved the same way (issue numbers moved by what the ``p`` steps issued), step ``u``
  holds and frees what step ``u - p`` did, moved by ``p``; then so does every next step that
  repeats its ``p``-th predecessor. In a steady run every step after the first few repeats one.
"""

from __future__ import annotations

from dicesim.plan.expert.kinds import (
    DISCARD, DRAIN, HELD_OF, ISSUE_DISPATCH, LOCAL_COMBINE, RUN_EXPERTS, SKIP_CACHE, SYNC_MOE, WAIT_COMBINE,
)
from dicesim.plan.expert.rules import cond_layers
from dicesim.plan.vocabulary import GcFrees, HeldBuffer, Plan

_RECV, _SEND = 1, 2  # parts an entry still holds (bits)
_DISPATCH, _COMBINE = "dispatch", "combine"
_MAX_PERIOD = 8  # longest repeat looked for (conditional communication repeats every cond_interval steps)


class _Entry:
    """One exchange as the reference's cache holds it (the oracle's ``_Entry``): ``seq`` orders the
    communicator (0: put by a synchronous step); ``parts``: bits of the buffers it still holds;
    ``held``: its :class:`HeldBuffer` rows while ``parts`` stays as it is."""

    __slots__ = ("kind", "layer", "tok_step", "skip", "seq", "parts", "held")

    def __init__(self, kind: str, layer: int, tok_step: int, skip: bool, seq: int, parts: int):
        self.kind, self.layer, self.tok_step, self.skip, self.seq, self.parts = kind, layer, tok_step, skip, seq, parts
        self.held: tuple[HeldBuffer, ...] | None = None

    def rows(self) -> tuple[HeldBuffer, ...]:
        """Its held buffers, receive before send (the oracle's ``sorted(parts)``)."""
        if self.held is None:
            self.held = tuple(HeldBuffer(self.layer, HELD_OF[(self.kind, name)], self.tok_step, self.skip)
                              for bit, name in ((_RECV, "recv"), (_SEND, "send")) if self.parts & bit)
        return self.held


class _Caches:
    """The replay's state between steps (the oracle's locals) and one step of its rules."""

    def __init__(self, plan: Plan):
        s = plan.strategy
        self.gc = s.buffer_policy == "reference_gc"
        self.gc_recv = self.gc and s.scheme == "interweaved"
        self.counts_shared = s.count_comm == "shared"
        self.async_set = frozenset(plan.async_layers)
        self.skip_layers = cond_layers(plan)
        self.skip_TL = plan.lags.skip if self.skip_layers else None
        self.T = plan.num_steps
        self.reset()
        self.pending: dict[tuple[str, int, int], _Entry] = {}
        self.skip_held: set[int] = set()
        self.seq = self.done = 0

    def reset(self) -> None:
        self.caches: dict[str, dict[int, _Entry]] = {_DISPATCH: {}, _COMBINE: {}}  # layer -> entry, oracle's order
        self.position: dict[str, dict[int, int]] = {_DISPATCH: {}, _COMBINE: {}}  # layer -> place in that order
        self.sending: dict[str, dict[int, _Entry]] = {_DISPATCH: {}, _COMBINE: {}}  # entries holding send, by seq
        self.receiving: tuple[dict[int, _Entry], dict[int, _Entry]] = ({}, {})  # dispatch entries holding recv

    def _free(self, batch: list[_Entry], bit: int, name: str, out: list) -> None:
        """Frees one part of each entry, in the cache's order (the oracle's scan)."""
        if len(batch) > 1:
            order = self.position[batch[0].kind]
            batch.sort(key=lambda e: order[e.layer])
        for e in batch:
            e.parts &= ~bit
            e.held = None
            out.append((e.layer, HELD_OF[(e.kind, name)], e.tok_step))

    def _put(self, e: _Entry, frees: dict[int, list], i: int) -> None:
        kind, layer, done = e.kind, e.layer, self.done
        send = self.sending[kind]
        if self.gc:  # each put first frees the send buffers of the finished entries (not the one it replaces)
            batch = []
            for old in send.values():
                if old.seq > done:
                    break
                if old.layer != layer:
                    batch.append(old)
            if batch:
                for old in batch:
                    del send[old.layer]
                self._free(batch, _SEND, "send", frees.setdefault(i, []))
        cache = self.caches[kind]
        if layer in cache:  # the replaced entry leaves the cache (it lives on only while pending)
            send.pop(layer, None)
            if self.gc_recv and kind == _DISPATCH:
                self.receiving[0].pop(layer, None), self.receiving[1].pop(layer, None)
        else:
            self.position[kind][layer] = len(cache)
        cache[layer] = e
        if self.gc:
            if e.parts & _SEND:
                send[layer] = e
            if self.gc_recv and kind == _DISPATCH:
                self.receiving[e.seq > 0][layer] = e

    def _free_received(self, frees: dict[int, list], i: int) -> None:
        """``interweaved`` with ``--auto-gc``: running the experts frees every finished dispatch's receive buffer."""
        zero, numbered = self.receiving
        finished = []
        for e in numbered.values():
            if e.seq > self.done:
                break
            finished.append(e)
        for e in finished:
            del numbered[e.layer]
        batch = [*zero.values(), *finished]
        zero.clear()
        if batch:
            self._free(batch, _RECV, "recv", frees.setdefault(i, []))

    def step(self, t: int, shape: list[tuple]) -> tuple[tuple[HeldBuffer, ...], dict[int, list]]:
        """Step ``t``'s actions that the caches react to (``shape``: index, kind, layer, token step
        less ``t``, skip, keep): the buffers held at its end, and its frees by action index."""
        frees: dict[int, list] = {}
        pending, skip_held = self.pending, self.skip_held
        for i, k, l, dtok, skip, keep in shape:
            if k == SYNC_MOE:
                self.done = self.seq  # blocking on the all-to-all communicator
                if l in self.async_set:  # forced-sync steps put into the async caches (diep.py:207-219, 272-282)
                    e = _Entry(_DISPATCH, l, t, skip, 0, _RECV)
                    self._put(e, frees, i)
                    self._put(_Entry(_COMBINE, l, t, skip, 0, _RECV), frees, i)
                    if keep:
                        pending[(_DISPATCH, l, t)] = e
            elif k == ISSUE_DISPATCH:
                if self.counts_shared:
                    self.done = self.seq
                self.seq += 1
                pending[(_DISPATCH, l, t)] = e = _Entry(_DISPATCH, l, t, skip, self.seq, _RECV | _SEND)
                self._put(e, frees, i)
            elif k == RUN_EXPERTS:
                tok = t + dtok
                self.done = max(self.done, pending.pop((_DISPATCH, l, tok)).seq)
                if self.gc_recv:
                    self._free_received(frees, i)
                self.seq += 1
                pending[(_COMBINE, l, tok)] = e = _Entry(_COMBINE, l, tok, skip, self.seq, _RECV | _SEND)
                self._put(e, frees, i)
            elif k == WAIT_COMBINE:
                self.done = max(self.done, pending.pop((_COMBINE, l, t + dtok)).seq)
            elif k == LOCAL_COMBINE:
                if l in self.skip_layers:
                    if not self.skip_TL[t, l]:
                        skip_held.add(l)
                    elif not (t + 1 < self.T and self.skip_TL[t + 1, l]):
                        skip_held.discard(l)
            elif k == DISCARD:
                self.reset()
                pending.clear()
                skip_held.clear()
            else:  # DRAIN
                self.done = self.seq
                pending.clear()
        out: list[HeldBuffer] = []
        if t + 1 < self.T:
            for cache in self.caches.values():
                for e in cache.values():
                    out += e.rows()
            for e in pending.values():
                if self.caches[e.kind].get(e.layer) is not e:
                    out += e.rows()
            out += [HeldBuffer(l, SKIP_CACHE, -1, False) for l in sorted(skip_held)]
        return tuple(out), frees

    def snapshot(self, t: int) -> tuple:
        """The state after step ``t`` with token steps and issue numbers relative to ``t`` and to the
        last issue number: equal snapshots replay equal steps, moved. Rebuilt by :meth:`restore`."""
        seq = self.seq

        def rel(e: _Entry) -> tuple:
            return e.layer, e.tok_step - t, e.skip, e.seq - seq if e.seq else None, e.parts
        caches = tuple(tuple(rel(e) for e in c.values()) for c in self.caches.values())
        pending = tuple((e.kind, self.caches[e.kind].get(e.layer) is e, rel(e)) for e in self.pending.values())
        return caches, pending, tuple(sorted(self.skip_held)), self.done - seq

    def restore(self, snap: tuple, seq: int, t: int) -> None:
        """The state of :meth:`snapshot` ``snap`` moved to step ``t`` and last issue number ``seq``."""
        caches, pending, skip_held, done = snap

        def entry(kind: str, r: tuple) -> _Entry:
            layer, tok, skip, rseq, parts = r
            return _Entry(kind, layer, tok + t, skip, 0 if rseq is None else rseq + seq, parts)
        self.reset()
        for kind, rows in zip((_DISPATCH, _COMBINE), caches):
            for r in rows:  # entries went in in this order; put's bookkeeping without its frees
                e = self.caches[kind][r[0]] = entry(kind, r)
                self.position[kind][r[0]] = len(self.position[kind])
        for kind in (_DISPATCH, _COMBINE):  # holders of a send (and a receive) buffer, in issue order
            for e in sorted(self.caches[kind].values(), key=lambda e: e.seq):
                if self.gc and e.parts & _SEND:
                    self.sending[kind][e.layer] = e
                if self.gc_recv and kind == _DISPATCH and e.parts & _RECV:
                    self.receiving[e.seq > 0][e.layer] = e
        self.pending = {}
        for kind, cached, r in pending:
            e = self.caches[kind][r[0]] if cached else entry(kind, r)
            self.pending[(kind, e.layer, e.tok_step)] = e
        self.skip_held = set(skip_held)
        self.seq, self.done = seq, done + seq


def _moved(held: tuple[HeldBuffer, ...], p: int) -> tuple[HeldBuffer, ...]:
    return tuple(HeldBuffer(h.layer, h.what, h.tok_step + p, h.skip) if h.tok_step >= 0 else h for h in held)


def reference_replay(plan: Plan, *, frees: bool = True) -> tuple[tuple[tuple[HeldBuffer, ...], ...], GcFrees]:
    """The buffers held at every step end and the frees inside steps, equal to ``_reference(plan)``
    (``frees=False``: the frees are left out, ``{}``)."""
    state = _Caches(plan)
    kinds = {DISCARD, DRAIN, SYNC_MOE, ISSUE_DISPATCH, RUN_EXPERTS, WAIT_COMBINE}
    if state.skip_layers:
        kinds.add(LOCAL_COMBINE)
    T, skip_TL = plan.num_steps, state.skip_TL
    # what a step does, up to the shift of its step number: the actions the caches react to, and
    # what else a step reads (whether a next step exists, the skip rows of this step and the next)
    shapes = [[(i, a.kind, a.layer, a.tok_step - t, a.skip, a.keep) for i, a in enumerate(actions) if a.kind in kinds]
              for t, actions in plan]
    ends = [(t + 1 < T, None if skip_TL is None else skip_TL[t:t + 2].tobytes()) for t in range(T)]
    held: list[tuple[HeldBuffer, ...]] = []
    step_frees: list[dict[int, list]] = []
    snaps: dict[int, tuple[tuple, int]] = {-1: (state.snapshot(-1), 0)}  # after step t: (snapshot, seq)
    u = 0
    while u < T:
        p = next((p for p in range(1, min(u, _MAX_PERIOD) + 1)
                  if shapes[u] == shapes[u - p] and ends[u] == ends[u - p] and snaps[u - 1][0] == snaps[u - 1 - p][0]),
                 0)
        if not p:
            out, freed = state.step(u, shapes[u])
            held.append(out)
            step_frees.append(freed)
            snaps[u] = (state.snapshot(u), state.seq)
            u += 1
            continue
        # steps u, u+1, ... repeat their p-th predecessors while their actions do (and so do their states)
        seq_per_period = snaps[u - 1][1] - snaps[u - 1 - p][1]
        v = u
        while v < T and shapes[v] == shapes[v - p] and ends[v] == ends[v - p]:
            held.append(_moved(held[v - p], p))
            step_frees.append({i: [(l, what, tok + p) for l, what, tok in f] for i, f in step_frees[v - p].items()}
                              if frees else {})
            snap, seq = snaps[v - p]
            snaps[v] = (snap, seq + seq_per_period)
            v += 1
        if v < T:
            state.restore(*snaps[v - 1], t=v - 1)
        u = v
    if not frees:
        return tuple(held), {}
    return tuple(held), {(t, i): f for t, per_step in enumerate(step_frees) for i, f in per_step.items()}
