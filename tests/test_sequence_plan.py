"""The sequence-parallel family's plan: what every rank runs, the K/V lags and buffers it implies.

Closed forms from the reference's rules (docs/sequence-parallel.md): ``sp`` gathers K and V of
every layer at every step (lag 0); DistriFusion gathers blocking on the first and the warm-up
steps and otherwise waits for the flattened gather of 4 layers issued at the previous step (lag 1);
layers left over when L % 4 != 0 go out when the next step queues layer 0. Hypothesis checks the
laws for any depth, step count and warm-up.
"""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dicesim.errors import ConfigError
from dicesim.models import block_workload, get_model
from dicesim.placement import replicated
from dicesim.plan import build_plan, family_of, layout_for, rank_workload
from dicesim.plan.sequence.buffers import kv_buffer_nbytes
from dicesim.plan.sequence.kinds import (
    ATTEND, KV_CLEAR, KV_ENQUEUE, KV_FRESH, KV_ISSUE, KV_SYNC, KV_WAIT, QKV, SeqAction,
)
from dicesim.plan.vocabulary import ActionKind
from dicesim.scenario import make_scenario
from dicesim.strategy import SequenceParallelStrategy, make_strategy, parse_strategy


def _counts(plan, t: int) -> Counter:
    return Counter(a.kind for a in plan.steps[t])


def test_presets_read_and_write_through_the_registry():
    df = make_strategy("distrifusion", warmup_steps=2)
    assert isinstance(df, SequenceParallelStrategy) and df.kv_async and df.is_async
    assert df.model_dump()["family"] == "sequence" and parse_strategy(df.model_dump()) == df
    assert not make_strategy("sp").is_async and family_of(df).name == "sequence"
    with pytest.raises(ConfigError, match="warmup_steps"):
        make_strategy("sp", warmup_steps=1)  # the reference refuses it too (sample_ddp.py:422-423)


def test_sp_gathers_k_and_v_of_every_layer_at_every_step():
    plan = build_plan(make_strategy("sp"), 6, 5)
    for t in range(5):
        c = _counts(plan, t)
        assert c[KV_SYNC] == 6 and c[SeqAction.SCATTER] == c[SeqAction.BROADCAST] == c[SeqAction.GATHER_TOKENS] == 1
        assert not {KV_FRESH, KV_WAIT, KV_ISSUE, KV_ENQUEUE} & set(c)
    assert (plan.lags.kept == 0).all() and plan.held == ((),) * 5 and plan.async_layers == ()


@pytest.mark.parametrize("L", [4, 8, 28, 6, 5])
def test_distrifusion_flattened_gathers_and_lags(L):
    T = 5
    plan = build_plan(make_strategy("distrifusion"), L, T)
    groups = math.ceil(L / 4)
    c0 = _counts(plan, 0)
    assert c0[KV_FRESH] == L and c0[KV_ENQUEUE] == L and c0[KV_WAIT] == 0
    # a step's own gathers: full groups at once, the leftover of the previous step when layer 0 is queued
    assert c0[KV_ISSUE] == L // 4
    for t in range(1, T):
        c = _counts(plan, t)
        assert c[KV_FRESH] == 0 and c[KV_WAIT] == groups and c[KV_ISSUE] == groups
        issued = [a for a in plan.steps[t] if a.kind == KV_ISSUE]
        assert sorted(l for a in issued for l in a.layers) == list(range(L))  # every layer sent once a step
        assert {a.tok_step for a in issued} <= {t - 1, t} and all(a.span <= 4 for a in issued)
    assert (plan.lags.kept[0] == 0).all() and (plan.lags.kept[1:] == 1).all()
    assert (plan.lags.dropped == plan.lags.kept).all() and not plan.lags.skip.any()
    assert plan.steps[-1][-1].kind == ActionKind.DRAIN


@pytest.mark.parametrize("L", [1, 2, 3])
def test_fewer_than_4_layers_are_two_steps_stale(L):
    """Every layer is a leftover: sent when the next step queues layer 0, after layer 0 found no gather
    pending (df.py:97-106). So step 1 gathers layer 0 fresh, and layer 0 later uses K/V of two steps before
    (the gather it waits for went out one layer after its own check); the other layers wait at once: lag 1."""
    plan = build_plan(make_strategy("distrifusion"), L, 5)
    assert plan.lags.kept[:, 0].tolist() == [0, 0, 2, 2, 2]
    assert (plan.lags.kept[2:, 1:] == 1).all() and _counts(plan, 1)[KV_FRESH] == 1


def test_leftover_layers_go_out_when_the_next_step_queues_layer_0():
    """L = 6: layers 4-5 of step t are sent at step t+1's layer 0 and waited for at its layer 4."""
    plan = build_plan(make_strategy("distrifusion"), 6, 3)
    step1 = [(a.kind, a.layer, a.tok_step, a.span) for a in plan.steps[1] if a.kind in (KV_WAIT, KV_ISSUE, QKV)]
    assert step1 == [(QKV, 0, 1, 1), (KV_WAIT, 0, 0, 4), (KV_ISSUE, 4, 0, 2), (QKV, 1, 1, 1), (QKV, 2, 1, 1),
                     (QKV, 3, 1, 1), (KV_ISSUE, 0, 1, 4), (QKV, 4, 1, 1), (KV_WAIT, 4, 0, 2), (QKV, 5, 1, 1)]


def test_a_layer_puts_its_kv_together_before_it_queues_it_and_attends_after():
    """df.py:97-115: wait (or blocking gather), the K/V used, enqueue (which may send), attention."""
    plan = build_plan(make_strategy("distrifusion"), 4, 2)
    acts = list(plan.steps[1])
    start = acts.index(next(a for a in acts if a.kind == QKV and a.layer == 3))
    end = acts.index(next(a for a in acts if a.kind == ATTEND and a.layer == 3))
    assert [a.kind for a in acts[start:end + 1]] == [QKV, KV_ENQUEUE, KV_ISSUE, ATTEND]
    assert [(a.kind, a.layer) for a in acts[:8] if a.kind != QKV] == [
        (ActionKind.EMBED, -1), (SeqAction.SCATTER, -1),
        (SeqAction.BROADCAST, -1), (KV_WAIT, 0), (KV_ENQUEUE, 0), (ATTEND, 0), (SeqAction.MOE, 0)]


@pytest.mark.parametrize("W", [0, 1, 3])
def test_warmup_steps_are_fresh_after_a_clear(W):
    L, T = 6, 7
    plan = build_plan(make_strategy("distrifusion", warmup_steps=W), L, T)
    fresh = [t for t in range(T) if _counts(plan, t)[KV_FRESH] == L]
    assert fresh == list(range(W + 1))  # diffusion/warmup.py:29-32: steps 1..W after step 0
    assert [t for t in range(T) if _counts(plan, t)[KV_CLEAR]] == list(range(1, W + 1))
    assert (plan.lags.kept[: W + 1] == 0).all() and (plan.lags.kept[W + 1:] == 1).all()
    if W:  # the clear sends what step 0 left queued before it waits
        first = [a.kind for a in plan.steps[1][:2]]
        assert first == [KV_ISSUE, KV_CLEAR]


def test_held_kv_buffer_is_one_full_kv_set_per_layer():
    """2 L N_img T D b bytes per rank (comm_manager.py:59-73), held from step 0 to the run's end."""
    L, T, W = 8, 4, 2
    plan = build_plan(make_strategy("distrifusion"), L, T)
    assert [len(h) for h in plan.held] == [L, L, L, 0]
    n_img, tokens, D, b = 4, 16, 32, 2
    assert L * kv_buffer_nbytes(W, n_img * tokens // W, D * b) == 2 * L * n_img * tokens * D * b == 65536
    routing = SimpleNamespace(placement=replicated(W, 4), tokens_per_rank=n_img * tokens // W)
    buf_TW = family_of(plan.strategy).memory_TW(plan, routing, D * b)["stale_buffers"]
    assert buf_TW.shape == (T, W) and (buf_TW[:-1] == 65536).all() and (buf_TW[-1] == 0).all()


def test_layout_and_workload_split_every_image_over_the_ranks():
    s = make_strategy("distrifusion")
    layout = layout_for(s, 4, 8)
    assert layout.groups() == ((0, 1, 2, 3),) and layout.replicated and layout.token_split == 4
    assert layout.experts_of(3) == tuple(range(8)) and list(layout.images_of(2, 3)) == list(range(12))
    single = layout_for(make_strategy("sp", single_img=True), 4, 8)
    assert list(single.images_of(2, 3)) == [0, 1, 2]
    wl = block_workload(get_model("XL/2"), batch=2, image_px=256)  # 256 tokens, 4 images with CFG
    split = rank_workload(s, wl, 4)
    assert (split.images, split.tokens_per_image, split.token_split) == (16, 64, 4)
    assert rank_workload(make_strategy("sp", single_img=True), wl, 4).images == 4
    assert rank_workload(make_strategy("dice"), wl, 4) is wl
    # attention: the local queries against every key of the image
    full = block_workload(get_model("XL/2"), batch=8, image_px=256)
    core = split.attention_core().flops - 2 * split.tokens * 1152 * 1152 - 8 * split.tokens * 1152
    assert core * 4 == pytest.approx(2 * 2 * full.images * 256 * 256 * 1152)


def test_tokens_that_do_not_split_are_one_line():
    with pytest.raises(ConfigError, match="do not split over 3 ranks"):
        make_scenario(model="XL/2", strategy="sp", world_size=3, topology="8x-rtx4090-pcie")
    make_scenario(model="XL/2", strategy="dice", world_size=4, topology="8x-rtx4090-pcie")


@settings(max_examples=60, deadline=None)
@given(L=st.integers(4, 13), T=st.integers(1, 9), W=st.integers(0, 4), is_async=st.booleans())
def test_laws(L, T, W, is_async):
    """Every flattened gather is waited for (or drained at the end), never twice; lags are 0 on fresh steps
    and 1 otherwise (L >= 4); every layer's K/V is gathered exactly once per step that uses it."""
    s = make_strategy("distrifusion", warmup_steps=W) if is_async else make_strategy("sp")
    plan = build_plan(s, L, T)
    pending: dict = {}
    for t, acts in plan:
        for a in acts:
            if a.kind == KV_ISSUE:
                assert (a.layer, a.tok_step) not in pending
                pending[(a.layer, a.tok_step)] = a
            elif a.kind == KV_WAIT:
                assert pending.pop((a.layer, a.tok_step)).span == a.span and a.tok_step == t - 1
            elif a.kind in (KV_CLEAR, ActionKind.DRAIN):
                pending.clear()
        fresh = s.step_is_sync(t, T)
        assert (plan.lags.kept[t] == (0 if fresh else 1)).all()
        c = _counts(plan, t)
        covered = sum(a.span for a in acts if a.kind == KV_WAIT)
        assert c[KV_SYNC] + c[KV_FRESH] + covered == L
    assert not pending or plan.steps[-1][-1].kind == ActionKind.DRAIN
    assert np.array_equal(plan.lags.kept, plan.lags.dropped)
