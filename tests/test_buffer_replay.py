"""The reference caches' fast replay (dicesim/plan/expert/replay.py) equals the one-action-at-a-time
oracle (buffers._reference): the same held buffers in the same order and the same frees, over every
semantics field the caches read, layer and step counts; and its repeat shortcut is taken."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dicesim.plan import PlanRefused, build_plan
from dicesim.plan.expert import buffers, replay
from dicesim.strategy import ExpertParallelStrategy

_FIELDS = dict(
    scheme=st.sampled_from(["sync", "data_parallel", "displaced", "interweaved"]),
    sync_layers=st.sampled_from(["none", "deep", "shallow", "alternate"]),
    cond_interval=st.integers(1, 5), cond_policy=st.sampled_from(["low", "high", "random"]),
    warmup_steps=st.integers(0, 4), cooldown_steps=st.integers(0, 2), sync_every=st.sampled_from([0, 3, 5]),
    count_comm=st.sampled_from(["shared", "separate"]), async_work=st.sampled_from(["consumed_only", "every_step"]),
    cond_scope=st.sampled_from(["async", "all"]), slot_order=st.sampled_from(["shared_first", "combine_first"]),
    buffer_policy=st.sampled_from(["reference", "reference_gc"]),
    cond_gate=st.sampled_from(["reference", "every_candidate"]))


def _assert_equal(plan) -> None:
    held, frees = buffers._reference(plan)
    fast_held, fast_frees = replay.reference_replay(plan)
    assert fast_held == held
    assert list(fast_frees.items()) == list(frees.items())  # the same frees, in the oracle's order
    assert replay.reference_replay(plan, frees=False) == (held, {})


@settings(max_examples=150, deadline=None)
@given(fields=st.fixed_dictionaries(_FIELDS), layers=st.integers(1, 8), steps=st.integers(1, 40))
def test_fast_replay_equals_the_oracle(fields, layers, steps):
    try:
        plan = build_plan(ExpertParallelStrategy(**fields), layers, steps)
    except PlanRefused:
        return
    _assert_equal(plan)


def _steps_replayed(plan, monkeypatch) -> int:
    calls = []
    step = replay._Caches.step
    monkeypatch.setattr(replay._Caches, "step", lambda self, t, shape: calls.append(t) or step(self, t, shape))
    replay.reference_replay(plan)
    return len(calls)


def test_recommends_plans_replay_few_steps_and_equal_the_oracle(monkeypatch):
    """Plans of the size ``recommend`` screens (28 layers, 50 steps): equal, and most steps moved from
    an earlier one (a broken repeat test that never fires would keep them equal but slow)."""
    for preset, extra in [("displaced", {}), ("interweaved", {}), ("displaced", dict(cond_interval=2)),
                          ("interweaved", dict(cond_interval=2, warmup_steps=2)),
                          ("displaced", dict(cond_interval=4, sync_layers="deep")),
                          ("interweaved", dict(sync_every=5, count_comm="separate"))]:
        strategy = ExpertParallelStrategy.preset(preset) if hasattr(ExpertParallelStrategy, "preset") else None
        fields = dict(scheme=preset, async_work="every_step", cond_scope="all", slot_order="combine_first",
                      buffer_policy="reference_gc", cond_gate="reference", **extra)
        strategy = ExpertParallelStrategy(**fields)
        plan = build_plan(strategy, 28, 50)
        _assert_equal(plan)
        assert _steps_replayed(plan, monkeypatch) <= 20, fields
