"""The executor runs sequence parallelism on gloo ranks: the real K/V all-gathers, blocking (``sp``) and
asynchronous with the previous step's K/V (DistriFusion), checked against one process.

- ``sp`` on W ranks reproduces the single-process samples (every expert and image in one process) to
  float tolerance, on 2 and 4 ranks;
- DistriFusion on W ranks reproduces its own single-process emulation (same staleness), equals ``sp``
  when every step is a warm-up step, and differs exactly where its K/V are stale: the shadow error is
  zero on fresh steps and positive on stale ones, and the K/V used equal fresh ones iff the lag is 0;
- the lags measured from the data equal the plan's and the simulator's; the buffer bytes measured on
  the tensors equal the plan's; the trace carries the gathers on the communication stream.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dicesim.plan import build_plan, family_of
from dicesim.sim.api import prepare, simulate
from dicesim.strategy import make_strategy
from dicesim.trace import read_trace
from validate.cli import main
from validate.executor.families import run_emulated
from validate.executor.launch import launch
from validate.executor.summary import summarize, write_run_trace
from validate.executor.worker import RunSpec

STEPS = 4
BASE = dict(model="tiny", steps=STEPS, batch=1, image_size=64, shadow=True)  # 16 tokens per image, 4 layers


def _spec(name: str, **kw) -> RunSpec:
    return RunSpec(strategy=make_strategy(name, **kw), **BASE)


def _samples(outcome) -> torch.Tensor:
    return torch.cat([r.samples_BCLL for r in sorted(outcome.ranks, key=lambda r: r.rank)])


@pytest.fixture(scope="module")
def runs():
    specs = {"sp": _spec("sp"), "distrifusion": _spec("distrifusion"),
             "all_fresh": _spec("distrifusion", warmup_steps=STEPS - 1)}
    out = {}
    for world in (2, 4):
        outcomes = launch(list(specs.values()), world_size=world, timeout_s=120)
        out[world] = dict(zip(specs, outcomes))
    return specs, out


@pytest.mark.parametrize("world", [2, 4])
def test_sp_reproduces_the_single_process_samples(runs, world):
    specs, out = runs
    reference = run_emulated(RunSpec(strategy=make_strategy("sync"), **BASE), world).samples_BCLL
    assert reference.shape[0] == world * BASE["batch"]
    torch.testing.assert_close(_samples(out[world]["sp"]), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_samples(out[world]["all_fresh"]), reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(_samples(out[world]["distrifusion"]), reference, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("world", [2, 4])
def test_distrifusion_matches_its_emulation_and_is_stale_where_the_plan_says(runs, world):
    specs, out = runs
    spec, outcome = specs["distrifusion"], out[world]["distrifusion"]
    emulated = run_emulated(spec, world)
    torch.testing.assert_close(_samples(outcome), emulated.samples_BCLL, rtol=1e-5, atol=1e-5)
    plan = build_plan(spec.strategy, spec.preset.depth, STEPS)
    summary = summarize(outcome)
    err = np.array(summary["shadow_rel_l2"], dtype=float)
    for r in outcome.ranks + [emulated]:
        rec = r.record
        assert np.array_equal(rec.lag_kept, plan.lags.kept)  # read from the data, equal to the plan
        assert np.array_equal(rec.kv_equal_fresh, plan.lags.kept == 0)
    assert (err[plan.lags.kept == 0] == 0).all() and (err[plan.lags.kept > 0] > 1e-4).all()
    assert summary["mean_lag_steps"] == pytest.approx((STEPS - 1) / STEPS)


def test_simulator_and_executor_agree_on_lags_and_buffers(runs):
    specs, out = runs
    for name in ("sp", "distrifusion", "all_fresh"):
        spec, outcome = specs[name], out[2][name]
        sim = simulate(model="tiny", strategy=spec.strategy, world_size=2, batch=1, image_size=64, steps=STEPS,
                       topology="tiny-ring4", dtype="fp32", profile="h100-sxm")
        prep = prepare(model="tiny", strategy=spec.strategy, world_size=2, batch=1, image_size=64, steps=STEPS,
                       topology="tiny-ring4", dtype="fp32", profile="h100-sxm")
        plan = prep.plan
        want_TW = family_of(plan.strategy).buffer_nbytes_TW(plan, prep.routing, prep.spec.row_nbytes)
        for r in outcome.ranks:
            assert np.array_equal(r.record.lag_kept, sim.lag_table.kept), name
            assert r.record.held_total_nbytes == want_TW[:, r.rank].astype(int).tolist(), name
        assert sim.totals["peak_buffer_bytes"] == max(outcome.ranks[0].record.held_total_nbytes)


def test_trace_has_the_gathers_on_the_communication_stream(runs, tmp_path):
    specs, out = runs
    paths = write_run_trace(out[2]["distrifusion"], tmp_path)
    events, meta = read_trace(paths["parquet"])
    coll = events[events.kind == "collective"]
    assert set(coll.stream) == {"comm"} and set(coll["rank"]) == {0, 1}
    counts = coll[coll["rank"] == 0].groupby("name").size().to_dict()
    L = 4
    assert counts == {"kv_gather": L + STEPS * (L // 4), "scatter": STEPS, "broadcast": STEPS,
                      "token_gather": STEPS}
    kv = coll[(coll.name == "kv_gather") & (coll["rank"] == 0)]
    assert set(kv.rows) == {2 * 4 * 8 * 1, 2 * 4 * 8 * 4}  # K and V of 4 images x 8 tokens, 1 or 4 layers, 1 peer
    assert {"sp_qkv", "sp_attend", "local_moe"} <= set(events[events.kind == "compute"].name)


def test_cli_reports_kv_staleness(capsys):
    code = main(["run", "--strategy", "distrifusion", "--world-size", "4", "--backend", "gloo", "--steps", "5",
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mean_lag_steps"] == pytest.approx(4 / 5) and result["max_lag_steps"] == 1
    assert result["peak_buffer_bytes"] == 2 * 4 * (2 * 4 * 2) * 4 * 32 * 4  # 2 L N_img T D b, fp32
    assert "K/V" in result["extra"]["lag_of"]
    code = main(["run", "--strategy", "sp", "--world-size", "3", "--backend", "gloo"])
    err = capsys.readouterr().err
    assert code == 2 and "do not split over 3 ranks" in err and len(err.strip().splitlines()) == 1
