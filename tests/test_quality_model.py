"""The simulator's quality model: reproduces data it can represent exactly, is monotone in
staleness, reports a basis, ranks held-out strategies; and simulate/compare carry it."""

from __future__ import annotations

import numpy as np
import pytest
import tomli_w

from dicesim.quality_model import (
    DEFAULT_TABLE, fit_quality, leave_one_out, load_quality_table, predict_quality, quality_columns, rank_agreement,
    staleness_features,
)
from dicesim.strategy import make_strategy

ROWS = [("sync", "sync", {}), ("displaced", "displaced", {}), ("interweaved", "interweaved", {}),
        ("interweaved-deep", "interweaved-deep", {}), ("interweaved-shallow", "interweaved", {"sync_layers": "shallow"}),
        ("cond-high", "interweaved", {"cond_interval": 2, "cond_policy": "high"}), ("dice", "dice", {})]
COEF = {"fd_change": (3.0, 7.0), "deviation": (0.2, 0.05)}
L, T, SHARE = 6, 20, 0.7


def _synthetic(tmp_path):
    rows = []
    for label, preset, over in ROWS:
        f = staleness_features(make_strategy(preset, **over), L, T, SHARE)
        row = {"label": label, "preset": preset, **({"overrides": over} if over else {})}
        for metric, (a, b) in COEF.items():
            row[f"{metric}_mean"] = float(a * f[0] + b * f[1])
        rows.append(row)
    doc = {"meta": {"model": "synthetic", "num_layers": L, "num_steps": T, "top1_share": SHARE, "seeds": 1},
           "strategy": rows}
    path = tmp_path / "synthetic.toml"
    path.write_text(tomli_w.dumps(doc))
    return load_quality_table(path)


@pytest.mark.parametrize("metric", ["fd_change", "deviation"])
def test_fit_recovers_exact_coefficients_and_reproduces_its_data(tmp_path, metric):
    table = _synthetic(tmp_path)
    fit = fit_quality(table, metric)
    assert fit.coef == pytest.approx(COEF[metric], rel=1e-9)
    loo = leave_one_out(table, metric)
    assert len(loo) == len(ROWS) - 1
    for label, measured, predicted in loo:
        assert predicted == pytest.approx(measured, rel=1e-9, abs=1e-12), label
    rho, pairs = rank_agreement([m for _, m, _ in loo], [p for _, _, p in loo])
    assert rho == pytest.approx(1.0) and pairs == 1.0


def test_features_follow_the_plan():
    # interweaved: every layer's copies are 1 step old except at the synchronous first step
    f = staleness_features(make_strategy("interweaved"), L, T, SHARE)
    assert f == pytest.approx([(T - 1) / T / T] * 2)
    deep = staleness_features(make_strategy("interweaved-deep"), L, T, SHARE)
    assert deep[1] == 0 and deep[0] == pytest.approx(f[0])
    # conditional communication: the policy that keeps the low-score copy leaves more weight stale
    low = staleness_features(make_strategy("interweaved", cond_interval=2, cond_policy="low"), L, T, SHARE)
    high = staleness_features(make_strategy("interweaved", cond_interval=2, cond_policy="high"), L, T, SHARE)
    assert (high > low).all() and (low > f).all()


def test_predictions_are_monotone_in_staleness():
    table = load_quality_table()
    for metric in ("fd_change", "deviation"):
        fit = fit_quality(table, metric)
        assert min(fit.coef) >= 0

        def pred(name, **over):
            return predict_quality(make_strategy(name, **over), 28, 50, metric=metric).value

        assert pred("sync") == 0.0
        assert pred("displaced") >= pred("interweaved") >= pred("interweaved-deep") >= 0
        assert pred("interweaved") >= pred("interweaved", sync_layers="alternate")
        assert pred("interweaved", cond_interval=2, cond_policy="high") >= pred("interweaved", cond_interval=2)
        # the same staleness over more, smaller steps perturbs less
        assert predict_quality("dice", 28, 50, metric=metric).value <= predict_quality("dice", 28, 20,
                                                                                         metric=metric).value


def test_committed_table_and_basis():
    table = load_quality_table(DEFAULT_TABLE)
    labels = {p.label for p in table.points}
    assert {"sync", "displaced", "interweaved", "dice", "interweaved-cond-high"} <= labels
    assert 0.5 <= table.top1_share <= 1.0
    same = predict_quality("dice", table.num_layers, int(table.meta["num_steps"]))
    other = predict_quality("dice", 28, 50)
    assert "digits.toml" in same.basis and "extrapolated" not in same.basis
    assert "extrapolated to 28 layers, 50 steps" in other.basis and other.unit
    cols = quality_columns(make_strategy("dice"), 28, 50)
    assert cols["pred_fd_change"] == pytest.approx(other.value) and "deviation" in cols["quality_basis"]


def test_rank_agreement_by_hand():
    rho, pairs = rank_agreement([1, 2, 3, 4], [1, 3, 2, 4])
    assert rho == pytest.approx(0.8) and pairs == pytest.approx(5 / 6)
    assert rank_agreement([1, 2, 3], [3, 2, 1]) == (pytest.approx(-1.0), 0.0)


def test_simulate_compare_and_sweep_report_the_prediction():
    from dicesim.compare import compare_strategies
    from dicesim.scenario import make_scenario

    sc = make_scenario(model="tiny", world_size=4, batch=1, image_size=64, topology="tiny-ring4", steps=6,
                       profile="h100-sxm")
    cmp = compare_strategies(sc, ["sync", "interweaved", "dice"], record=False)
    t = cmp.table.set_index("strategy")
    assert t.loc["sync", "pred_fd_change"] == 0 and t.loc["interweaved", "pred_fd_change"] > 0
    assert t.loc["interweaved", "pred_deviation"] > t.loc["dice", "pred_deviation"] > 0
    assert "quality_basis" in cmp.runs[0].summary
    assert np.isfinite(t["pred_fd_change"]).all()
    from dicesim.sweep import simulate_metrics

    swept = simulate_metrics(sc.with_strategy(make_strategy("dice")))  # a sweep row's metrics
    assert swept["pred_fd_change"] == pytest.approx(t.loc["dice", "pred_fd_change"])
