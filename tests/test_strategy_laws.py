"""Property tests: the laws of strategies.md hold for every modifier combination."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dicesim.plan import build_plan, held_buffers, lag_table
from dicesim.plan.expert.buffers import buffer_rows
from dicesim.strategy import ExpertParallelStrategy, make_strategy

layers_st = st.integers(1, 12)
steps_st = st.integers(1, 16)


@st.composite
def configs(draw, scheme=None):
    L = draw(layers_st)
    sync = draw(st.one_of(st.sampled_from(["none", "deep", "shallow", "alternate"]),
                          st.lists(st.integers(0, L - 1), max_size=L).map(tuple)))
    cfg = ExpertParallelStrategy(
        scheme=scheme or draw(st.sampled_from(["sync", "displaced", "interweaved", "data_parallel"])),
        sync_layers=sync,
        cond_interval=draw(st.integers(1, 4)),
        cond_policy=draw(st.sampled_from(["low", "high", "random"])),
        warmup_steps=draw(st.integers(0, 3)),
        cooldown_steps=draw(st.integers(0, 3)),
        sync_every=draw(st.integers(0, 5)),
    )
    return cfg, L, draw(steps_st)


def _async_steps(cfg, T):
    return [t for t in range(T) if not cfg.step_is_sync(t, T)]


@given(configs(scheme="sync"))
def test_sync_lag_is_zero(c):
    cfg, L, T = c
    lags = lag_table(build_plan(cfg, L, T))
    assert lags.max_lag == 0


@given(configs())
def test_synced_layers_and_sync_steps_have_lag_zero(c):
    cfg, L, T = c
    plan = build_plan(cfg, L, T)
    lags = lag_table(plan)
    for t in range(T):
        for l in range(L):
            if plan.layer_is_sync(l, t):
                assert lags.kept[t, l] == 0 and lags.dropped[t, l] == 0


@given(configs())
def test_warmup_steps_are_lag_zero_and_first_step_always_sync_for_async(c):
    cfg, L, T = c
    lags = lag_table(build_plan(cfg, L, T))
    warm = cfg.effective_warmup
    assert (lags.kept[: min(warm, T)] == 0).all()
    if cfg.is_async:
        assert warm >= 1


def _no_cond(cfg: ExpertParallelStrategy) -> ExpertParallelStrategy:
    return cfg.model_copy(update={"cond_interval": 1})


@given(configs(scheme="displaced"))
def test_displaced_lag_two_after_first_async_step(c):
    cfg, L, T = c
    cfg = _no_cond(cfg)
    plan = build_plan(cfg, L, T)
    lags = lag_table(plan)
    for l in plan.async_layers:
        last_sync = None
        for t in range(T):
            if plan.layer_is_sync(l, t):
                last_sync = t
                continue
            expected = 1 if t == last_sync + 1 else 2
            assert lags.kept[t, l] == expected, (t, l)


@given(configs(scheme="interweaved"))
def test_interweaved_lag_is_one(c):
    cfg, L, T = c
    cfg = _no_cond(cfg)
    plan = build_plan(cfg, L, T)
    lags = lag_table(plan)
    for l in plan.async_layers:
        for t in _async_steps(cfg, T):
            assert lags.kept[t, l] == 1


@given(configs(scheme="interweaved"))
def test_conditional_communication_dropped_copy_is_older(c):
    cfg, L, T = c
    plan = build_plan(cfg, L, T)
    lags = lag_table(plan)
    assert (lags.dropped >= lags.kept).all()
    for l in plan.async_layers:
        for t in _async_steps(cfg, T):
            assert lags.kept[t, l] == 1
            # the dropped copy's output comes from the last full dispatch (or sync step)
            if lags.skip[t, l]:
                assert lags.dropped[t, l] > 1
            else:
                assert lags.dropped[t, l] == 1


@given(configs())
def test_skip_step_volume_halves(c):
    cfg, L, T = c
    plan = build_plan(cfg, L, T)
    for t, actions in plan:
        for a in actions:
            if a.kind in ("issue_dispatch", "run_experts", "wait_combine"):  # dicesim's original gate
                assert a.skip == cfg.cond_candidate(a.tok_step, T)
    from dicesim.plan import HeldBuffer
    full = buffer_rows(HeldBuffer(0, "dispatch_send", 1, False), local_tokens=100, top_k=2, recv_rows=0)
    half = buffer_rows(HeldBuffer(0, "dispatch_send", 1, True), local_tokens=100, top_k=2, recv_rows=0)
    assert half * 2 == full


@given(configs())
def test_every_issued_op_is_consumed_once_in_order(c):
    cfg, L, T = c
    plan = build_plan(cfg, L, T)
    issued, ran, waited = set(), set(), set()
    for t, actions in plan:
        for a in actions:
            key = (a.layer, a.tok_step)
            if a.kind == "issue_dispatch":
                assert key not in issued
                issued.add(key)
            elif a.kind == "run_experts":
                assert key in issued and key not in ran
                ran.add(key)
            elif a.kind == "wait_combine":
                assert key in ran and key not in waited
                waited.add(key)
    assert issued == ran == waited  # nothing is issued that is never used


@given(configs())
def test_interweaved_holds_no_more_than_displaced(c):
    cfg, L, T = c
    # compare steady pipelines: no periodic or cool-down syncs cutting async runs short
    cfg = cfg.model_copy(update={"sync_every": 0, "cooldown_steps": 0, "cond_interval": 1})
    assume(T >= max(cfg.warmup_steps, 1) + 3)  # shorter runs never fill the displaced pipeline
    disp = build_plan(cfg.model_copy(update={"scheme": "displaced"}), L, T)
    inter = build_plan(cfg.model_copy(update={"scheme": "interweaved"}), L, T)

    def peak(plan):
        return max((sum(buffer_rows(h, local_tokens=10, top_k=2, recv_rows=20) for h in held_buffers(plan, t))
                    for t in range(T)), default=0)

    # interweaved frees each dispatch inside the step; only its ring's wrap-around one survives
    for t in range(T):
        kinds_i = [h.what for h in held_buffers(inter, t)]
        assert kinds_i.count("dispatch_send") <= 1
    assert peak(inter) <= peak(disp)


def test_dice_preset_matches_definition():
    cfg = make_strategy("dice")
    assert (cfg.scheme, cfg.sync_layers, cfg.cond_interval, cfg.cond_policy) == ("interweaved", "deep", 2, "low")
    lags = lag_table(build_plan(cfg, 28, 10))
    assert (lags.kept[:, 14:] == 0).all()
    assert lags.kept[1:, :14].tolist() == [[1] * 14] * 9
    # odd steps skip the low copy; its output is used one step later, two steps old
    assert lags.dropped[2, 0] == 2 and lags.dropped[3, 0] == 1


@pytest.mark.parametrize("preset,expected", [("deep", set(range(14, 28))), ("shallow", set(range(14))),
                                             ("alternate", set(range(1, 28, 2))), ("none", set())])
def test_sync_layer_presets(preset, expected):
    assert make_strategy("interweaved", sync_layers=preset).sync_layer_set(28) == expected


def test_interweaved_ring_runs_over_async_layers_only():
    plan = build_plan(make_strategy("interweaved", sync_layers=[1, 2]), 4, 3)
    runs = [(t, a.layer, a.tok_step) for t, acts in plan for a in acts if a.kind == "run_experts"]
    # layer 0's dispatch is consumed by layer 3 (skipping synced 1, 2); layer 3's wraps to layer 0
    assert (1, 0, 1) in runs and (2, 3, 1) in runs


def test_periodic_sync_resets_lag():
    lags = lag_table(build_plan(make_strategy("displaced", sync_every=4), 1, 10))
    assert lags.kept[:, 0].tolist() == [0, 1, 2, 2, 0, 1, 2, 2, 0, 1]


@pytest.mark.parametrize("policy,kept", [("low", 0), ("high", 1), ("random", None)])
def test_which_copy_a_skip_step_keeps(policy, kept):
    # copies are sorted by router score, so "low" (drop the lower score) keeps copy 0
    assert make_strategy("dice", cond_policy=policy).kept_copy(2) == kept
