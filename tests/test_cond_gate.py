"""Conditional communication gated as the DICE reference gates it (``cond_gate="reference"``).

The expected matrices are the reference's own runs (its code on 2 gloo CPU ranks, 28 layers x
50 steps; ``tests/data/reference_cond_28x50.json``, made by ``tests/data/reference_cond_extract.py``):
per layer the steps whose dispatch sent one copy per token, the lags of the kept and the dropped
copies, the layers holding a skip-cache entry after each step, and where a run failed. dicesim reads each run's flags with its own
``reference_flags`` and must give the same plan, or refuse it at the same step and layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dicesim.plan import PlanRefused, build_plan, held_buffers
from dicesim.plan.staleness import lag_means
from dicesim.reference_flags import strategy_from_reference_flags
from dicesim.strategy import ExpertParallelStrategy, make_strategy

RUNS = json.loads((Path(__file__).parent / "data" / "reference_cond_28x50.json").read_text())["cases"]
EXCHANGES = ("issue_dispatch", "sync_moe")  # the actions that send a layer's tokens


def one_copy_steps(plan) -> dict[int, list[int]]:
    """Per layer, the steps whose exchange of that step's tokens sent one copy per token."""
    out: dict[int, list[int]] = {l: [] for l in range(plan.num_layers)}
    for _, actions in plan:
        for a in actions:
            if a.kind in EXCHANGES and a.skip:
                out[a.layer].append(a.tok_step)
    return {l: sorted(v) for l, v in out.items()}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_plan_is_the_reference_run(name):
    run = RUNS[name]
    cfg, _ = strategy_from_reference_flags(run["flags"])
    L, T = run["layers"], run["steps"]
    if run["failure"] is not None:
        f = run["failure"]
        with pytest.raises(PlanRefused, match=fr"at step {f['step']} of {T} \(its i = {T - f['step']}\), "
                                              fr"layer {f['layer']}:"):
            build_plan(cfg, L, T)
        return
    plan = build_plan(cfg, L, T)
    assert list(plan.async_layers) == run["async_layers"]
    skips, lags = one_copy_steps(plan), plan.lags
    for col in run["columns"]:
        for l in col["layers"]:
            assert skips[l] == col["skip_steps"], l
            assert lags.kept[:, l].tolist() == col["lag_kept"], l
            assert lags.dropped[:, l].tolist() == col["lag_dropped"], l
    # the reference's skip cache after each step (dicesim holds nothing after the last: the run returns)
    entries = [sum(h.what == "skip_cache" for h in held_buffers(plan, t)) for t in range(T - 1)]
    assert entries == run["skip_cache_entries"][:T - 1]


@pytest.mark.parametrize("name, counts", [
    ("dice", {"async": 13, "sync": 25}),  # interweaved async layers skip every fourth step
    ("interweaved_cond", {"async": 13}),
    ("displaced_cond", {"async": 25}),  # displaced layers: every odd step
    ("dice_n3", {"async": 17, "sync": 17}),
    ("displaced_cond_n3", {"async": 17}),
])
def test_skips_per_layer_over_steps_1_to_49(name, counts):
    """The issue's figures, from dicesim's plan: steps 1..49 on which each layer sent one copy."""
    run = RUNS[name]
    plan = build_plan(strategy_from_reference_flags(run["flags"])[0], run["layers"], run["steps"])
    got: dict[str, set[int]] = {}
    for l, steps in one_copy_steps(plan).items():
        got.setdefault("async" if l in plan.async_layers else "sync", set()).add(sum(1 for s in steps if s >= 1))
    assert got == {k: {v} for k, v in counts.items()}


def test_dice_mean_lag_over_copies_is_the_reference_runs():
    """0.675 steps (kept and dropped copy averaged, 28 layers x 50 steps), from the run's own matrices."""
    run = RUNS["dice"]
    ref = np.zeros((2, run["steps"], run["layers"]))
    for col in run["columns"]:
        for l in col["layers"]:
            ref[:, :, l] = col["lag_kept"], col["lag_dropped"]
    plan = build_plan(make_strategy("dice"), run["layers"], run["steps"])
    assert lag_means(plan.lags, 2, 0.5)["mean_lag"] == pytest.approx(ref.mean(), abs=1e-12)
    assert ref.mean() == pytest.approx(0.675)
    every = build_plan(make_strategy("dice", cond_gate="every_candidate"), run["layers"], run["steps"])
    assert lag_means(every.lags, 2, 0.5)["mean_lag"] == pytest.approx(0.735)  # the old gate


@st.composite
def configs(draw):
    L = draw(st.integers(1, 8))
    cfg = ExpertParallelStrategy(
        scheme=draw(st.sampled_from(["displaced", "interweaved"])),
        sync_layers=draw(st.sampled_from(["none", "deep", "shallow", "alternate"])),
        cond_interval=draw(st.integers(2, 6)),
        warmup_steps=draw(st.integers(0, 3)),
        cooldown_steps=draw(st.integers(0, 3)),
        sync_every=draw(st.integers(0, 5)),
        async_work=draw(st.sampled_from(["every_step", "consumed_only"])),
        cond_scope=draw(st.sampled_from(["all", "async"])),
        cond_gate="reference",
    )
    return cfg, L, draw(st.integers(1, 20))


@given(configs())
def test_reference_gate_laws(c):
    """An exchange sends one copy exactly on a candidate step (the reference's counter i = T - t)
    while the layer's skip-cache entry exists (and, on a synced layer, with ``cond_scope="all"`` on
    an asynchronous step); never two one-copy outputs into a layer without a full one between; when
    n divides T (the same candidate steps) a subset of the every-candidate gate's skips."""
    cfg, L, T = c
    try:
        plan = build_plan(cfg, L, T)
    except PlanRefused:
        assume(False)
        return
    entry = [False] * L
    for t, actions in plan:
        if cfg.step_is_sync(t, T):
            entry = [False] * L  # a fully synchronous step clears the skip cache
        for a in actions:
            if a.kind in EXCHANGES:
                scope = a.kind == "issue_dispatch" or (cfg.cond_scope == "all" and not cfg.step_is_sync(t, T))
                assert a.skip == (cfg.cond_candidate(t, T) and entry[a.layer] and scope), (t, a.layer)
            # what reaches the layer: a synchronous exchange at once, an asynchronous one when waited for
            if a.kind in ("sync_moe", "wait_combine"):
                assert entry[a.layer] or not a.skip, (t, a.layer)
                entry[a.layer] = not a.skip
    if T % cfg.cond_interval == 0:
        every = one_copy_steps(build_plan(cfg.model_copy(update={"cond_gate": "every_candidate"}), L, T))
        assert all(set(v) <= set(every[l]) for l, v in one_copy_steps(plan).items())


def test_interval_zero_is_refused_by_the_strategy():
    with pytest.raises(ValueError, match="cond_interval"):
        ExpertParallelStrategy(scheme="interweaved", cond_interval=0)


@given(scheme=st.sampled_from(["displaced", "interweaved"]), n=st.integers(2, 8), warmup=st.integers(0, 4),
       cooldown=st.integers(0, 3), sync_every=st.sampled_from([0, 3, 5]), sync_layers=st.sampled_from(["none", "deep"]),
       scope=st.sampled_from(["async", "all"]), work=st.sampled_from(["consumed_only", "every_step"]),
       layers=st.integers(2, 12), steps=st.integers(1, 40))
def test_probe_build_misses_where_the_plan_does(scheme, n, warmup, cooldown, sync_every, sync_layers, scope, work,
                                                layers, steps):
    """A refusal's probes (``_build(probe=True)``: no actions) miss exactly where the full build does,
    at the same step and layer, or not at all: the intervals a refusal lists are the full rules'."""
    from dicesim.plan.expert.rules import _build, _Miss

    s = ExpertParallelStrategy(scheme=scheme, cond_interval=n, warmup_steps=warmup, cooldown_steps=cooldown,
                               sync_every=sync_every, sync_layers=sync_layers, cond_scope=scope, async_work=work,
                               cond_gate="reference")
    outcomes = []
    for probe in (False, True):
        try:
            outcomes.append(("ran", _build(s, layers, steps, None, probe=probe) is None))
        except _Miss as miss:
            outcomes.append(("miss", miss.step, miss.layer))
    assert outcomes[0][0] == outcomes[1][0]
    if outcomes[0][0] == "miss":
        assert outcomes[0] == outcomes[1]
    else:
        assert outcomes == [("ran", False), ("ran", True)]  # a probe returns no plan
