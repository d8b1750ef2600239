"""One self-contained HTML report: sections of text, tables and plotly figures.

The whole page is rendered to a string first and only then written (temp file beside the
target + ``os.replace``), so a figure or table that fails to render leaves no partial
report behind, and an old report stays intact. plotly.js is embedded once, with the first
figure; later figures reuse it, so the file opens offline.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import pandas as pd
import plotly.graph_objects as go

from dicesim.atomic import write_text_atomic
from dicesim.report.units import display_frame



@dataclass(frozen=True, kw_only=True)
class Interactive:
    """A plotly figure with controls above it and a script run once it is drawn.

    ``controls_html`` is trusted markup built by dicesim (values already escaped);
    ``script`` is JavaScript in which ``{plot_id}`` names the figure's element.
    """

    figure: go.Figure
    controls_html: str
    script: str


Item = Union[go.Figure, Interactive, pd.DataFrame, str]

_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table.dicesim { border-collapse: collapse; font-size: .9em; margin: .5em 0 1.5em; }
table.dicesim th, table.dicesim td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
table.dicesim th { background: #f4f4f4; }
table.dicesim td:first-child, table.dicesim th:first-child { text-align: left; }
p.note { color: #555; }
div.controls { display: flex; flex-wrap: wrap; gap: .4em 1.2em; align-items: center; margin: .5em 0; }
div.controls label { font-size: .9em; } div.controls .status { color: #555; font-size: .9em; }
"""


@dataclass(frozen=True, kw_only=True)
class Section:
    """A heading followed by items in order: figures, tables (units added) or paragraphs."""

    title: str
    items: Sequence[Item] = field(default_factory=tuple)


def _render_item(item: Item, *, embed_js: bool | str) -> tuple[str, bool]:
    """HTML of one item, and whether it consumed the one plotly.js embedding."""
    if isinstance(item, go.Figure):
        return item.to_html(full_html=False, include_plotlyjs=embed_js, config={"displaylogo": False}), True
    if isinstance(item, Interactive):
        fig = item.figure.to_html(full_html=False, include_plotlyjs=embed_js, config={"displaylogo": False},
                                  post_script=item.script)
        return item.controls_html + fig, True
    if isinstance(item, pd.DataFrame):
        shown = display_frame(item)
        return shown.to_html(index=False, classes="dicesim", border=0, escape=True), False
    if isinstance(item, str):
        return f'<p class="note">{html.escape(item)}</p>', False
    raise TypeError(f"report item must be a plotly Figure, a DataFrame or a str (or an Interactive), "
                    f"got {type(item).__name__}")


def render_report(sections: Iterable[Section], *, title: str = "dicesim report", plotlyjs: str = "embed") -> str:
    """The complete HTML page as a string.

    ``plotlyjs="embed"`` puts plotly.js (~4.5 MB) into the page once, with the first figure, so
    it opens offline; ``"cdn"`` links it instead (small pages for documentation in the repo).
    """
    body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    js_pending = True
    for sec in sections:
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        for item in sec.items:
            text, used_js = _render_item(item, embed_js=(True if plotlyjs == "embed" else "cdn") if js_pending else False)
            js_pending = js_pending and not used_js
            body.append(text)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(sections: Iterable[Section], path: str | Path, *, title: str = "dicesim report") -> Path:
    """Render ``sections`` and write one self-contained HTML file atomically; returns the path.

    Any error while rendering (a figure, a table) propagates before the file is touched.
    """
    return write_text_atomic(render_report(list(sections), title=title), path)
