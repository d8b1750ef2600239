"""Reports in a real headless browser: plots render, filters work, nothing is fetched.

Skipped where Chromium is not installed (CI does not need it); ``apt-get install chromium``
to run them. The checker is benchmarks/browser_check.py, which also works on any report.
"""

from __future__ import annotations

import pytest

from dicesim.cli import main
from script_module import load_script

browser = load_script("benchmarks/browser_check.py", register=True)  # dataclasses look their module up by name

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(browser.find_chromium() is None, reason="chromium is not installed")]


def test_study_report_renders_offline_and_its_filters_work(tmp_path):
    out = tmp_path / "study"
    assert main(["study", "--models", "tiny", "--topologies", "dgx-h100,8x-rtx4090-pcie", "--world-sizes", "4",
                 "--batches", "2,8", "--steps", "4", "--out", str(out), "--workers", "0"]) == 0
    page = browser.check_page(out / "report.html")
    assert page.ok, page.line()
    assert page.plots >= 6 and page.page_requests == []
    [whole] = page.explorers
    assert whole["shown"] == "20"
    one = browser.check_page(out / "report.html", fragment="topology=dgx-h100&batch=8")
    assert one.ok and one.explorers[0]["shown"] == "5"  # 5 strategies on one setting
    assert 1 <= int(one.explorers[0]["front"]) <= 5


def test_recommend_report_renders_offline(tmp_path):
    rec = tmp_path / "rec"
    assert main(["recommend", "--model", "tiny", "--topology", "8x-rtx4090-pcie", "--world-size", "4", "--batch", "8",
                 "--steps", "8", "--workers", "0", "--schemes", "interweaved", "--cond-intervals", "1,2",
                 "--warmups", "1", "--block-sizes", "1", "--max-lag", "2", "--out", str(rec)]) == 0
    page = browser.check_page(rec / "report.html")
    assert page.ok, page.line()
    assert page.plots == 2 and len(page.explorers) == 1


def test_a_page_that_fetches_is_caught(tmp_path):
    # the negative control: the same check on a page that loads plotly.js from a CDN fails
    path = tmp_path / "cdn.html"
    path.write_text('<html><body><script src="https://cdn.example.org/plotly.min.js"></script>'
                    '<div class="plot-container plotly"></div></body></html>')
    page = browser.check_page(path)
    assert not page.ok and page.page_requests == ["https://cdn.example.org/plotly.min.js"] and page.drawn == 0
