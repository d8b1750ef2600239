"""The executor runs Ulysses on gloo ranks: real ``all_to_all_single`` head exchanges, checked against one process.

- Ulysses on W ranks reproduces the single-process samples (every expert, head and image in one process)
  to float tolerance: the small model (4 heads) on 2 ranks (2 heads each: the head order inside a rank's
  group matters) and on 4 (one each); the tiny model (2 heads) through the CLI;
- the K/V each rank attends with are, bit for bit, its heads' slice of a fresh all-gather of K and V (the
  shadow group), and the attention output equals ``sp``'s fresh one to float rounding;
- the lags (0) measured from the data and the buffers (none) equal the plan's and the simulator's, and every
  all-to-all moves the bytes the simulator counts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dicesim.plan import build_plan
from dicesim.sim.api import prepare, simulate
from dicesim.strategy import make_strategy
from validate.cli import main
from validate.executor.families import run_emulated
from validate.executor.launch import launch
from validate.executor.summary import summarize, write_run_trace
from dicesim.trace import read_trace
from validate.executor.worker import RunSpec

STEPS = 4
BASE = dict(steps=STEPS, batch=1, image_size=64, shadow=True)  # 16 tokens per image
#: world size -> model whose heads split over it
MODELS = {2: "small", 4: "small"}


def _spec(name: str, world: int, **fields) -> RunSpec:
    return RunSpec(strategy=make_strategy(name, **fields), model=MODELS[world], **BASE)


def _samples(outcome) -> torch.Tensor:
    return torch.cat([r.samples_BCLL for r in sorted(outcome.ranks, key=lambda r: r.rank)])


@pytest.fixture(scope="module")
def runs():
    out = {world: launch([_spec("ulysses", world)], world_size=world, timeout_s=120)[0] for world in MODELS}
    out["single_img"] = launch([_spec("ulysses", 2, single_img=True)], world_size=2, timeout_s=120)[0]
    return out


@pytest.mark.parametrize("world", [2, 4])
def test_ulysses_reproduces_the_single_process_samples(runs, world):
    reference = run_emulated(_spec("sync", world), world).samples_BCLL
    assert reference.shape[0] == world * BASE["batch"]
    torch.testing.assert_close(_samples(runs[world]), reference, rtol=1e-5, atol=1e-5)
    emulated = run_emulated(_spec("ulysses", world), world)  # the one-process path the quality study uses
    torch.testing.assert_close(emulated.samples_BCLL, reference, rtol=1e-5, atol=1e-5)


def test_single_img_shares_rank_0s_batch_like_sp(runs):
    """--single-img: rank 0's batch is the whole batch; only rank 0 returns samples, sp's to float tolerance."""
    reference = run_emulated(_spec("sp", 2, single_img=True), 2).samples_BCLL
    assert [r.samples_BCLL.shape[0] for r in sorted(runs["single_img"].ranks, key=lambda r: r.rank)] == [1, 0]
    torch.testing.assert_close(_samples(runs["single_img"]), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("world", [2, 4])
def test_kv_are_fresh_and_lags_and_buffers_match_the_plan(runs, world):
    spec, outcome = _spec("ulysses", world), runs[world]
    plan = build_plan(spec.strategy, spec.preset.depth, STEPS)
    for r in outcome.ranks:
        rec = r.record
        assert np.array_equal(rec.lag_kept, plan.lags.kept) and (rec.lag_kept == 0).all()
        assert rec.kv_equal_fresh.all()  # its heads' K and V are exactly those of a fresh all-gather
        assert rec.held_total_nbytes == [0] * STEPS
    summary = summarize(outcome)
    err = np.array(summary["shadow_rel_l2"], dtype=float)
    assert (err < 1e-5).all()  # the output equals sp's to float rounding (another summation order)
    assert summary["mean_lag_steps"] == 0


def test_simulator_and_executor_agree_on_the_all_to_alls(runs, tmp_path):
    world, outcome = 2, runs[2]
    kw = dict(model=MODELS[world], strategy="ulysses", world_size=world, batch=1, image_size=64, steps=STEPS,
              topology="tiny-ring4", dtype="fp32", profile="h100-sxm")
    sim = simulate(**kw, record=True)
    prep = prepare(**kw)
    assert np.array_equal(outcome.ranks[0].record.lag_kept, sim.lag_table.kept)
    events, _ = read_trace(write_run_trace(outcome, tmp_path)["parquet"])
    coll = events[(events.kind == "collective") & (events["rank"] == 0)]
    L = 6
    assert coll.groupby("name").size().to_dict() == {"head_a2a": 4 * L * STEPS, "scatter": STEPS,
                                                     "broadcast": STEPS, "token_gather": STEPS}
    heads = coll[coll.name == "head_a2a"]
    sim_heads = sim.events[(sim.events.kind == "collective") & (sim.events.name == "head_a2a")
                           & (sim.events["rank"] == 0)]
    tpr, row = prep.routing.tokens_per_rank, prep.spec.row_nbytes
    assert set(heads.rows) == set(sim_heads.rows) == {tpr * (world - 1) // world}
    assert set(heads.nbytes) == {tpr * row * (world - 1) // world} and set(heads.stream) == {"comm"}
    assert {"sp_qkv", "uly_attend", "uly_proj", "local_moe"} <= set(events[events.kind == "compute"].name)


def test_cli_runs_ulysses_and_refuses_heads_that_do_not_split(capsys):
    code = main(["run", "--strategy", "ulysses", "--world-size", "2", "--backend", "gloo", "--steps", "3", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["max_lag_steps"] == 0 and result["peak_buffer_bytes"] == 0 and result["strategy"] == "ulysses"
    code = main(["run", "--strategy", "ulysses", "--world-size", "4", "--backend", "gloo"])  # tiny: 2 heads
    err = capsys.readouterr().err
    assert code == 2 and "2 heads do not split over 4 ranks" in err and len(err.strip().splitlines()) == 1
