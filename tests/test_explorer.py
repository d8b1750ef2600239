"""The interactive explorer: the data it embeds, its filters, its safety inside a page."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from dicesim.report.explorer import explorer, filter_columns
from dicesim.report.html import Section, render_report

TABLE = pd.DataFrame({
    "strategy": ["sync", "dice", "displaced", "sync", "dice", "displaced"],
    "topology": ["a", "a", "a", "b", "b", "b"], "batch": [8] * 6, "key": list("uvwxyz"),
    "step_latency_s": [1.0, 0.8, 0.6, 2.0, 1.5, 1.1], "weighted_lag_steps": [0, 0.6, 1.9, 0, 0.6, 1.9],
    "peak_buffer_bytes": [0, 2**30, 3 * 2**30] * 2, "speedup": [1.0, 1.25, 1.67, 1.0, 1.33, 1.82],
})


def _payload(item) -> dict:
    m = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', item.controls_html, flags=re.S)
    return json.loads(m.group(1))


def test_filters_are_descriptors_with_more_than_one_value():
    assert filter_columns(TABLE) == ["strategy", "topology"]  # batch has one value; key and metrics are not axes


def test_embedded_data_units_and_senses():
    item = explorer(TABLE)
    data = _payload(item)
    assert data["filters"] == ["strategy", "topology"] and len(data["rows"]) == 6
    assert data["metrics"]["step_latency_s"]["scale"] == 1e3 and data["metrics"]["step_latency_s"]["sense"] == 1
    assert data["metrics"]["speedup"]["sense"] == -1  # more is better
    assert data["rows"][1]["__label"] == "strategy=dice · topology=a"
    for role in ("strategy", "topology", "x", "y", "color"):
        assert f'data-role="{role}"' in item.controls_html
    assert "{plot_id}" in item.script


def test_text_cannot_break_out_of_the_page():
    evil = TABLE.assign(strategy=["</script><script>alert(1)</script>"] * 6)
    item = explorer(evil, filters=["strategy", "topology"])
    assert "</script><script>" not in item.controls_html.split('id="explorer-data">', 1)[1].split("</script>", 1)[0]
    page = render_report([Section(title="x", items=(item,))], title="t")
    assert page.count("<script>alert(1)") == 0


def test_unknown_axis_metric_is_an_error():
    with pytest.raises(ValueError, match="not in the table"):
        explorer(TABLE, x="mean_lag_steps")
