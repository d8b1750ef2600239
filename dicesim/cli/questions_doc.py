"""The generated parts of docs/trust.md (four questions a user asks, answered by the commands) and of
docs/exploration.md (the default study's time and what sync waits for).

Each answer is the command's own ``--json`` output rendered as text, so a rerun of
``python tools/write_docs.py questions`` (or ``exploration``) updates every number; the pages'
prose outside the marked sections is hand-written and never quotes a figure.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

from dicesim.report.marked import markers, replace_section

_WRITER_Q = "python tools/write_docs.py questions"
_WRITER_X = "python tools/write_docs.py exploration"


def _run(argv: list[str]) -> dict:
    """Run ``dicesim ARGV --json`` in this process; its one JSON object."""
    from dicesim.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise RuntimeError(f"dicesim {' '.join(argv)} exited {code}")
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def _answer(cmd: str, doc: dict) -> str:
    """A compare answer: the command, the verdict, the band, the assumptions, the facts, what-if, sensitivity."""
    rows = doc["strategies"]
    band = next((r["error_band"] for r in rows if r["strategy"] == doc.get("fastest")), None)
    lines = [f"```sh\n{cmd}\n```", "", f"- **Verdict.** {doc['verdict']}"]
    if band:
        lines.append(f"- **Band.** {band['statement']}.")
    crit = [a for a in doc["assumptions"] if a["on_bottleneck"]]
    if crit:
        lines.append("- **Assumptions on the critical path.** " + "; ".join(
            f"{a['parameter']} {a['value']} ({a['status']}, `{a['source'].split(' (')[0]}`)" for a in crit) + ".")
    lines.append("- **What the run does.** " + " ".join(doc["run_facts"]))
    if doc.get("what_if"):
        lines.append(f"- **What-if.** {doc['what_if']}")
    if doc.get("sensitivity"):
        lines.append(f"- **Sensitivity.** {doc['sensitivity']['verdict']}")
    table = ["", "| strategy | step latency (ms) | band (ms) | speedup over sync (x) |", "|---|---|---|---|"]
    for r in rows:
        b = r["error_band"]
        table.append(f"| {r['strategy']} | {r['step_latency_s'] * 1e3:.1f} | "
                     + (f"{b['low_s'] * 1e3:.1f}-{b['high_s'] * 1e3:.1f}" if b and b["covers"] != "none" else "-")
                     + f" | {r['speedup']:.2f} |")
    return "\n".join(lines + table)


def questions_markdown(workdir: Path) -> str:
    """The four questions of issue 20, each answered by the commands (runs the simulations)."""
    from dicesim.cli import main
    from dicesim.result_files import load_results

    box = workdir / "my-box.toml"
    with contextlib.redirect_stdout(io.StringIO()):
        main(["topology", "derive", "8x-rtx4090-pcie", "--gpu", "l40s", "--p2p", "--name", "my-box", "--out", str(box)])
    out = ["--out", str(workdir / "out"), "--traces", "none", "--json"]
    q1 = "dicesim compare --topology my-box.toml --image-size 512 --batch 16 --sensitivity"
    d1 = _run(["compare", "--topology", str(box), "--image-size", "512", "--batch", "16", "--sensitivity", *out])
    q2 = q1 + " --num-experts 16"
    d2 = _run(["compare", "--topology", str(box), "--image-size", "512", "--batch", "16", "--sensitivity",
               "--num-experts", "16", *out])
    q3 = "dicesim compare --topology 4x-hgx-h100-roce --world-size 32 --sensitivity"
    d3 = _run(["compare", "--topology", "4x-hgx-h100-roce", "--world-size", "32", "--sensitivity", *out])
    q3s = q3 + " --placement strided"
    d3s = _run(["compare", "--topology", "4x-hgx-h100-roce", "--world-size", "32", "--sensitivity", "--placement",
                "strided", *out])
    side = Path("traces/side-by-side")
    sim = _run(["simulate", "--model", "small", "--world-size", "2", "--batch", "2", "--image-size", "64", "--steps",
                "8", "--strategy", "dice", "--dtype", "fp32", "--profile", str(side / "cpu-gloo-w2.toml"),
                "--topology", str(side / "cpu-gloo-w2.topology-w2.toml"), "--json"])
    measured = load_results(side / "executor-small-w2-b2-dice.trace.json")[0]
    h100 = _run(["simulate", "--model", "XL/2", "--topology", "dgx-h100", "--batch", "8", "--strategy", "sync",
                 "--profile", "h100-calibrated", "--json"])
    band = sim["error_band"]
    # the CPU level measured steady steps (1..T-1; the executor's step 0 carries first-call allocations)
    steady = sim["steady_step_latency_s"]
    lo, hi = steady * band["low_s"] / sim["step_latency_s"], steady * band["high_s"] / sim["step_latency_s"]
    inside = lo <= measured.steady_step_latency_s <= hi
    q4 = [
        "```sh\ndicesim simulate --model small --world-size 2 --batch 2 --image-size 64 --steps 8 --strategy dice \\\n"
        "    --dtype fp32 --profile traces/side-by-side/cpu-gloo-w2.toml \\\n"
        "    --topology traces/side-by-side/cpu-gloo-w2.topology-w2.toml --json > sim.json\n"
        "dicesim results table traces/side-by-side/executor-small-w2-b2-dice.trace.json sim.json\n```", "",
        f"- Predicted {steady * 1e3:.2f} ms per step after step 0, band {lo * 1e3:.2f}-{hi * 1e3:.2f} ms "
        f"({band['statement']}); measured on the executor {measured.steady_step_latency_s * 1e3:.2f} ms "
        f"({measured.steady_step_latency_s / steady - 1:+.1%}): {'inside' if inside else 'outside'} the band. "
        "(This profile was fitted on traces that include this batch size; the band's figures are held out.)",
        f"- On a GPU machine with a measured profile (`--profile h100-calibrated`, `dgx-h100`, XL/2, batch 8, "
        f"sync): {h100['step_latency_s'] * 1e3:.1f} ms; {h100['error_band']['statement']}.",
    ]
    begin, end = markers("questions", _WRITER_Q)
    return "\n\n".join([
        begin,
        "### 1. Which strategy for XL/2 at 512 px, batch 16, on 8x L40S (PCIe Gen4, two switches, two sockets, P2P)?",
        "```sh\ndicesim topology derive 8x-rtx4090-pcie --gpu l40s --p2p --name my-box\n```", _answer(q1, d1),
        "### 2. What if XL/2 had 16 experts?", _answer(q2, d2),
        "### 3. Four nodes of 8x H100 over RoCE: is DICE still worth it?", _answer(q3, d3),
        "With the groups spread over the servers instead:", _answer(q3s, d3s),
        "### 4. Can I check it against my own measurements?", "\n".join(q4),
        end,
    ]) + "\n"


def write_questions(page: Path) -> Path:
    """Rewrite the ``questions`` section of ``page`` (docs/trust.md)."""
    with tempfile.TemporaryDirectory() as tmp:
        return replace_section("questions", questions_markdown(Path(tmp)), page)


def exploration_markdown(workdir: Path) -> str:
    """The default study run once: its wall and CPU time, and its generated summary."""
    from dicesim.cli import main

    out = workdir / "study"
    t0, c0 = time.perf_counter(), os.times()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["study", "--out", str(out), "--workers", "2"])
    wall_s, c1 = time.perf_counter() - t0, os.times()
    if code != 0:
        raise RuntimeError(f"dicesim study exited {code}")
    cpu_s = (c1.user - c0.user) + (c1.children_user - c0.children_user)
    summary = (out / "summary.txt").read_text(encoding="utf-8").strip()
    n = sum(1 for _ in open(out / "study.csv", encoding="utf-8")) - 1
    load = os.getloadavg()[0]
    begin, end = markers("study-default", _WRITER_X)
    return (f"{begin}\n\nThe default study, run by `dicesim study --workers 2` ({n} simulations): "
            f"{wall_s:.0f} s wall, {cpu_s:.0f} s of user CPU in this process and its reaped workers, on a 2-core "
            f"machine with a load average of {load:.1f} when it finished (other work on the machine inflates the wall "
            f"time). Its generated summary (`summary.txt`), verbatim:\n\n"
            + "\n\n".join(f"> {p}" for p in summary.split("\n\n")) + f"\n\n{end}\n")


def write_exploration(page: Path) -> Path:
    """Rewrite the ``study-default`` section of ``page`` (docs/exploration.md)."""
    with tempfile.TemporaryDirectory() as tmp:
        return replace_section("study-default", exploration_markdown(Path(tmp)), page)
