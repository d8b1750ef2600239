"""Configurations that do not fit their GPUs' memory, through every command (docs/memory.md).

`simulate` says so in one line; `compare` carries `fits`; `sweep`'s best under budget, `study`'s
fastest per setting and family table, and `recommend`'s ranking and Pareto front never pick one,
and say why. The strategy lists of compare, the default study and recommend come from the
registry: every family's comparison presets, data parallelism included.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from dicesim.alternatives import alternative_presets
from dicesim.cli import main
from dicesim.compare import compare_strategies
from dicesim.recommend import make_limits, search
from dicesim.report.study_families import family_winners
from dicesim.report.study_text import fastest_per_setting
from dicesim.report.sweep_report import best_under_budget, over_memory
from dicesim.scenario import make_scenario
from dicesim.search_space import make_space
from dicesim.sim.api import simulate
from dicesim.strategy import COMPARE_DEFAULT
from dicesim.study import DEFAULT_STUDY, StudyEvaluator, parallelism

G2_4090 = dict(model="G/2", topology="8x-rtx4090-pcie", world_size=8, batch=32)


def test_strategy_lists_come_from_the_registry():
    assert COMPARE_DEFAULT[:2] == ("sync", "data_parallel") and "dice" in COMPARE_DEFAULT
    assert DEFAULT_STUDY.strategies == COMPARE_DEFAULT
    assert "data_parallel" in alternative_presets() and "dice" not in alternative_presets()


def test_simulate_says_in_one_line_that_g2_data_parallel_does_not_fit(capsys):
    args = ["simulate", "--model", "G/2", "--topology", "8x-rtx4090-pcie", "--world-size", "8", "--batch", "32",
            "--strategy", "data_parallel", "--steps", "2"]
    assert main(args) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "does not fit" in ln]
    assert len(lines) == 1
    assert lines[0].startswith("does not fit in GPU memory: needs 32.2 GiB per GPU of 24.0 GiB, 8.2 GiB over")
    assert "weights 30.7 GiB" in lines[0]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fits"] is False
    assert doc["memory_margin_bytes"] < 0 and doc["peak_memory_bytes"] > doc["memory_capacity_bytes"]
    assert doc["extra"]["memory_by_holder"]["weights"] == pytest.approx(30.7 * 2**30, rel=0.01)


def test_compare_marks_what_does_not_fit(tmp_path):
    sc = make_scenario(**G2_4090, steps=2)
    cmp = compare_strategies(sc, ["sync", "data_parallel", "dice"], record=False)
    fits = dict(zip(cmp.table["strategy"], cmp.table["fits"]))
    assert fits == {"sync": True, "data_parallel": False, "dice": True}
    assert (cmp.table["peak_memory_bytes"] > 0).all()


def _row(strategy: str, latency: float, margin: float, **kw) -> dict:
    return {"index": kw.pop("index", 0), "key": strategy, "status": "ok", "strategy": strategy, "model": "G/2",
            "topology": "8x-rtx4090-pcie", "world_size": 8, "batch": 32, "image_size": 256,
            "step_latency_s": latency, "weighted_lag_steps": 0.0 if strategy in ("sync", "data_parallel") else 0.5,
            "exposed_comm_share_frac": 0.5, "peak_memory_bytes": 24 * 2**30 - margin,
            "memory_capacity_bytes": 24 * 2**30, "memory_margin_bytes": margin, **kw}


def test_sweep_best_and_study_fastest_leave_out_what_does_not_fit():
    table = pd.DataFrame([_row("sync", 2.5, 10e9, index=0), _row("data_parallel", 0.8, -8e9, index=1),
                          _row("dice", 1.7, 5e9, index=2)])
    assert over_memory(table).tolist() == [False, True, False]
    best = best_under_budget(table)
    assert best["best"].tolist() == ["dice"] and best["not_fitting"].tolist() == ["data_parallel"]
    t = table.assign(speedup=2.5 / table["step_latency_s"])
    fastest = fastest_per_setting(t, ["topology"])
    assert fastest["fastest"].tolist() == ["dice"] and fastest["not_fitting"].tolist() == ["data_parallel"]
    winners = family_winners(t)
    assert winners["winner"].tolist() == ["dice"] and winners["family"].tolist() == ["expert_parallel"]
    assert winners["data_parallel"].iloc[0].startswith("does not fit: data_parallel needs")


def test_study_rows_carry_the_family_and_the_verdict():
    sc = make_scenario(**G2_4090, steps=2, strategy="data_parallel")
    row = StudyEvaluator()(sc)
    assert row["parallelism"] == "data_parallel" and row["fits"] is False and row["memory_margin_bytes"] < 0
    assert parallelism(sc.with_strategy(make_scenario(strategy="dice").strategy)) == "expert_parallel"


def test_recommend_screens_out_what_does_not_fit_and_weighs_data_parallel():
    space = make_space(schemes=("interweaved",), sync_presets=("deep",), block_sizes=(39,), cond_intervals=(1,),
                       cond_policies=("low",), warmups=(1,))
    rec = search(make_scenario(**G2_4090, steps=2), space, make_limits())
    t = rec.table.set_index("strategy")
    assert t.at["data_parallel", "status"] == "does not fit"
    assert t.at["data_parallel", "reason"] == "does not fit in GPU memory: needs 32.2 GiB of 24.0 GiB per GPU"
    assert math.isnan(t.at["data_parallel", "step_latency_s"])  # never simulated
    assert "data_parallel" not in set(rec.ranked["strategy"]) and "data_parallel" not in set(rec.front["strategy"])
    assert rec.best is not None and rec.best["strategy"] != "data_parallel"


def test_recommend_memory_of_a_candidate_is_the_simulators():
    """Expected routing: the screening's memory per GPU equals what `simulate` reports."""
    sc = make_scenario(model="tiny", topology="8x-rtx4090-pcie", world_size=4, batch=8, steps=8)
    space = make_space(schemes=("displaced",), sync_presets=("none",), block_sizes=(1,), cond_intervals=(1,),
                       cond_policies=("low",), warmups=(1,))
    rec = search(sc, space, make_limits())
    t = rec.table.set_index("strategy")
    assert t.at["ulysses", "status"] == "cannot run"  # the tiny model's 2 heads do not split over 4 GPUs
    for name in t.index[t["status"] != "cannot run"]:
        sim = simulate(sc.with_strategy(_strategy_named(name))).summary()
        assert t.at[name, "peak_memory_bytes"] == pytest.approx(sim["peak_memory_bytes"], rel=1e-9), name
    assert t.at["data_parallel", "status"] in ("recommended", "feasible")  # fits: weighed and simulated


def _strategy_named(name: str):
    from dicesim.search_space import candidates
    from dicesim.strategy import make_strategy

    if name in COMPARE_DEFAULT:
        return make_strategy(name)
    space = make_space(schemes=("displaced",), sync_presets=("none",), block_sizes=(1,), cond_intervals=(1,),
                       cond_policies=("low",), warmups=(1,))
    return next(s for s, _ in candidates(space, 4) if s.name == name)
