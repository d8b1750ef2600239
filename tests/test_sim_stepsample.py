"""Sampled steps: the interval on the run's latency covers the full simulation at its stated rate,
nothing is sampled where it does not apply, and the short run is the full plan with whole periods removed."""

from __future__ import annotations

import numpy as np
import pytest

from dicesim.plan import build_plan
from dicesim.sim.api import prepare, simulate
from dicesim.sim.stepsample import (
    CONFIDENCE, StepSample, _signature, carry_depth, plan_step_sample, predict_steps, steady_range,
)
from dicesim.strategy import make_strategy
from dicesim.topology import hardware as hw
from dicesim.topology import nvswitch_server
from dicesim.topology.graph import LinkSpec


def _slow_server():
    """4 GPUs on slow NVSwitch links: the all-to-alls dominate, so each step's draws show."""
    slow = LinkSpec(bw_Bps=2e9, latency_s=1e-6, link="nvlink4", source=hw.NVLINK4_H100.source)
    return nvswitch_server(slow, gpus=4, gpu="h100-sxm", name="4-slow")


KW = dict(model="S/2", num_experts=4, world_size=4, batch=2, image_size=64, steps=24, sampling="multinomial",
          profile="h100-sxm")


@pytest.mark.parametrize("strategy, seeds", [("dice", range(24)), ("sync", range(100, 112)),
                                             ("displaced", range(200, 212))])
def test_sampled_steps_cover_the_full_simulation(strategy, seeds):
    """Over these seeds the interval holds the full simulation's step latency at about the stated rate
    (with the carry depth's long-run variance: dice 24 of 24, sync 12 of 12, displaced 11 of 12; on 200
    other seeds each dice 198, sync 197, displaced 198; before it displaced covered 53 of 60; 80% is
    allowed, near the binomial 1% tail at 95% for 12 runs) and the estimate is within 1% of it (0.65% at
    most when written)."""
    G = _slow_server()
    hits, errs = 0, []
    for seed in seeds:
        kw = dict(KW, graph=G, strategy=strategy, seed=seed)
        full = simulate(**kw, sample_steps=0)
        fast = simulate(**kw, sample_steps=None)
        info = fast.meta["steps"]
        assert info["applied"] and info["steps_simulated"] <= KW["steps"] // 2
        assert fast.meta["sim_events"] < 0.7 * full.meta["sim_events"]
        t = fast.totals
        assert t["step_latency_low_s"] <= t["step_latency_s"] <= t["step_latency_high_s"]
        hits += t["step_latency_low_s"] <= full.totals["step_latency_s"] <= t["step_latency_high_s"]
        errs.append(abs(t["step_latency_s"] / full.totals["step_latency_s"] - 1))
    assert hits >= 0.8 * len(seeds) and max(errs) < 1e-2


def test_warm_up_steps_are_the_full_runs():
    """The warm-up steps run first with their own draws in both runs: their step ends are equal."""
    kw = dict(KW, graph=_slow_server(), strategy="dice", seed=3)
    full, fast = simulate(**kw, sample_steps=0), simulate(**kw, sample_steps=None)
    head = fast.meta["steps"]["head_steps"]
    assert head >= 1
    np.testing.assert_allclose(fast.per_step["end_s"][:head], full.per_step["end_s"][:head], rtol=1e-12)
    assert fast.totals["collectives"] == full.totals["collectives"]  # counted from the plan, exactly
    # plan-only facts are the full run's
    assert fast.totals["peak_buffer_bytes"] == full.totals["peak_buffer_bytes"]
    assert fast.lags.equals(full.lags)


def test_short_plan_is_the_full_plan_with_whole_periods_removed():
    prep = prepare(**dict(KW, strategy="dice", steps=50, seed=1))
    ss, why = plan_step_sample(prep.spec, None, seed=1)
    assert isinstance(ss, StepSample) and why == ""
    full, short = _signature(prep.plan), _signature(ss.spec.plan)
    h, p = ss.head, ss.period
    assert steady_range(full) == (ss.head, ss.tail, ss.period)
    for s, t in enumerate(ss.orig):  # every short step runs the actions of the full step it stands for
        assert short[s] == full[t]
        if h <= s < h + ss.n:
            assert (t - h) % p == (s - h) % p
    assert ss.orig[:h] == tuple(range(h)) and ss.orig[-ss.tail:] == tuple(range(50 - ss.tail, 50))
    # ... and carries that step's draws
    np.testing.assert_array_equal(ss.spec.routing.counts_LTWE, prep.routing.counts_LTWE[:, list(ss.orig)])


@pytest.mark.parametrize("fields, reason", [
    (dict(sampling="expected"), "routing not drawn"),
    (dict(steps=12), "run too short"),
])
def test_nothing_sampled_where_it_does_not_apply(fields, reason):
    """Expected routing and short runs: the full simulation, equal to the one with sampling off."""
    kw = dict(KW, graph=_slow_server(), strategy="dice", seed=5, **fields)
    a, b = simulate(**kw, sample_steps=None), simulate(**kw, sample_steps=0)
    assert not a.meta["steps"]["applied"] and a.meta["steps"]["reason"].startswith(reason)
    assert b.meta["steps"]["reason"] == "turned off"
    assert a.totals == b.totals and "step_latency_low_s" not in a.totals


def test_record_and_plans_without_repeats_are_not_sampled():
    kw = dict(KW, graph=_slow_server(), strategy="dice", seed=5, steps=20)
    assert simulate(**kw, record=True, sample_steps=None).meta["steps"]["reason"].startswith("recorded run")
    assert steady_range([(i,) for i in range(20)]) is None
    assert build_plan  # the plans above are built by the family's own rules


def _coverage(ss: StepSample, theta: float, trials: int = 2000) -> float:
    """How often ``predict_steps`` covers the true total when step latencies are their phase's mean plus
    ``e_t + theta * e_{t-1}`` (independent normal draws ``e``; ``theta`` 0: independent steps), the short
    run's steady steps a chain of their own draws (each after a sampled predecessor, as in the engine)."""
    rng = np.random.default_rng(11)
    means = np.array([1.0, 1.3, 0.9, 1.1])
    n_full, n = sum(ss.phase_N), ss.n
    hits = 0
    for _ in range(trials):
        e = 0.01 * rng.standard_normal(n_full + 1)
        truth_steady = means[np.arange(n_full) % 4] + e[1:] + theta * e[:-1]
        d = 0.01 * rng.standard_normal(n + 1)
        drawn = means[np.arange(n) % 4] + d[1:] + theta * d[:-1]
        x_S = np.concatenate([[0.5, 0.7], drawn, [0.4]])
        truth = 0.5 + 0.7 + truth_steady.sum() + 0.4 + 0.01 * rng.standard_normal()
        pred = predict_steps(x_S, ss)
        hits += pred["low_s"] <= truth <= pred["high_s"]
    return hits / trials


def test_predicted_interval_covers_normal_steps_at_the_stated_rate():
    """Under the independent model (carry 0: simulated steady steps are independent draws of their phase's
    normal law, not the full run's own values; the closing step one more draw away) the interval covers
    the true total at the stated rate (2,000 trials; 95% +- 1.5% is three standard errors)."""
    ss = StepSample(spec=None, steps=50, head=2, tail=1, period=4, orig=tuple(range(10)), phase_N=(12, 12, 12, 11))
    assert abs(_coverage(ss, 0.0) - CONFIDENCE) < 0.015


def test_interval_allows_for_correlated_consecutive_steps():
    """Consecutive steps that share a draw equally (``e_t + e_{t-1}``: lag-1 autocorrelation 0.5, the most a
    moving average of depth 1 has; a displaced copy finishing in the next step makes them correlated,
    0.42 on the coverage case): the independent model's interval (carry 0) covers far less than it
    states; the long-run variance at its bound for depth 1 covers at the stated rate (or more)."""
    kw = dict(spec=None, steps=50, head=2, tail=1, period=4, orig=tuple(range(10)), phase_N=(12, 12, 12, 11))
    assert _coverage(StepSample(carry=0, **kw), 1.0) < CONFIDENCE - 0.05
    assert _coverage(StepSample(carry=1, **kw), 1.0) >= CONFIDENCE - 0.015


def test_carry_depth_of_the_plans():
    """A displaced plan's copies carry tokens two steps back, dice's one, a synchronous plan's none."""
    depth = {s: carry_depth(_signature(build_plan(make_strategy(s), 4, 12))) for s in ("sync", "dice", "displaced")}
    assert depth == {"sync": 0, "dice": 1, "displaced": 2}


def test_sample_steps_flag(tmp_path):
    """`dicesim simulate` samples a long drawn run's steady steps by default; `--every-step` simulates every step."""
    import json

    from typer.testing import CliRunner

    from dicesim.cli import _register, app

    _register()
    scen = tmp_path / "s.toml"
    scen.write_text('[model]\nname = "S/2"\n[workload]\nbatch = 2\nimage_size = 64\nsteps = 24\n'
                    '[strategy]\npreset = "dice"\n[topology]\nname = "dgx-h100"\nworld_size = 4\n'
                    '[routing]\nsampling = "multinomial"\n')
    runner = CliRunner()
    out = {}
    for flag in ([], ["--every-step"], ["--sample-steps"]):
        res = runner.invoke(app, ["simulate", str(scen), "--num-experts", "4", "--json", *flag])
        assert res.exit_code == 0, res.output
        out[tuple(flag)] = json.loads(res.stdout)
    assert out[()] == out[("--sample-steps",)]
    out = {True: out[()], False: out[("--every-step",)]}
    human = runner.invoke(app, ["simulate", str(scen), "--num-experts", "4", "--traces", "none"])
    assert human.exit_code == 0 and f"sampled: {out[True]['extra']['steps_simulated']} of 24 steps simulated" in human.stdout, human.stdout
    assert "sampled:" not in runner.invoke(app, ["simulate", str(scen), "--num-experts", "4", "--traces", "none",
                                                 "--every-step"]).stdout
    sampled, exact = out[True]["extra"], out[False]["extra"]
    assert sampled["steps_simulated"] < 24 and sampled["step_sd_s"] >= 0 and "steps_simulated" not in exact
    assert sampled["step_latency_low_s"] <= out[True]["step_latency_s"] <= sampled["step_latency_high_s"]
    assert "step_latency_low_s" not in exact


def test_sweep_rows_say_they_were_sampled():
    """A sweep or study row of a sampled run carries how many steps were simulated and the 95% sampling
    interval around its step latency; a run simulated whole carries neither (never a silent estimate)."""
    from dicesim.scenario import scenario_from_dict
    from dicesim.sweep import simulate_metrics

    base = dict(model={"name": "S/2", "num_experts": 4}, workload={"batch": 2, "image_size": 64, "steps": 24},
                strategy={"preset": "dice"}, topology={"name": "dgx-h100", "world_size": 4})
    drawn = simulate_metrics(scenario_from_dict({**base, "routing": {"sampling": "multinomial"}}))
    assert 0 < drawn["steps_simulated"] < 24
    assert drawn["sampled_step_low_s"] <= drawn["step_latency_s"] <= drawn["sampled_step_high_s"]
    whole = simulate_metrics(scenario_from_dict(base))
    assert not {"steps_simulated", "groups_simulated", "sampled_step_low_s"} & set(whole)
