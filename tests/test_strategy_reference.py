"""The DICE reference semantics as strategy fields: exact lag tables, plan laws, simulator closed forms.

Fields (docs/strategies.md): ``async_work`` (work at the first and last async steps),
``cond_scope`` (conditional communication on synced layers), ``slot_order`` (the old combine
before the shared expert), ``buffer_policy`` (the reference's stale-buffer accounting).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicesim.plan import build_plan, held_buffers, lag_table
from dicesim.sim.api import prepare, simulate
from dicesim.sim.costs.profile import get_profile
from dicesim.strategy import ExpertParallelStrategy, make_strategy
from dicesim.topology import fully_connected

ORIGINAL = dict(async_work="consumed_only", cond_scope="async", slot_order="shared_first", buffer_policy="separate",
                cond_gate="every_candidate")
TINY = dict(model="tiny", world_size=4, batch=1, image_size=64, topology="tiny-ring4")  # 4 layers, 4 experts


def prof(**kw):
    return get_profile("h100-sxm").with_updates(**{"host_op_s": 0.0, "host_collective_s": 0.0,
                                                   "interference": 0.0, **kw})


# ---------------------------------------------------------------- lag tables
def test_dice_lag_table_reference_scope_all():
    """Synced layers (2, 3) skip on odd steps too: their dropped copy is one step old. The async
    layers (0, 1) skip at step 1 (arriving at 2) and 5, not 3: step 2's one-copy output deleted
    their skip-cache entry and step 3 decides before step 2's full output restores it."""
    lt = lag_table(build_plan(make_strategy("dice"), 4, 6))
    assert lt.kept.tolist() == [[0, 0, 0, 0]] + [[1, 1, 0, 0]] * 5
    assert lt.dropped.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert lt.skip.astype(int).tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0],
                                            [0, 0, 1, 1]]


def test_dice_lag_table_every_candidate_gate_skips_every_odd_step():
    """dicesim's original gate: every candidate step sends one copy on every layer."""
    lt = lag_table(build_plan(make_strategy("dice", cond_gate="every_candidate"), 4, 6))
    assert lt.dropped.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 0, 0], [1, 1, 1, 1], [2, 2, 0, 0], [1, 1, 1, 1]]
    assert lt.skip.astype(int).tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0],
                                            [0, 0, 1, 1]]


def test_dice_lag_table_async_scope_keeps_synced_layers_fresh():
    lt = lag_table(build_plan(make_strategy("dice", cond_scope="async"), 4, 6))
    assert lt.kept.tolist() == [[0, 0, 0, 0]] + [[1, 1, 0, 0]] * 5
    assert lt.dropped.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [2, 2, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]


def test_displaced_scope_all_with_periodic_sync():
    """No skip on a fully synchronous step (the reference clears its skip cache then): steps 0 and 4."""
    lt = lag_table(build_plan(make_strategy("displaced", cond_interval=2, sync_layers=[3], sync_every=4), 4, 8))
    assert lt.kept.tolist() == [[0, 0, 0, 0], [1, 1, 1, 0], [2, 2, 2, 0], [2, 2, 2, 0]] * 2
    assert lt.dropped.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 0], [3, 3, 3, 1]] * 2


@st.composite
def configs(draw):
    L = draw(st.integers(1, 8))
    cfg = ExpertParallelStrategy(
        scheme=draw(st.sampled_from(["displaced", "interweaved"])),
        sync_layers=draw(st.sampled_from(["none", "deep", "shallow", "alternate"])),
        cond_interval=draw(st.integers(1, 2)),
        warmup_steps=draw(st.integers(0, 3)),
        cooldown_steps=draw(st.integers(0, 2)),
        sync_every=draw(st.integers(0, 4)),
    )
    return cfg, L, draw(st.integers(1, 10))


@given(configs(), st.sampled_from(["separate", "reference", "reference_gc"]), st.sampled_from(["all", "async"]))
def test_work_order_and_buffers_never_change_lags(c, policy, scope):
    """async_work, slot_order and buffer_policy move work and memory, not staleness."""
    cfg, L, T = c
    cfg = cfg.model_copy(update={"cond_scope": scope})
    base = lag_table(build_plan(cfg, L, T))
    ref = cfg.model_copy(update={"async_work": "every_step", "slot_order": "combine_first", "buffer_policy": policy})
    other = lag_table(build_plan(ref, L, T))
    for a, b in ((base.kept, other.kept), (base.dropped, other.dropped), (base.skip, other.skip)):
        np.testing.assert_array_equal(a, b)


@given(configs())
def test_every_step_work_issues_at_every_async_step_and_drains(c):
    cfg, L, T = c
    cfg = cfg.model_copy(update={"async_work": "every_step"})
    plan = build_plan(cfg, L, T)
    in_flight: set[tuple[str, int, int]] = set()
    for t, acts in plan:
        kinds = [a.kind for a in acts]
        issued = {a.layer for a in acts if a.kind == "issue_dispatch"}
        step_async = not cfg.step_is_sync(t, T)
        assert issued == (set(plan.async_layers) if step_async else set())
        if not step_async and in_flight:
            assert kinds[0] == "discard"
            in_flight.clear()
        for a in acts:
            if a.kind == "issue_dispatch":
                in_flight.add(("d", a.layer, a.tok_step))
            elif a.kind == "sync_moe" and a.keep:
                in_flight.add(("d", a.layer, a.tok_step))
            elif a.kind == "run_experts":
                in_flight.remove(("d", a.layer, a.tok_step))
                in_flight.add(("c", a.layer, a.tok_step))
            elif a.kind == "wait_combine":
                in_flight.remove(("c", a.layer, a.tok_step))
        # every async slot runs experts: on this or the last step's dispatch, or a sync step's kept rows
        if step_async:
            assert kinds.count("run_experts") == len(plan.async_layers)
    assert (plan.steps[-1][-1].kind == "drain") == bool(in_flight)


def test_slot_order_puts_the_old_combine_before_the_shared_expert():
    def slot(order):
        acts = build_plan(make_strategy("displaced", slot_order=order), 2, 4).steps[3]
        return [a.kind for a in acts if a.layer == 0 and a.kind not in ("attention", "gate")]
    assert slot("combine_first") == ["issue_dispatch", "run_experts", "wait_combine", "shared_expert", "local_combine"]
    assert slot("shared_first") == ["issue_dispatch", "run_experts", "shared_expert", "wait_combine", "local_combine"]


@pytest.mark.parametrize("interval, gate, held_after_skip", [(2, "reference", False), (3, "reference", False),
                                                             (3, "every_candidate", True)])
def test_skip_cache_emptied_by_its_read_unless_the_next_output_needs_it(interval, gate, held_after_skip):
    """The reference empties its skip cache when a one-copy output reads it; with dicesim's
    original gate and interval 3 the dropped copies stay for the second one-copy output in a row."""
    strategy = make_strategy("displaced", cond_interval=interval, sync_layers=[0, 1, 2], cond_gate=gate)
    plan = build_plan(strategy, 4, 8)
    lt = lag_table(plan)
    for t in range(7):
        held = any(h.what == "skip_cache" and h.layer == 3 for h in held_buffers(plan, t))
        if not lt.skip[t, 3]:
            assert held, t
        else:
            assert held == (held_after_skip and bool(lt.skip[t + 1, 3])), t


def test_reference_buffers_hold_per_layer_entries_and_skip_cache():
    """dice, 4 layers (0, 1 async), 5 steps: at a step end, the wrapping dispatch, both combine
    entries (layer 0's in flight, layer 1's already used) and the skip cache of layers whose output
    was full. With T = 5 the reference's counter i = 5 - t makes the even steps the candidates: at
    step 2 the synced layers' one-copy outputs read theirs, the async layers' full outputs (of step 1)
    stored theirs."""
    plan = build_plan(make_strategy("dice"), 4, 5)
    held = {(h.layer, h.what, h.tok_step) for h in held_buffers(plan, 2)}
    assert held == {(1, "dispatch_send", 2), (1, "dispatch_recv", 2), (0, "combine_send", 2),
                    (0, "combine_recv", 2), (1, "combine_recv", 1), (0, "skip_cache", -1), (1, "skip_cache", -1)}
    assert held_buffers(plan, 4) == []  # the run drains and returns


# ---------------------------------------------------------------- simulator closed forms
def _per_step(res):
    """Per issue step: (count exchanges, dispatches, combines, expert runs) of rank 0, and its routed bytes."""
    ev = res.events[res.events["rank"] == 0]
    out, nbytes = [], []
    for t in range(int(ev["step"].max()) + 1):
        e = ev[ev["step"] == t]
        coll = e[e["kind"] == "collective"]
        out.append(tuple(int((coll["name"] == n).sum()) for n in ("counts", "dispatch", "combine"))
                   + (int(((e["kind"] == "compute") & (e["name"] == "experts")).sum()),))
        nbytes.append(int(coll[coll["name"].isin(("dispatch", "combine"))]["nbytes"].sum()))
    return out, nbytes


@pytest.mark.parametrize("scheme, work, expect", [
    # 4 async layers, 6 steps, step 0 synchronous
    ("displaced", "every_step", [(4, 4, 4, 4)] * 6),  # step 1 re-runs the experts on step 0's rows
    ("displaced", "consumed_only", [(4, 4, 4, 4), (4, 4, 0, 0), (4, 4, 4, 4), (4, 4, 4, 4), (0, 0, 4, 4),
                                    (0, 0, 0, 0)]),
    ("interweaved", "every_step", [(4, 4, 4, 4)] * 6),  # step 1: layer 0 runs layer 3's step-0 rows again
    ("interweaved", "consumed_only", [(4, 4, 4, 4), (4, 4, 3, 3), (4, 4, 4, 4), (4, 4, 4, 4), (4, 4, 4, 4),
                                      (0, 0, 1, 1)]),
])
def test_all_to_alls_and_expert_runs_per_step(scheme, work, expect):
    fields = dict(async_work=work) if work == "every_step" else ORIGINAL
    res = simulate(**TINY, strategy=make_strategy(scheme, **fields), steps=6, profile=prof(),
                   graph=fully_connected(4, 1e9, 1e-6), record=True)
    counts, nbytes = _per_step(res)
    assert counts == expect
    # uniform routing: every full exchange moves the same bytes off the rank
    per_exchange = nbytes[0] / 8
    assert nbytes == [per_exchange * (d + c) for _, d, c, _ in counts]
    assert res.summary()["collectives"] == sum(sum(c[:3]) for c in counts)


def test_drain_waits_for_the_last_exchanges():
    """every_step: the run ends when the last async step's exchanges arrive (slow network)."""
    res = simulate(**TINY, strategy="interweaved", steps=4, profile=prof(), graph=fully_connected(4, 1e6, 1e-6),
                   record=True)
    ev = res.events
    last_coll_us = ev[ev["kind"] == "collective"]["end_us"].max()
    assert res.summary()["total_latency_s"] * 1e6 == pytest.approx(last_coll_us, rel=1e-12)
    assert (ev["name"] == "wait_drain").any()


def test_sync_layer_skip_halves_routed_volume():
    """cond_scope='all': a synced layer's exchange on an odd step carries one copy per token."""
    def sync_layer_bytes(scope):
        res = simulate(**TINY, strategy=make_strategy("dice", cond_scope=scope), steps=4, profile=prof(),
                       graph=fully_connected(4, 1e9, 1e-6), record=True)
        ev = res.events
        d = ev[(ev["kind"] == "collective") & (ev["name"] == "dispatch") & (ev["layer"] >= 2) & (ev["rank"] == 0)]
        return d.groupby("tok_step")["nbytes"].sum().to_dict()
    full = sync_layer_bytes("async")
    assert full[1] == full[2] > 0
    skip = sync_layer_bytes("all")
    assert skip[0] == skip[2] == full[0] and skip[1] * 2 == full[1] and skip[3] * 2 == full[3]


def test_token_lags_and_weighted_lag_show_the_synced_layers_dropped_copy():
    """dice over 6 steps: a synced layer's kept copies are fresh, its dropped ones one step old on
    the 3 odd steps; the score-weighted lag weights them by the dropped copy's router share."""
    res = simulate(**TINY, strategy="dice", steps=6, profile=prof(), graph=fully_connected(4, 1e9, 1e-6))
    tl = res.token_lags[res.token_lags["layer"] == 2].set_index("lag")["copy_frac"].to_dict()
    assert tl == pytest.approx({0: 9 / 12, 1: 3 / 12})
    lags = res.lags[res.lags["layer"] == 2]
    share_dropped = 1.0 - res.meta["scenario"]["routing"]["top1_share"]
    assert lags["weighted_lag"].to_numpy() == pytest.approx([0, share_dropped] * 3)
    orig = simulate(**TINY, strategy=make_strategy("dice", cond_scope="async"), steps=6, profile=prof(),
                    graph=fully_connected(4, 1e9, 1e-6)).summary()
    assert res.summary()["mean_lag"] == pytest.approx(orig["mean_lag"] + 2 * 3 / (4 * 6 * 2))


def test_slot_order_timing():
    """With a count exchange opening every async slot (shared communicator, every_step) the old combine
    has always arrived, so the order changes nothing; at the consumed-only tail it does."""
    slow = fully_connected(4, 1e7, 1e-6)
    for scheme in ("displaced", "interweaved"):
        lat = {o: simulate(**TINY, strategy=make_strategy(scheme, slot_order=o), steps=6, profile=prof(),
                           graph=slow).summary()["total_latency_s"] for o in ("shared_first", "combine_first")}
        assert lat["shared_first"] == lat["combine_first"]
        orig = {o: simulate(**TINY, strategy=make_strategy(scheme, **{**ORIGINAL, "slot_order": o}), steps=6,
                            profile=prof(), graph=slow).summary()["total_latency_s"]
                for o in ("shared_first", "combine_first")}
        shared_s = prepare(**TINY, strategy=scheme, steps=6, profile=prof(), graph=slow).spec.cost.action_time_s(
            "shared_expert")
        # the shared expert no longer hides the tail of the old combine
        assert orig["combine_first"] >= orig["shared_first"] + shared_s * 0.999
