"""The executor runs USP (Ulysses inside, ring across) on gloo ranks, checked against one process.

- USP with ulysses_degree 2 on 4 ranks (2 Ulysses groups {0, 1}, {2, 3}; 2 rings {0, 2}, {1, 3}: yunchang
  globals.py:42-57) reproduces the single-process samples of the small model (4 heads) to float tolerance
  (torch threads 1 per rank: launch.py), with fresh K/V (the blocks each rank's heads attended to, in token
  order, are its heads' slice of a fresh all-gather: the shadow group) and no buffers;
- the two reductions give identical samples: ulysses_degree = world is Ulysses, ulysses_degree = 1 ring
  attention (on 4 gloo ranks and in one process);
- the simulator and the executor agree on the collectives of a step and on their rows and bytes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicesim.plan import build_plan
from dicesim.sim.api import prepare, simulate
from dicesim.strategy import make_strategy
from dicesim.trace import read_trace
from validate.executor.families import run_emulated
from validate.executor.launch import launch
from validate.executor.summary import summarize, write_run_trace
from validate.executor.worker import RunSpec

STEPS = 3
BASE = dict(steps=STEPS, batch=1, image_size=64)  # 16 tokens per image
W = 4


def _spec(name: str, shadow: bool = False, **fields) -> RunSpec:
    return RunSpec(strategy=make_strategy(name, **fields), model="small", shadow=shadow, **BASE)


def _samples(outcome) -> torch.Tensor:
    return torch.cat([r.samples_BCLL for r in sorted(outcome.ranks, key=lambda r: r.rank)])


SPECS = {"usp2": _spec("usp", shadow=True), "usp4": _spec("usp", ulysses_degree=4), "ulysses": _spec("ulysses"),
         "usp1": _spec("usp", ulysses_degree=1), "ring": _spec("ring")}


@pytest.fixture(scope="module")
def runs():
    outcomes = launch(list(SPECS.values()), world_size=W, timeout_s=300)
    return dict(zip(SPECS, outcomes))


def test_usp_reproduces_the_single_process_samples(runs):
    reference = run_emulated(_spec("sync"), W).samples_BCLL
    torch.testing.assert_close(_samples(runs["usp2"]), reference, rtol=1e-5, atol=1e-5)
    emulated = run_emulated(SPECS["usp2"], W)  # the one-process path the quality study uses
    torch.testing.assert_close(emulated.samples_BCLL, reference, rtol=1e-5, atol=1e-5)
    assert emulated.record.kv_equal_fresh.all()


def test_the_two_reductions_give_identical_samples(runs):
    assert torch.equal(_samples(runs["usp4"]), _samples(runs["ulysses"]))
    assert torch.equal(_samples(runs["usp1"]), _samples(runs["ring"]))
    for u, ref in ((W, "ulysses"), (1, "ring")):
        one = run_emulated(_spec("usp", ulysses_degree=u), W).samples_BCLL
        assert torch.equal(one, run_emulated(_spec(ref), W).samples_BCLL)


def test_kv_are_fresh_and_lags_and_buffers_match_the_plan(runs):
    spec, outcome = SPECS["usp2"], runs["usp2"]
    plan = build_plan(spec.strategy, spec.preset.depth, STEPS)
    for r in outcome.ranks:
        rec = r.record
        assert np.array_equal(rec.lag_kept, plan.lags.kept) and (rec.lag_kept == 0).all()
        assert rec.kv_equal_fresh.all()
        assert rec.held_total_nbytes == [0] * STEPS
    summary = summarize(outcome)
    assert (np.array(summary["shadow_rel_l2"], dtype=float) < 1e-5).all()


def test_simulator_and_executor_agree_on_the_collectives(runs, tmp_path):
    u, r, L = 2, W // 2, 6
    kw = dict(model="small", strategy=SPECS["usp2"].strategy, world_size=W, batch=1, image_size=64, steps=STEPS,
              topology="tiny-ring4", dtype="fp32", profile="h100-sxm")
    sim = simulate(**kw, record=True)
    prep = prepare(**kw)
    events, _ = read_trace(write_run_trace(runs["usp2"], tmp_path)["parquet"])
    coll = events[(events.kind == "collective") & (events["rank"] == 0)]
    sim_coll = sim.events[(sim.events.kind == "collective") & (sim.events["rank"] == 0)]
    assert coll.groupby("name").size().to_dict() == sim_coll.groupby("name").size().to_dict() == {
        "head_a2a": 4 * L * STEPS, "kv_ring": L * STEPS, "scatter": STEPS, "broadcast": STEPS, "token_gather": STEPS}
    tpr, row = prep.routing.tokens_per_rank, prep.spec.row_nbytes
    ring, sim_ring = coll[coll.name == "kv_ring"], sim_coll[sim_coll.name == "kv_ring"]
    assert set(ring.rows) == set(sim_ring.rows) == {2 * tpr * (r - 1)}
    assert set(ring.nbytes) == {2 * tpr * row * (r - 1)}
    heads, sim_heads = coll[coll.name == "head_a2a"], sim_coll[sim_coll.name == "head_a2a"]
    assert set(heads.nbytes) == {tpr * row * (u - 1) // u} and set(sim_heads.rows) == {tpr * (u - 1) // u}
    names = set(events[events.kind == "compute"].name)
    assert {"sp_qkv", "usp_blocks", "usp_block", "uly_proj", "local_moe"} <= names
