"""A plan cache's action pool (dicesim/plan/cache.py, rules._pooled): plans built from a shared pool
equal those built alone, action for action, and equal actions of different plans are one object."""

from __future__ import annotations

import pickle

import numpy as np

from hypothesis import given, settings
from hypothesis import strategies as st

from dicesim.plan import PlanCache, PlanRefused, build_plan
from dicesim.strategy import ExpertParallelStrategy
from dicesim.strategy.expert import REFERENCE_SEMANTICS

_FIELDS = dict(scheme=st.sampled_from(["sync", "data_parallel", "displaced", "interweaved"]),
               cond_interval=st.integers(1, 4), warmup_steps=st.integers(0, 3), sync_every=st.sampled_from([0, 3]),
               sync_layers=st.sampled_from(["none", "deep"]), reference=st.booleans())


def _strategy(reference: bool, **kw) -> ExpertParallelStrategy:
    return ExpertParallelStrategy(**kw, **(REFERENCE_SEMANTICS if reference else {}))


@settings(max_examples=40, deadline=None)
@given(a=st.fixed_dictionaries(_FIELDS), b=st.fixed_dictionaries(_FIELDS), layers=st.integers(1, 8),
       steps=st.integers(1, 20))
def test_pooled_plans_equal_plans_built_alone(a, b, layers, steps):
    cache = PlanCache()
    pooled = []
    for kw in (a, b):
        s = _strategy(**kw)
        try:
            alone = build_plan(s, layers, steps)
        except PlanRefused as exc:
            try:
                cache.get(s, layers, steps)
            except PlanRefused as again:
                assert again.args == exc.args
                continue
            raise AssertionError("refused alone, built from the pool")
        plan = cache.get(s, layers, steps)
        assert plan.steps == alone.steps and plan.cache_reads == alone.cache_reads
        assert all(np.array_equal(getattr(plan.lags, f), getattr(alone.lags, f)) for f in ("kept", "dropped", "skip"))
        assert plan.held == alone.held
        pooled.append(plan)
    if len(pooled) == 2:  # every attention action of both plans is one object
        first = {(x.layer, x.tok_step): x for _, acts in pooled[0] for x in acts if x.kind == "attention"}
        for _, acts in pooled[1]:
            for x in acts:
                if x.kind == "attention":
                    assert first[(x.layer, x.tok_step)] is x


def test_pickled_cache_arrives_without_its_pool():
    cache = PlanCache()
    cache.get(_strategy(True, scheme="interweaved"), 4, 6)
    assert cache._actions
    assert pickle.loads(pickle.dumps(cache))._actions == {}
