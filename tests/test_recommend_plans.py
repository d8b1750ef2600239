"""One PlanCache per search: the timing classes, the quality model and the simulations read the
plans it keeps, and every figure equals the one each of them computes on its own plan."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dicesim.compare import predicted_quality
from dicesim.plan import PlanCache
from dicesim.recommend import _planned_quality, _simulate_latency, make_limits, screen
from dicesim.scenario import make_scenario
from dicesim.search_space import candidates, class_metrics, make_space
from dicesim.sim.api import prepare

SCENARIO = make_scenario(model="tiny", topology="8x-rtx4090-pcie", world_size=4, batch=8, steps=8)
SPACE = make_space(sync_presets=("none", "deep", "alternate"), block_sizes=(1, 3), cond_intervals=(1, 2),
                   cond_policies=("low", "high"), warmups=(1, 2), alternatives=("sp", "distrifusion"))


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, float):
            assert np.array_equal(v, b[k], equal_nan=True), k
        else:
            assert v == b[k], k


def test_cached_quality_class_metrics_and_latency_equal_their_own_plans():
    plans = PlanCache()
    prep = prepare(SCENARIO)
    L, T = SCENARIO.preset().depth, SCENARIO.steps
    for strategy, _ in candidates(SPACE, L):
        sc = SCENARIO.with_strategy(strategy)
        _same(_planned_quality(sc, plans), predicted_quality(sc))
        got = class_metrics(prep.routing, prep.spec.row_nbytes, L, T, strategy, ("low", "high"), plans=plans)
        want = class_metrics(prep.routing, prep.spec.row_nbytes, L, T, strategy, ("low", "high"))
        assert got == want
    for strategy, _ in candidates(SPACE, L)[:6]:
        sc = SCENARIO.with_strategy(strategy)
        _same(_simulate_latency(sc, plans), _simulate_latency(sc))
    assert plans.hits > plans.misses  # quality, classes and latency shared the plans


def test_screen_with_one_cache_equals_screen_with_its_own():
    a, ca = screen(SCENARIO, SPACE, make_limits())
    b, cb = screen(SCENARIO, SPACE, make_limits(), plans=PlanCache())
    pd.testing.assert_frame_equal(a.drop(columns="_strategy"), b.drop(columns="_strategy"), check_exact=True)
    assert ca == cb
