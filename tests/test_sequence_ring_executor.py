"""The executor runs ring attention on gloo ranks: real point-to-point K/V passes, checked against one process.

- ring attention on W ranks reproduces the single-process samples (every expert and image in one process)
  to float tolerance: the small model on 2 and 4 ranks (torch threads 1 per rank: launch.py);
- the K/V blocks each rank attends to, put back in slice order, are bit for bit a fresh all-gather of K and V
  (the shadow group), and the attention output equals ``sp``'s fresh one to float rounding;
- a merge without the log-sum-exp rescaling does not reproduce them (the test can fail);
- the lags (0) and the buffers (none) equal the plan's and the simulator's, and each layer's passes move the
  bytes the simulator counts, traced as one ``kv_ring`` collective.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import validate.executor.sequence as seq_exec
from dicesim.plan import build_plan
from dicesim.sim.api import prepare, simulate
from dicesim.strategy import make_strategy
from dicesim.trace import read_trace
from validate.cli import main
from validate.executor.families import run_emulated
from validate.executor.launch import launch
from validate.executor.summary import summarize, write_run_trace
from validate.executor.worker import RunSpec

STEPS = 4
BASE = dict(steps=STEPS, batch=1, image_size=64, shadow=True)  # 16 tokens per image
WORLDS = (2, 4)


def _spec(name: str, **fields) -> RunSpec:
    return RunSpec(strategy=make_strategy(name, **fields), model="small", **BASE)


def _samples(outcome) -> torch.Tensor:
    return torch.cat([r.samples_BCLL for r in sorted(outcome.ranks, key=lambda r: r.rank)])


@pytest.fixture(scope="module")
def runs():
    return {world: launch([_spec("ring")], world_size=world, timeout_s=120)[0] for world in WORLDS}


@pytest.mark.parametrize("world", WORLDS)
def test_ring_reproduces_the_single_process_samples(runs, world):
    reference = run_emulated(_spec("sync"), world).samples_BCLL
    assert reference.shape[0] == world * BASE["batch"]
    torch.testing.assert_close(_samples(runs[world]), reference, rtol=1e-5, atol=1e-5)
    emulated = run_emulated(_spec("ring"), world)  # the one-process path the quality study uses
    torch.testing.assert_close(emulated.samples_BCLL, reference, rtol=1e-5, atol=1e-5)


def test_a_merge_without_rescaling_fails(monkeypatch):
    """Adding the blocks' outputs with equal weights (no log-sum-exp rescaling) gives other samples."""
    reference = run_emulated(_spec("sync"), 4).samples_BCLL

    def averaged(out, lse, block_out, block_lse):
        return (block_out.float(), block_lse) if out is None else ((out + block_out.float()) / 2, lse)

    monkeypatch.setattr(seq_exec, "merge_out_lse", averaged)
    wrong = run_emulated(_spec("ring"), 4).samples_BCLL
    assert not torch.allclose(wrong, reference, rtol=1e-3, atol=1e-3)


def test_merge_is_the_softmax_over_both_blocks():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=g) for _ in range(3))
    k2, v2 = (torch.randn(1, 2, 3, 4, generator=g) for _ in range(2))
    out, lse = seq_exec.merge_out_lse(None, None, *seq_exec.block_attention(q, k, v))
    out, lse = seq_exec.merge_out_lse(out, lse, *seq_exec.block_attention(q, k2, v2))
    ref = torch.nn.functional.scaled_dot_product_attention(q, torch.cat([k, k2], 2), torch.cat([v, v2], 2))
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("world", WORLDS)
def test_kv_are_fresh_and_lags_and_buffers_match_the_plan(runs, world):
    spec, outcome = _spec("ring"), runs[world]
    plan = build_plan(spec.strategy, spec.preset.depth, STEPS)
    for r in outcome.ranks:
        rec = r.record
        assert np.array_equal(rec.lag_kept, plan.lags.kept) and (rec.lag_kept == 0).all()
        assert rec.kv_equal_fresh.all()  # the blocks received, in slice order, are a fresh all-gather's
        assert rec.held_total_nbytes == [0] * STEPS
    summary = summarize(outcome)
    assert (np.array(summary["shadow_rel_l2"], dtype=float) < 1e-5).all()
    assert summary["mean_lag_steps"] == 0


@pytest.mark.parametrize("world", WORLDS)
def test_simulator_and_executor_agree_on_the_passes(runs, world, tmp_path):
    outcome = runs[world]
    kw = dict(model="small", strategy="ring", world_size=world, batch=1, image_size=64, steps=STEPS,
              topology="tiny-ring4", dtype="fp32", profile="h100-sxm")
    sim = simulate(**kw, record=True)
    prep = prepare(**kw)
    assert np.array_equal(outcome.ranks[0].record.lag_kept, sim.lag_table.kept)
    events, _ = read_trace(write_run_trace(outcome, tmp_path)["parquet"])
    coll = events[(events.kind == "collective") & (events["rank"] == 0)]
    L = 6
    assert coll.groupby("name").size().to_dict() == {"kv_ring": L * STEPS, "scatter": STEPS,
                                                     "broadcast": STEPS, "token_gather": STEPS}
    ring = coll[coll.name == "kv_ring"]
    sim_ring = sim.events[(sim.events.kind == "collective") & (sim.events.name == "kv_ring")
                          & (sim.events["rank"] == 0)]
    tpr, row = prep.routing.tokens_per_rank, prep.spec.row_nbytes
    assert set(ring.rows) == set(sim_ring.rows) == {2 * tpr * (world - 1)}
    assert set(ring.nbytes) == {2 * tpr * row * (world - 1)} and set(ring.stream) == {"comm"}
    waits = events[(events["rank"] == 0) & (events.name == "wait:kv_ring")]
    assert len(waits) == (world - 1) * L * STEPS  # one wait per pass
    names = set(events[events.kind == "compute"].name)
    assert {"sp_qkv", "ring_blocks", "ring_block", "ring_proj", "local_moe"} <= names


def test_cli_runs_ring_on_more_ranks_than_heads(capsys):
    code = main(["run", "--strategy", "ring", "--world-size", "4", "--backend", "gloo", "--steps", "3", "--json"])
    assert code == 0  # tiny: 2 heads, 4 ranks (Ulysses refuses it; the ring splits tokens only)
    result = json.loads(capsys.readouterr().out)
    assert result["max_lag_steps"] == 0 and result["peak_buffer_bytes"] == 0 and result["strategy"] == "ring"
