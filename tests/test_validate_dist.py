"""Multi-process gloo runs (2 and 4 ranks, tiny preset) against single-process references.

Each world size is started once; every rank runs all the specs in order in one process group
(start-up dominates the cost). Checks per spec:
- sync == plain single-process sampling of the full model (fp32, atol 1e-5);
- every strategy == the single-process emulation of the same plan (EmulatedDispatcher);
- recorded lags == dicesim.plan.lag_table; held bytes == held_buffers/buffer_rows with the
  rows each rank really received; shadow error 0 on sync, > 0 where a layer is stale.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicesim.plan import buffer_bytes_TW, build_plan, lag_table
from dicesim.sim.costs.routing import TokenRouting
from dicesim.strategy import make_strategy
from validate.executor.launch import launch
from validate.model.model import DiTMoE
from validate.model.sampler import SamplerConfig, sample_reference
from validate.executor.summary import expected_held_nbytes, shadow_error, summarize
from validate.executor.worker import RunSpec, global_inputs, run_emulated

torch.set_num_threads(1)
STEPS = 6


def _spec(name: str, *, shadow: bool = False, num_experts: int | None = None, group_layout: str = "contiguous",
          **overrides) -> RunSpec:
    return RunSpec(strategy=make_strategy(name, **overrides), steps=STEPS, batch=1, shadow=shadow,
                   num_experts=num_experts, group_layout=group_layout)


SPECS4 = {
    "sync": _spec("sync", shadow=True),
    "displaced": _spec("displaced"),
    "interweaved": _spec("interweaved"),
    "dice": _spec("dice", shadow=True),
    "displaced-deep": _spec("displaced-deep"),
    "interweaved-deep": _spec("interweaved-deep"),
    "dice-high": _spec("dice", cond_policy="high"),
    "dice-random": _spec("dice", cond_policy="random", seed=3),
    "interweaved-every3": _spec("interweaved", sync_every=3),
    "displaced-cooldown-cond": _spec("displaced", cooldown_steps=2, cond_interval=2, cond_policy="random"),
    "dice-producer": _spec("dice", stale_weights="producer"),
    "dice-separate-counts": _spec("dice", count_comm="separate"),
    "data-parallel": _spec("data_parallel"),
    "dice-2experts-contiguous": _spec("dice", num_experts=2, group_layout="contiguous"),
    "dice-2experts-strided": _spec("dice", num_experts=2, group_layout="strided"),
}
ORIGINAL = dict(async_work="consumed_only", cond_scope="async", slot_order="shared_first", buffer_policy="separate",
                cond_gate="every_candidate")
# the DICE reference's semantics (the presets) against dicesim's original ones, field by field
SPECS2 = {
    "sync": _spec("sync"),
    "dice": _spec("dice", shadow=True),
    "dice-original": _spec("dice", **ORIGINAL),
    "dice-scope-async": _spec("dice", cond_scope="async"),
    "displaced-reference": _spec("displaced", buffer_policy="reference"),
    "interweaved-reference": _spec("interweaved", buffer_policy="reference", sync_every=3),
    "interweaved-shared-first-separate": _spec("interweaved", slot_order="shared_first", buffer_policy="separate"),
    "displaced-consumed-reference": _spec("displaced", async_work="consumed_only", cooldown_steps=1),
}


@pytest.fixture(scope="module")
def runs4():
    return dict(zip(SPECS4, launch(list(SPECS4.values()), world_size=4, timeout_s=60)))


@pytest.fixture(scope="module")
def runs2():
    return dict(zip(SPECS2, launch(list(SPECS2.values()), world_size=2, timeout_s=60)))


def _gathered(outcome) -> torch.Tensor:
    return torch.cat([r.samples_BCLL for r in sorted(outcome.ranks, key=lambda r: r.rank)])


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_sync_matches_single_process_reference(world, runs2, runs4):
    outcome = (runs2 if world == 2 else runs4)["sync"]
    spec = outcome.spec
    model = DiTMoE.for_image(spec.preset, spec.image_size, seed=spec.seed)
    _, y_G = global_inputs(spec, world * spec.batch)
    ref = sample_reference(model, y_G, config=SamplerConfig(num_steps=spec.steps, guidance_scale=spec.guidance_scale),
                           seed=spec.seed)
    got = _gathered(outcome)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def _all_cases():
    return [(4, k) for k in SPECS4] + [(2, k) for k in SPECS2]


@pytest.mark.slow
@pytest.mark.parametrize("world, label", _all_cases())
def test_distributed_equals_emulation(world, label, runs2, runs4):
    outcome = (runs2 if world == 2 else runs4)[label]
    emulated = run_emulated(outcome.spec, world)
    got = _gathered(outcome)
    torch.testing.assert_close(got, emulated.samples_BCLL, atol=1e-5, rtol=1e-5)
    if outcome.spec.strategy.is_async:  # the strategy really changed the result
        sync_like = (runs2 if world == 2 else runs4)["sync"]
        assert (got - _gathered(sync_like)).abs().max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("world, label", _all_cases())
def test_recorded_lags_equal_plan_lag_table(world, label, runs2, runs4):
    outcome = (runs2 if world == 2 else runs4)[label]
    spec = outcome.spec
    lags = lag_table(build_plan(spec.strategy, spec.preset.depth, spec.steps))
    for r in outcome.ranks:
        np.testing.assert_array_equal(r.record.lag_kept, lags.kept)
        np.testing.assert_array_equal(r.record.lag_dropped, lags.dropped)


@pytest.mark.slow
@pytest.mark.parametrize("world, label", _all_cases())
def test_held_bytes_equal_plan_formula(world, label, runs2, runs4):
    outcome = (runs2 if world == 2 else runs4)[label]
    for r in outcome.ranks:
        for t in range(outcome.spec.steps):
            assert r.record.held_nbytes[t] == expected_held_nbytes(outcome, r.record, t), (r.rank, t)
    if outcome.spec.strategy.is_async:
        assert max(summarize(outcome)["peak_held_nbytes"], 0) > 0


@pytest.mark.slow
def test_ranks_receive_uneven_row_counts(runs4):
    """The tiny run really exercises uneven splits (else the byte check would be trivial)."""
    rows = {r.rank: r.record.recv_rows[(0, 1)] for r in runs4["displaced"].ranks}
    assert len(set(rows.values())) > 1
    assert sum(rows.values()) == 4 * runs4["displaced"].ranks[0].record.local_tokens * 2


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_shadow_error_zero_when_sync_positive_when_stale(world, runs2, runs4):
    runs = runs2 if world == 2 else runs4
    dice = runs["dice"]
    err = shadow_error(dice)
    lags = lag_table(build_plan(dice.spec.strategy, dice.spec.preset.depth, dice.spec.steps))
    fresh = (lags.kept == 0) & (lags.dropped == 0)
    assert (err[fresh] == 0).all()
    assert (err[~fresh] > 1e-4).all() and (~fresh).any()
    if "sync" in runs and runs["sync"].spec.shadow:
        assert (shadow_error(runs["sync"]) == 0).all()
    summary = summarize(dice)
    assert summary["shadow_rel_l2_max"] > 0 and len(summary["shadow_rel_l2"]) == STEPS


@pytest.mark.slow
def test_summary_units_and_shapes(runs4):
    s = summarize(runs4["dice"])
    assert len(s["step_latency_s"]) == STEPS and all(v > 0 for v in s["step_latency_s"])
    assert len(s["held_nbytes_per_rank"]) == 4 and len(s["held_nbytes_per_rank"][0]) == STEPS
    assert s["held_nbytes_per_rank"][0][-1] == 0  # everything released after the last step
    assert 0 < s["mean_lag_steps"] < 2 and s["max_lag_steps"] == 2
    assert s["clock_alignment"] == "shared-monotonic"


def _memory_cases():
    return [(w, k) for w, specs in ((2, SPECS2), (4, SPECS4)) for k, v in specs.items()
            if v.strategy.cond_interval == 1 and v.strategy.is_async and v.num_experts is None]


@pytest.mark.slow
@pytest.mark.parametrize("world, label", _memory_cases())
def test_simulator_memory_prediction_equals_measured_bytes(world, label, runs2, runs4):
    """The simulator's buffer bytes, fed the executor's own routing, equal what the executor's
    ranks really held at every step end, in every accounting."""
    outcome = (runs2 if world == 2 else runs4)[label]
    spec, recs = outcome.spec, [r.record for r in sorted(outcome.ranks, key=lambda r: r.rank)]
    counts_LTWE = np.stack([r.router_hist for r in recs]).transpose(2, 1, 0, 3)  # [L, T, W, E]
    routing = TokenRouting(placement=spec.placement(world), tokens_per_rank=recs[0].local_tokens,
                           top_k=spec.preset.top_k, counts_LTWE=counts_LTWE)
    plan = build_plan(spec.strategy, spec.preset.depth, spec.steps)
    predicted_TW = buffer_bytes_TW(plan, routing, recs[0].row_nbytes)
    measured_TW = np.array([r.held_total_nbytes for r in recs]).T
    np.testing.assert_array_equal(predicted_TW, measured_TW)
    assert measured_TW.max() > 0


@pytest.mark.slow
def test_sync_layer_dropped_copy_measured_one_step_old(runs2):
    """dice (reference scope): a synced layer's dropped copy on an odd step is last step's output."""
    rec = runs2["dice"].ranks[0].record
    synced = [l for l in range(rec.lag_kept.shape[1]) if l >= rec.lag_kept.shape[1] // 2]
    assert (rec.lag_kept[:, synced] == 0).all()
    assert (rec.lag_dropped[1::2][:, synced] == 1).all() and (rec.lag_dropped[0::2][:, synced] == 0).all()
    assert (runs2["dice-scope-async"].ranks[0].record.lag_dropped[:, synced] == 0).all()


@pytest.mark.slow
def test_reference_work_is_what_the_executor_ran(runs2):
    """every_step: the executor issues a combine at every async step (step 1 re-runs step 0's rows)
    and drains the last one; consumed_only skips the combines nobody uses."""
    def combines_by_step(label):
        rows = [r for r in runs2[label].ranks[0].trace_rows if r[1] == "collective" and r[2] == "combine"]
        return np.bincount([r[4] for r in rows], minlength=STEPS).tolist()
    L = 4
    assert combines_by_step("displaced-reference") == [L] * STEPS
    # consumed_only with a cool-down step: nothing issued whose combine would land on step 5 or later
    assert combines_by_step("displaced-consumed-reference") == [L, 0, L, L, 0, L]


@pytest.mark.slow
def test_executor_skips_follow_the_plans_skip_cache_gate(runs2):
    """dice (reference gate), 4 layers, 6 steps: the rows each rank really sent per dispatch say
    which exchanges carried one copy per token; they are the plan's, so the async layers (0, 1)
    skip at steps 1 and 5 only (step 3 finds their skip-cache entry deleted by step 2's one-copy
    output) and the synced layers (2, 3) at 1, 3, 5; the measured lags are the plan's too."""
    out = runs2["dice"]
    spec = out.spec
    plan = build_plan(spec.strategy, spec.preset.depth, spec.steps)
    planned = {(a.layer, a.tok_step): a.skip for _, acts in plan for a in acts if a.kind in ("issue_dispatch",
                                                                                             "sync_moe")}
    lags = lag_table(plan)
    for r in out.ranks:
        rec = r.record
        sent = {(row[3], row[5]): row[9] for row in r.trace_rows if row[1] == "collective" and row[2] == "dispatch"}
        assert set(sent) == set(planned)
        assert set(sent.values()) == {rec.local_tokens, 2 * rec.local_tokens}
        measured = {k: rows == rec.local_tokens for k, rows in sent.items()}
        assert measured == planned
        skip_steps = {l: sorted(t for (ll, t), one in measured.items() if one and ll == l) for l in range(4)}
        assert skip_steps == {0: [1, 5], 1: [1, 5], 2: [1, 3, 5], 3: [1, 3, 5]}
        np.testing.assert_array_equal(rec.lag_kept, lags.kept)
        np.testing.assert_array_equal(rec.lag_dropped, lags.dropped)
