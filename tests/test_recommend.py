"""`dicesim recommend`: limits respected, the Pareto-optimal fastest choice, bounds that agree with brute force."""

from __future__ import annotations

import pandas as pd
import pytest

from dicesim.cli import main
from dicesim.errors import ConfigError
from dicesim.recommend import make_limits, screen, search
from dicesim.scenario import make_scenario
from dicesim.search_space import TimingClass, at_least_as_fast, candidates, make_space
from dicesim.sim.api import simulate
from dicesim.plan import build_plan

# tiny on PCIe without peer-to-peer: small enough to simulate every candidate, and
# communication-bound, so hiding the all-to-alls pays and the limits decide the answer
SCENARIO = make_scenario(model="tiny", topology="8x-rtx4090-pcie", world_size=4, batch=8, steps=8)
SPACE = make_space(sync_presets=("none", "deep", "alternate"), block_sizes=(1, 3), cond_intervals=(1, 2),
                   cond_policies=("low", "high"), warmups=(1, 2), alternatives=())
TINY = ["--model", "tiny", "--topology", "8x-rtx4090-pcie", "--world-size", "4", "--batch", "8", "--steps", "8",
        "--workers", "0", "--cond-intervals", "1,2", "--cond-policies", "low,high", "--warmups", "1,2",
        "--block-sizes", "1,3", "--alternatives", "none"]


@pytest.fixture(scope="module")
def brute() -> pd.DataFrame:
    """Every candidate simulated on its own, with the simulator's own summary (the reference)."""
    rows = []
    for strategy, _ in candidates(SPACE, 4):
        s = simulate(SCENARIO.with_strategy(strategy)).summary()
        rows.append({"strategy": strategy.name, "step_latency_s": s["step_latency_s"], "max_lag_steps": s["max_lag"],
                     "weighted_lag_steps": s["weighted_lag"], "mean_lag_steps": s["mean_lag"],
                     "peak_buffer_bytes": s["peak_buffer_bytes"]})
    return pd.DataFrame(rows).set_index("strategy")


def _front(df: pd.DataFrame, cols: list[str]) -> set[str]:
    """Brute-force Pareto front (all columns minimised); values within a relative 1e-9 are equal, as
    the recommender treats them (the same plan timed on another worker can differ in the last bit)."""
    vals = df[cols].to_numpy()
    lo, hi = vals * (1 - 1e-9), vals * (1 + 1e-9)
    keep = set()
    for i, name in enumerate(df.index):
        dominated = any((vals[j] <= hi[i]).all() and (vals[j] < lo[i]).any() for j in range(len(vals)) if j != i)
        if not dominated:
            keep.add(name)
    return keep


def test_screening_reports_the_simulators_own_lags_and_buffers(brute):
    table, classes = screen(SCENARIO, SPACE, make_limits())
    t = table.set_index("strategy")
    assert len(classes) < len(t)  # the two policies of each conditional candidate share a class
    for col in ("max_lag_steps", "weighted_lag_steps", "mean_lag_steps", "peak_buffer_bytes"):
        pd.testing.assert_series_equal(t[col].sort_index(), brute[col].sort_index(), check_names=False)


def test_respects_every_limit_and_returns_the_pareto_optimal_fastest(brute):
    limits = make_limits(max_lag_steps=2, max_weighted_lag_steps=0.8,
                         max_buffer_bytes=float(brute["peak_buffer_bytes"].median()),
                         max_step_latency_s=float(brute["step_latency_s"].quantile(0.7)))
    rec = search(SCENARIO, SPACE, limits)
    t = rec.table.set_index("strategy")
    feasible = brute[(brute["max_lag_steps"] <= 2) & (brute["weighted_lag_steps"] <= 0.8)
                     & (brute["peak_buffer_bytes"] <= limits.max_buffer_bytes)
                     & (brute["step_latency_s"] <= limits.max_step_latency_s)]
    assert 3 <= len(feasible) < len(brute)  # the limits bite, and something is left
    ok = t[t["status"].isin(["recommended", "feasible"])]
    assert set(ok.index) <= set(feasible.index)
    assert (ok["max_lag_steps"] <= 2).all() and (ok["weighted_lag_steps"] <= 0.8).all()
    assert (ok["peak_buffer_bytes"] <= limits.max_buffer_bytes).all()
    assert (ok["step_latency_s"] <= limits.max_step_latency_s).all()
    expected = feasible.sort_values(["step_latency_s", "weighted_lag_steps", "peak_buffer_bytes"], kind="stable")
    assert rec.best["strategy"] == expected.index[0]
    assert rec.best["step_latency_s"] == pytest.approx(expected["step_latency_s"].iloc[0], rel=1e-12)
    cols = ["step_latency_s", "weighted_lag_steps", "peak_buffer_bytes"]
    assert set(rec.front["strategy"]) == _front(feasible, cols)
    # every candidate left out says why, and no feasible one was lost to a bound
    out = t[~t["status"].isin(["recommended", "feasible"])]
    assert (out["reason"].str.len() > 0).all()
    assert not set(out.index[out["status"] == "pruned"]) & _front(feasible, cols)
    assert rec.violations == []


@pytest.mark.parametrize("max_lag, answer", [(0, "sync"), (1, "interweaved")])
def test_known_answers_for_a_lag_limit(max_lag, answer):
    # max lag 0: only fully synchronous runs; max lag 1: displaced (lag 2) and conditional
    # communication (dropped copies lag 2) are out, and the fastest interweaved variant is the
    # one with no synchronous layers and the shortest warm-up: the `interweaved` preset
    rec = search(SCENARIO, SPACE, make_limits(max_lag_steps=max_lag))
    assert rec.best["strategy"] == answer
    assert (rec.ranked["max_lag_steps"] <= max_lag).all()


def test_bounds_give_the_exhaustive_answer_with_fewer_simulations(brute):
    target = float(brute["step_latency_s"].quantile(0.3))
    limits = make_limits(max_weighted_lag_steps=0.8, max_step_latency_s=target)
    fast = search(SCENARIO, SPACE, limits)
    full = search(SCENARIO, SPACE, limits, exhaustive=True)
    assert fast.best["strategy"] == full.best["strategy"]
    assert set(fast.front["strategy"]) == set(full.front["strategy"])
    assert fast.n_simulated < full.n_simulated == full.n_classes
    assert fast.violations == full.violations == []
    pruned = fast.table[fast.table["status"] == "pruned"]
    assert len(pruned) and pruned["reason"].str.startswith("bound:").all()


def test_timing_classes_merge_only_runs_that_take_the_same_time():
    dice = SCENARIO.with_strategy(make_scenario(strategy="dice").strategy)
    lat = {p: simulate(dice.with_strategy(dice.strategy.model_copy(update={"cond_policy": p}))).summary()[
        "step_latency_s"] for p in ("low", "high", "random")}
    assert lat["low"] == lat["high"] == lat["random"]  # exactly: the policy never changes what is sent
    def cls(**update):
        return TimingClass.of(build_plan(dice.strategy.model_copy(update=update), 4, 8))
    # more synchronous layers and steps, both copies everywhere: no faster
    a, b = cls(sync_layers=(3,), cond_interval=1), cls(sync_layers=(2, 3), warmup_steps=2, cond_interval=1)
    assert at_least_as_fast(a, b) and not at_least_as_fast(b, a)
    # both copies in every exchange: no faster than conditional communication
    assert at_least_as_fast(cls(), cls(cond_interval=1)) and not at_least_as_fast(cls(cond_interval=1), cls())
    # the reference's gate lets a synced layer skip more often than an async one (every odd step, not
    # every fourth), so a layer more in sync does not order the classes
    c, d = cls(sync_layers=(3,)), cls(sync_layers=(2, 3))
    assert not at_least_as_fast(c, d) and not at_least_as_fast(d, c)


def toy_quality(scenario) -> dict:
    """A closed-form stand-in with the quality model's interface: each async layer costs 0.1 FD."""
    n_async = (4 - len(scenario.strategy.sync_layer_set(4))) * (scenario.strategy.scheme != "sync")
    return {"pred_fd_change": 0.1 * n_async, "pred_deviation": 0.01 * n_async, "quality_basis": "toy"}


def test_quality_limit_excludes_exactly_the_candidates_over_it():
    rec = search(SCENARIO, SPACE, make_limits(max_fd_change=0.15), quality=toy_quality)
    ok = rec.ranked
    assert len(ok) and (ok["pred_fd_change"] <= 0.15).all()
    over = rec.table[rec.table["reason"].str.startswith("predicted FD change")]
    assert len(over) and (over["pred_fd_change"] > 0.15).all()
    assert rec.best["strategy"] != "sync"  # one async layer (deep3) is within the limit and faster


def test_the_builtin_quality_model_fills_the_column_from_the_plan():
    from dicesim.quality_model import quality_columns

    table, _ = screen(SCENARIO, SPACE, make_limits())
    row = table.set_index("strategy").loc["dice"]
    expect = quality_columns(make_scenario(strategy="dice").strategy, 4, SCENARIO.steps,
                             SCENARIO.routing.top1_share)
    assert row["pred_fd_change"] == pytest.approx(expect["pred_fd_change"], rel=1e-12)
    assert table.set_index("strategy").loc["sync", "pred_fd_change"] == 0.0


def test_cli_prints_the_answer_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["recommend", *TINY, "--max-lag", "1", "--max-buffer-gib", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Recommended: interweaved" in text and "Pareto front" in text and "Why the others are out" in text
    table = pd.read_parquet(out / "candidates.parquet")
    assert {"recommended", "over limit"} <= set(table["status"])
    assert "Pareto front" in (out / "report.html").read_text(encoding="utf-8")


def test_cli_output_reads_in_a_100_column_terminal(tmp_path, capsys, monkeypatch):
    """Every line fits 100 columns and each ranked candidate is one table row on one line, with
    its reason listed below the table (the wide table wrapped every row into 5 lines)."""
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["recommend", *TINY, "--out", str(tmp_path / "rec")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100
    ranked = pd.read_parquet(tmp_path / "rec" / "candidates.parquet")
    ranked = ranked[ranked["status"].isin(["recommended", "feasible"])].sort_values(
        ["step_latency_s", "weighted_lag_steps", "peak_buffer_bytes"], kind="stable").head(10)
    for rank, name in enumerate(ranked["strategy"], start=1):
        row = [line for line in lines if line.split()[:2] == [str(rank), name]]
        assert len(row) == 1, (rank, name)
        assert len(row[0].split()) == 8  # rank, strategy and six numbers: nothing folded onto a second line
    reasons = lines.index("Why each placed where it did")
    assert [line.split(":")[0].strip() for line in lines[reasons + 1:] if line.startswith("  #")] == \
        [f"#{r}" for r in range(1, len(ranked) + 1)]
    wide = tmp_path / "wide"
    assert main(["recommend", *TINY, "--wide", "--out", str(wide)]) == 0
    assert "reason" in capsys.readouterr().out  # the full table keeps its reason column


@pytest.mark.parametrize("args, needle", [
    (["--cond-intervals", "0"], "search.cond_intervals"),
    (["--max-fd-change", "-1"], "--max-fd-change"),
    (["--schemes", "sync"], "search.schemes"),
    (["--workers", "2", "--scheduler", "tcp://x:1"], "--scheduler"),
])
def test_cli_bad_input_is_one_line_exit_2(args, needle, tmp_path, capsys):
    assert main(["recommend", *TINY, *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_candidates_the_reference_cannot_run_are_screened_out_with_the_step():
    """Interweaved with interval 4 fails in the DICE reference (8 steps: at step 4, layer 0); its
    candidates are reported as such, never simulated nor recommended."""
    space = make_space(schemes=("interweaved",), sync_presets=("none", "deep"), block_sizes=(1,),
                       cond_intervals=(1, 2, 4), cond_policies=("low",), warmups=(1,))
    rec = search(SCENARIO, space, make_limits(), exhaustive=True)
    t = rec.table
    out = t[t["cond_interval"] == 4]
    assert len(out) and (out["status"] == "cannot run").all()
    assert out["reason"].str.contains(r"the DICE reference fails at step \d+ of 8").all()
    assert out["step_latency_s"].isna().all() and rec.best["cond_interval"] != 4
    uly = t["strategy"] == "ulysses"  # an alternative: the tiny model's 2 heads do not split over 4 GPUs
    assert (t.loc[(t["cond_interval"] < 4) & ~uly, "status"] != "cannot run").all()
    assert (t.loc[uly, "status"] == "cannot run").all() and t.loc[uly, "reason"].str.contains("2 heads").all()


def test_search_ends_when_classes_are_each_as_fast_as_the_other():
    """XL/2 over 10 steps has timing classes with equal sets (other cond intervals that the skip-cache
    gate makes send the same copies): each is as fast as the other, and the search once waited for
    both forever. It must resolve every class (the simulator replaced by a constant: order only)."""
    sc = make_scenario(model="XL/2", topology="8x-rtx4090-pcie", world_size=8, batch=8, steps=10)
    table, classes = screen(sc, make_space(), make_limits())
    known = [c for c in classes if c is not None]
    assert any(at_least_as_fast(a, b) and at_least_as_fast(b, a) for i, a in enumerate(known) for b in known[i + 1:])
    rec = search(sc, make_space(), make_limits(), evaluate=lambda s: {"step_latency_s": 1.0})
    screened = rec.table[rec.table["status"] != "cannot run"]
    assert screened["status"].isin(["recommended", "feasible", "pruned"]).all() and rec.best is not None
