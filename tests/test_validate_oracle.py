"""The executor's semantics against an oracle built only from the plan's lag table.

Single process (EmulatedDispatcher). With shadow mode on, every layer also computes this
step's fresh expert outputs per copy role. The output a strategy *uses* at (step t, layer l)
must then be exactly: role 0 = fresh output of step t - lag_kept, the dropped roles = fresh
output of step t - lag_dropped, weighted by the current step's scores (or the producing
step's). That ties the cache, the skip-step bookkeeping and the weighting to
``dicesim.plan.lag_table`` without reusing any of the runner's caching code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicesim.plan import build_plan, held_buffers, lag_table
from dicesim.strategy import make_strategy
from validate.executor.runner import RunRecord
from validate.executor.worker import RunSpec, run_emulated

torch.set_num_threads(1)

CASES = {
    "displaced": {},
    "interweaved": {},
    "dice": {},
    "displaced-deep": {},
    "dice-high": dict(cond_policy="high"),
    "dice-random": dict(cond_policy="random", seed=5),
    "dice-producer": dict(stale_weights="producer"),
    # interval 3 with dicesim's original gate: two one-copy outputs in a row (the reference fails there)
    "displaced-cond": dict(cond_interval=3, cond_policy="low", cooldown_steps=1, cond_gate="every_candidate"),
    "displaced-cond-separate": dict(cond_interval=3, cond_policy="low", cooldown_steps=1, buffer_policy="separate",
                                    cond_gate="every_candidate"),
    # the reference's gate on displaced layers: a skip-cache entry read two steps after its skip
    "displaced-cond-gate": dict(cond_interval=2, cond_policy="low", cooldown_steps=1),
    "interweaved-original": dict(async_work="consumed_only", cond_scope="async", slot_order="shared_first",
                                 buffer_policy="separate"),
    "interweaved-every3": dict(sync_every=3),
    "sync": {},
}


def _strategy(case: str):
    base = case.split("-")[0] if case not in ("displaced-deep",) else case
    if case.startswith("dice"):
        base = "dice"
    return make_strategy(base, **CASES[case])


def _run(case: str, steps: int = 7) -> tuple[dict, RunRecord, object]:
    seen: dict[tuple[int, int], dict] = {}

    def probe(*, step, layer, **tensors):
        seen[(step, layer)] = {k: v.clone() for k, v in tensors.items()}

    spec = RunSpec(strategy=_strategy(case), steps=steps, batch=2, shadow=True, trace=False)
    result = run_emulated(spec, world_size=1, probe=probe)
    return seen, result.record, build_plan(spec.strategy, spec.preset.depth, steps)


@pytest.mark.parametrize("case", list(CASES))
def test_used_output_is_fresh_output_of_the_producing_step(case):
    seen, rec, plan = _run(case)
    lags = lag_table(plan)
    producer = plan.strategy.stale_weights == "producer"
    stale = 0
    for (t, l), now in seen.items():
        p0, p1 = t - int(lags.kept[t, l]), t - int(lags.dropped[t, l])
        kept_src, drop_src = seen[(p0, l)], seen[(p1, l)]
        w0 = (kept_src if producer else now)["score_NK"][:, :1]
        w1 = (drop_src if producer else now)["score_NK"][:, 1:]
        expect = (w0 * kept_src["fresh_NKD"][:, 0]) + (w1.unsqueeze(-1) * drop_src["fresh_NKD"][:, 1:]).sum(1)
        torch.testing.assert_close(now["routed_ND"], expect, atol=1e-6, rtol=1e-5, msg=f"{case} step {t} layer {l}")
        if p0 != t and not torch.allclose(kept_src["fresh_NKD"], now["fresh_NKD"]):
            stale += 1
    if plan.strategy.is_async:
        assert stale > 0, "no layer ever used a stale output that differs from the fresh one"
    assert (rec.lag_kept == lags.kept).all() and (rec.lag_dropped == lags.dropped).all()


def test_shadow_error_zero_for_sync_positive_for_async_layers():
    _, rec, plan = _run("dice")
    err = np.sqrt(rec.shadow_sq[..., 0] / rec.shadow_sq[..., 1])
    lags = lag_table(plan)
    for t in range(plan.num_steps):
        for l in range(plan.num_layers):
            if lags.kept[t, l] == 0 and lags.dropped[t, l] == 0:
                assert err[t, l] == 0.0
            else:
                assert err[t, l] > 1e-4
    _, rec_sync, _ = _run("sync", steps=3)
    assert (rec_sync.shadow_sq[..., 0] == 0).all() and (rec_sync.shadow_sq[..., 1] > 0).all()


def test_skip_steps_send_half_the_rows():
    """Conditional communication: a skip exchange moves one copy per token, a full one K.

    ``dice`` follows the reference: with 7 steps its counter i = 7 - t makes the even steps the
    candidates; synced layers skip on each (step 0 is fully synchronous), async layers only
    while their skip-cache entry exists: steps 2 and 6, not 4 (step 3's one-copy output deleted it)."""
    _, rec, plan = _run("dice")
    K = 2
    planned = {(a.layer, a.tok_step): a.skip for _, acts in plan for a in acts if a.kind in ("issue_dispatch",
                                                                                             "sync_moe")}
    assert set(rec.recv_rows) == set(planned)
    for (layer, tok_step), rows in rec.recv_rows.items():
        assert rows == rec.local_tokens * (1 if planned[(layer, tok_step)] else K), (layer, tok_step)
    skips = {l: sorted(t for (ll, t), one in planned.items() if one and ll == l) for l in range(plan.num_layers)}
    assert {l: skips[l] for l in plan.async_layers} == {l: [2, 6] for l in plan.async_layers}
    assert all(skips[l] == [2, 4, 6] for l in range(plan.num_layers) if l not in plan.async_layers)


def test_emulated_held_bytes_follow_the_plan():
    _, rec, plan = _run("displaced")
    for t in range(plan.num_steps):
        expect = {}
        for hb in held_buffers(plan, t):
            rows = rec.local_tokens * (1 if hb.skip else 2) if hb.what != "cache" else rec.local_tokens * 2
            expect[(hb.layer, hb.what, hb.tok_step)] = rows * rec.row_nbytes
        assert rec.held_nbytes[t] == expect
