"""HTML reports: one self-contained file, plotly.js embedded once, written atomically."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from dicesim.report import Section, render_report, write_report

# A marker of the embedded plotly.js bundle (its licence banner); present once per copy.
_PLOTLY_JS_MARK = "plotly.js v"


def _fig(title: str) -> go.Figure:
    return go.Figure(go.Bar(x=["a"], y=[1]), layout=dict(title=title))


class _BrokenFigure(go.Figure):
    def to_html(self, *args, **kwargs):  # noqa: D401 - test double
        raise RuntimeError("figure failed to render")


def test_report_embeds_plotly_once_and_keeps_every_item(tmp_path):
    table = pd.DataFrame({"strategy": ["sync", "dice"], "step_latency_s": [1.2, 0.9]})
    sections = [Section(title="First", items=(_fig("fig one"), table, "a <note> & more")),
                Section(title="Second", items=(_fig("fig two"), _fig("fig three")))]
    path = write_report(sections, tmp_path / "report.html", title="My report")
    text = path.read_text(encoding="utf-8")
    assert text.count(_PLOTLY_JS_MARK) == 1
    assert text.count('class="plotly-graph-div"') == 3
    for title in ("fig one", "fig two", "fig three"):
        assert title in text
    assert "step latency (ms)" in text and "1200.00" in text  # table headers carry units, values scaled
    assert "a &lt;note&gt; &amp; more" in text  # text is escaped
    assert "<h2>Second</h2>" in text and "<title>My report</title>" in text
    assert '<script src="https://cdn' not in text  # self-contained: no network fetch


def test_report_without_figures_has_no_plotly():
    text = render_report([Section(title="Only text", items=("hello",))])
    assert _PLOTLY_JS_MARK not in text


def test_failing_figure_leaves_no_file(tmp_path):
    path = tmp_path / "report.html"
    with pytest.raises(RuntimeError, match="failed to render"):
        write_report([Section(title="x", items=(_fig("ok"), _BrokenFigure()))], path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind either


def test_failing_figure_keeps_previous_report_intact(tmp_path):
    path = tmp_path / "report.html"
    write_report([Section(title="old", items=("old report",))], path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        write_report([Section(title="new", items=(_BrokenFigure(),))], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_unknown_item_type_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="Figure, a DataFrame or a str"):
        write_report([Section(title="x", items=(42,))], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
