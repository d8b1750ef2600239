"""Figures: the right traces, values converted to the units their axes claim, Pareto fronts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicesim.report import (
    display_frame,
    fig_lag_heatmap,
    fig_latency_bars,
    fig_link_utilisation,
    fig_pareto,
    fig_timeline,
    pareto_mask,
    unit_for,
)
from dicesim.trace import EventRecorder

SUMMARY = pd.DataFrame({
    "strategy": ["sync", "displaced", "dice"],
    "step_latency_s": [1.2, 0.8, 0.9],
    "exposed_comm_step_s": [0.6, 0.05, 0.2],
    "speedup": [1.0, 1.5, 1.2 / 0.9],
})


def test_latency_bars_stack_exposed_comm_in_ms():
    fig = fig_latency_bars(SUMMARY)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == ["compute + hidden comm", "exposed comm"]
    assert fig.layout.barmode == "stack"
    assert fig.layout.yaxis.title.text == "step latency (ms)"
    np.testing.assert_allclose(np.add(bars[0].y, bars[1].y), [1200.0, 800.0, 900.0])
    np.testing.assert_allclose(bars[1].y, [600.0, 50.0, 200.0])
    assert list(bars[0].x) == ["sync", "displaced", "dice"]
    texts = [t for t in fig.data if t.type == "scatter"][0].text
    assert list(texts) == ["1.00x", "1.50x", "1.33x"]


def test_latency_bars_without_exposed_column_has_one_bar():
    fig = fig_latency_bars(SUMMARY[["strategy", "step_latency_s"]])
    assert [t.type for t in fig.data] == ["bar"]
    np.testing.assert_allclose(fig.data[0].y, [1200.0, 800.0, 900.0])


def test_missing_column_is_a_clear_error():
    with pytest.raises(ValueError, match="step_latency_s"):
        fig_latency_bars(SUMMARY[["strategy"]])


def _events() -> pd.DataFrame:
    rec = EventRecorder("sim")
    rec.add(0, "compute", "compute", "attention", 1000.0, 3000.0, layer=0, step=2, tok_step=2)
    rec.add(0, "comm", "collective", "dispatch", 2000.0, 6000.0, layer=0, step=2, tok_step=2, nbytes=4096)
    rec.add(1, "compute", "compute", "attention", 1000.0, 2500.0, layer=0, step=2, tok_step=2)
    rec.add(1, "compute", "wait", "wait_combine", 2500.0, 4000.0, layer=0, step=2, tok_step=1)
    rec.add(0, "compute", "compute", "attention", 9000.0, 9500.0, layer=0, step=3, tok_step=3)
    rec.add(-1, "link0", "link", "busy", 2000.0, 5000.0, nbytes=4096)
    return rec.to_frame()


def test_timeline_bars_per_kind_start_and_duration_in_ms():
    fig = fig_timeline(_events(), steps=[2])
    by_kind = {t.name: t for t in fig.data}
    assert set(by_kind) == {"compute", "collective", "wait"}  # link rows left out by default
    comp = by_kind["compute"]
    assert comp.orientation == "h"
    np.testing.assert_allclose(np.asarray(comp.base, float), [0.0, 0.0])  # ms since the first shown event (1000 us)
    np.testing.assert_allclose(comp.x, [2.0, 1.5])
    np.testing.assert_allclose(np.asarray(by_kind["collective"].base, float), [1.0])
    np.testing.assert_allclose(by_kind["collective"].x, [4.0])
    assert fig.layout.xaxis.title.text.endswith("(ms)")
    # rank 0 on top: compute before comm; the category array is bottom-to-top
    assert list(fig.layout.yaxis.categoryarray)[::-1] == ["rank 0 · compute", "rank 0 · comm", "rank 1 · compute"]


def test_timeline_filters_ranks_and_steps_and_can_show_links():
    fig = fig_timeline(_events(), ranks=[1])
    assert {y for t in fig.data for y in t.y} == {"rank 1 · compute"}
    fig = fig_timeline(_events(), steps=[3])
    assert sum(len(t.x) for t in fig.data) == 1
    fig = fig_timeline(_events(), include_links=True)
    assert "link" in {t.name for t in fig.data}


def test_lag_heatmap_grid_is_layer_by_step():
    lags = pd.DataFrame({"step": [0, 0, 1, 1, 2, 2], "layer": [0, 1, 0, 1, 0, 1],
                         "weighted_lag": [0.0, 0.0, 1.0, 0.0, 1.5, 0.0]})
    fig = fig_lag_heatmap(lags, value="weighted_lag")
    hm = fig.data[0]
    assert hm.type == "heatmap"
    assert list(hm.x) == [0, 1, 2] and list(hm.y) == [0, 1]
    np.testing.assert_allclose(hm.z, [[0.0, 1.0, 1.5], [0.0, 0.0, 0.0]])
    assert hm.colorbar.title.text == "weighted lag (steps)"
    assert fig.layout.xaxis.title.text == "denoising step" and fig.layout.yaxis.title.text == "MoE layer"


def test_link_utilisation_in_percent_busiest_first_grouped():
    links = pd.DataFrame({"link": ["a", "b", "c", "a", "b", "c"], "utilisation": [0.1, 0.5, 0.3, 0.2, 0.4, 0.9],
                          "strategy": ["sync"] * 3 + ["dice"] * 3, "nbytes": [2**20] * 6})
    fig = fig_link_utilisation(links, color="strategy", top=2)
    assert [t.name for t in fig.data] == ["sync", "dice"]
    assert list(fig.layout.xaxis.categoryarray) == ["c", "b"]  # peak 0.9, then 0.5; "a" cut by top=2
    np.testing.assert_allclose(fig.data[1].y, [40.0, 90.0])
    assert fig.layout.yaxis.title.text == "utilisation of capacity (%)"
    assert fig.layout.barmode == "group"


def test_pareto_figure_front_and_units():
    df = pd.DataFrame({"strategy": ["sync", "displaced", "interweaved", "dice", "bad"],
                       "weighted_lag_steps": [0.0, 1.9, 1.0, 0.6, 2.0],
                       "step_latency_s": [1.3, 0.80, 0.81, 1.0, 1.4]})
    fig = fig_pareto(df)
    front = [t for t in fig.data if t.name == "Pareto front"][0]
    np.testing.assert_allclose(front.x, [0.0, 0.6, 1.0, 1.9])
    np.testing.assert_allclose(front.y, [1300.0, 1000.0, 810.0, 800.0])
    assert fig.layout.xaxis.title.text == "weighted lag (steps)"
    assert fig.layout.yaxis.title.text == "step latency (ms)"
    assert len([t for t in fig.data if t.mode == "markers"]) == 5  # one colour per strategy


def _brute_front(xs, ys):
    n = len(xs)
    return np.array([not any(xs[j] <= xs[i] and ys[j] <= ys[i] and (xs[j] < xs[i] or ys[j] < ys[i])
                             for j in range(n)) for i in range(n)], dtype=bool)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=0, max_size=25))
def test_pareto_mask_matches_brute_force(points):
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    df = pd.DataFrame({"x": xs, "y": ys})
    np.testing.assert_array_equal(pareto_mask(df, "x", "y"), _brute_front(xs, ys))


def test_pareto_mask_ignores_missing_values():
    df = pd.DataFrame({"x": [np.nan, 1.0, 2.0], "y": [0.0, 1.0, 0.5]})
    assert list(pareto_mask(df, "x", "y")) == [False, True, True]


def test_units_and_display_frame():
    assert unit_for("step_latency_s").title == "step latency (ms)"
    assert unit_for("peak_buffer_bytes").title == "peak buffer (MiB)"
    assert unit_for("overlap_frac").title == "overlap (%)"
    assert unit_for("mean_bw_Bps").unit == "GB/s"
    assert unit_for("some_new_s").title == "some new (ms)"  # suffix fallback
    shown = display_frame(pd.DataFrame({"strategy": ["dice"], "step_latency_s": [0.01234],
                                        "peak_buffer_bytes": [3 * 2**20], "overlap_frac": [0.4567],
                                        "configurations": [3], "mean_lag": [np.nan]}))
    assert list(shown.columns) == ["strategy", "step latency (ms)", "peak buffer (MiB)", "overlap (%)",
                                   "configurations", "mean lag (steps)"]
    assert shown.iloc[0].tolist() == ["dice", "12.34", "3.0", "45.7", "3", "–"]
