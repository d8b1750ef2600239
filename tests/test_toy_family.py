"""A second family of strategies plugs in through its own module and two registrations.

The toy family (tests/toy_family.py: every layer all-gathers a tensor) runs through the same
machinery as expert parallelism, unchanged: presets and files read through the strategy
registry, the simulator compiles its plan to the generic instructions and moves its
``kv_gather`` over the flow network, metrics read its own lags and buffers, and the executor
runs its plan on gloo ranks through one handler per action kind.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import toy_family as toy
from dicesim.plan import build_plan, family_of
from dicesim.scenario import make_scenario
from dicesim.sim.api import prepare, simulate
from dicesim.sim.costs.profile import get_profile
from dicesim.strategy import make_strategy, parse_strategy, strategy_names
from dicesim.topology import fully_connected

BW, LAT = 1e8, 1e-6
KW = dict(model="tiny", world_size=4, batch=1, image_size=64, steps=3)


@pytest.fixture
def family():
    with toy.registered():
        yield


def _run(strategy, **kw):
    prof = get_profile("h100-sxm").with_updates(host_op_s=0.0, host_collective_s=0.0, interference=0.0)
    return simulate(**KW, strategy=strategy, profile=prof, graph=fully_connected(4, BW, LAT), **kw)


def test_presets_and_files_read_through_the_registries(family):
    s = make_strategy("toy-gather-stale")
    assert isinstance(s, toy.ToyStrategy) and s.stale and "toy-gather" in strategy_names()
    assert s.model_dump()["family"] == "toy_gather" and parse_strategy(s.model_dump()) == s
    assert make_scenario(**KW, topology="tiny-ring4", strategy=s.model_dump()).strategy == s
    assert parse_strategy({"scheme": "displaced"}).family == "expert_parallel"  # no family: expert-parallel


def test_registration_is_undone():
    with toy.registered():
        assert family_of("toy_gather") is toy.RULES
    assert "toy-gather" not in strategy_names()


def test_every_layer_gathers_every_rank_once_per_step(family):
    """Fully connected links: each gather sends every rank's K/V to the 3 others, link by link."""
    s = make_strategy("toy-gather")
    prep = prepare(**KW, strategy=s, profile="h100-sxm", topology="tiny-ring4")
    payload = 2 * prep.routing.tokens_per_rank * prep.spec.row_nbytes
    L, T = prep.plan.num_layers, KW["steps"]
    res = _run(s)
    assert res.totals["collectives"] == T * L
    assert res.links["nbytes"].sum() == pytest.approx(T * L * 4 * 3 * payload)
    assert res.totals["max_lag"] == 0 and res.totals["peak_buffer_bytes"] == 0
    fused = _run(make_strategy(None, family="toy_gather", fused=True))  # one gather spans every layer
    assert fused.totals["collectives"] == T
    assert fused.links["nbytes"].sum() == pytest.approx(res.links["nbytes"].sum())


def test_stale_gathers_hide_communication_and_cost_their_buffers(family):
    sync, stale = _run(make_strategy("toy-gather")), _run(make_strategy("toy-gather-stale"))
    L = 4
    lags = stale.lag_table.kept
    assert (lags[0] == 0).all() and (lags[1:] == 1).all()
    assert stale.totals["exposed_comm_s"] < sync.totals["exposed_comm_s"]
    prep = prepare(**KW, strategy=make_strategy("toy-gather-stale"), profile="h100-sxm", topology="tiny-ring4")
    one = 4 * 2 * prep.routing.tokens_per_rank * prep.spec.row_nbytes
    assert stale.totals["peak_buffer_bytes"] == L * one and stale.meta["reuse"]["applied"] is False


def _rank(rank: int, world: int, init: str, stale: bool, out: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    with toy.registered():
        plan = build_plan(make_strategy("toy-gather-stale" if stale else "toy-gather"), 4, 3)
        runner = toy.ToyRunner(plan, world)
        x_D = torch.arange(8, dtype=torch.float64) + 100.0 * rank
        ys = [runner.denoise(x_D, None, None, t) for t in range(plan.num_steps)]
    out[rank] = (torch.stack(ys), runner.lag)
    dist.destroy_process_group()


@pytest.mark.parametrize("stale", [False, True])
def test_executor_runs_the_toy_plan_on_gloo_ranks(tmp_path, stale):
    """Two gloo ranks against a one-process reference of the same rule; lags measured from the data."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(2, f"file://{tmp_path}/rendezvous", stale, out), nprocs=2)
        got = dict(out)
    x_WD = torch.stack([torch.arange(8, dtype=torch.float64) + 100.0 * r for r in range(2)])
    ref = toy.reference(x_WD, 4, 3, stale)
    with toy.registered():
        expected_lags = build_plan(make_strategy("toy-gather-stale" if stale else "toy-gather"), 4, 3).lags.kept
    for rank in range(2):
        ys, lag = got[rank]
        torch.testing.assert_close(ys, ref[:, rank], rtol=1e-12, atol=1e-12)
        assert np.array_equal(lag, expected_lags)


def test_a_plan_without_a_handler_is_refused_when_the_runner_is_built(family):
    plan = build_plan(make_strategy("toy-gather"), 2, 2)
    runner = type("NoGather", (toy.ToyRunner,), {"handlers": lambda self: {}})
    with pytest.raises(ValueError, match="no handler for plan action kind"):
        runner(plan, 1)
