"""Reports: plotly figures from result tables and self-contained HTML pages."""

from dicesim.report.figures import (
    fig_lag_heatmap,
    fig_latency_bars,
    fig_link_utilisation,
    fig_pareto,
    fig_timeline,
    pareto_mask,
)
from dicesim.report.html import Interactive, Section, render_report, write_report, write_text_atomic
from dicesim.report.units import COLUMN_UNITS, Unit, display_frame, unit_for

__all__ = [
    "COLUMN_UNITS", "Interactive", "Section", "Unit", "display_frame", "fig_lag_heatmap", "fig_latency_bars",
    "fig_link_utilisation", "fig_pareto", "fig_timeline", "pareto_mask", "render_report", "unit_for",
    "write_report", "write_text_atomic",
]
