"""Open dicesim HTML reports in a real headless browser: do the plots render, does the page fetch anything?

Usage::

    python benchmarks/browser_check.py out/study/report.html [out/recommend/report.html ...]
    python benchmarks/browser_check.py --fragment 'topology=dgx-h100' out/sweep/report.html

Each report is loaded from disk in headless Chromium with a fresh profile, every host
name resolving to nothing, and Chromium's network log on. After the page's scripts have run
(virtual time), the rendered DOM is read back. A report passes when

- it has at least one plotly figure and every figure drew its SVG (``.main-svg``);
- every interactive explorer filled in its status (``data-shown``);
- the page itself requested nothing over the network (the network log has no request
  whose initiator is the page; Chromium's own background requests are told apart by their
  initiator and ignored).

Exit code 0 when every report passes, 1 otherwise; 2 when Chromium is not installed
(``apt-get install chromium``). tests/test_report_browser.py runs the same check and skips
without Chromium, so CI does not need it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-default-apps",
         "--no-default-browser-check", '--host-resolver-rules=MAP * ~NOTFOUND')
_LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-extension:")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What the browser saw after loading one report."""

    path: Path
    plots: int  # plotly figure containers
    drawn: int  # of those, how many drew their SVG
    points: int  # scatter markers drawn
    explorers: list[dict[str, str]] = field(default_factory=list)  # data-shown / data-front per explorer
    page_requests: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.plots > 0 and self.drawn == self.plots and not self.page_requests
                and all(e["shown"] != "" for e in self.explorers))

    def line(self) -> str:
        ex = ", ".join(f"explorer {e['id']}: {e['shown']} shown, {e['front']} on the front" for e in self.explorers)
        net = "no network requests" if not self.page_requests else f"NETWORK: {', '.join(self.page_requests)}"
        return (f"{'ok  ' if self.ok else 'FAIL'} {self.path}: {self.drawn}/{self.plots} plots drawn, "
                f"{self.points} markers; {ex + '; ' if ex else ''}{net}")


def page_requests(netlog: Path) -> list[str]:
    """URLs the page (not the browser itself) asked for, from a Chromium ``--log-net-log`` file."""
    text = netlog.read_text(encoding="utf-8", errors="replace").rstrip()
    if not text.endswith("}"):  # the log is left open when the browser is killed; close it
        text = text.rstrip(",\n") + "]}"
    doc = json.loads(text)
    kinds = {v: k for k, v in doc["constants"]["logEventTypes"].items()}
    urls = []
    for ev in doc.get("events", []):
        params = ev.get("params") or {}
        if kinds.get(ev["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        if params.get("initiator") == "not an origin":  # the browser's own update/sign-in traffic
            continue
        if not str(params["url"]).startswith(_LOCAL_SCHEMES):
            urls.append(str(params["url"]))
    return urls


def check_page(path: str | Path, *, fragment: str = "", chromium: str | None = None,
               budget_ms: int = 20000, timeout_s: float = 120.0) -> PageCheck:
    """Load ``path`` (with ``#fragment``) in headless Chromium and report what rendered."""
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed")
    page = Path(path).resolve()
    url = page.as_uri() + (f"#{fragment}" if fragment else "")
    with tempfile.TemporaryDirectory(prefix="dicesim-browser-") as tmp:
        netlog = Path(tmp) / "net.json"
        cmd = [exe, *FLAGS, f"--user-data-dir={tmp}/profile", f"--log-net-log={netlog}",
               f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not proc.stdout:
            raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        dom = proc.stdout
        requests = page_requests(netlog) if netlog.exists() else []
    plots = len(re.findall(r'class="plot-container plotly"', dom))
    drawn = len(re.findall(r'<svg class="main-svg"[^>]*>.*?</svg>', dom, flags=re.S)) // 2  # two SVG layers each
    points = len(re.findall(r'class="point"', dom))
    explorers = [{"id": m.group(1), "shown": m.group(2), "front": m.group(3)}
                 for m in re.finditer(r'<div class="controls" id="([^"]+)" data-shown="([^"]*)" data-front="([^"]*)"',
                                      dom)]
    return PageCheck(path=page, plots=plots, drawn=min(drawn, plots), points=points, explorers=explorers,
                     page_requests=requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--fragment", default="", help="URL fragment, e.g. 'topology=dgx-h100' for an explorer")
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    ok = True
    for report in args.reports:
        check = check_page(report, fragment=args.fragment)
        print(check.line())
        ok = ok and check.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
