"""Write the generated parts of docs/: every number the code can produce comes from here or from the
command that measures it, so a rerun updates the page.

    python tools/write_docs.py scenario      # docs/scenario.md from the typed scenario model
    python tools/write_docs.py questions     # docs/trust.md's worked questions (simulations, ~1 min)
    python tools/write_docs.py exploration   # docs/exploration.md's study time and communication share
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def scenario() -> Path:
    from dicesim.atomic import write_text_atomic
    from dicesim.cli.scenario_doc import scenario_markdown
    from dicesim.cli.simulate_cmd import compare, simulate

    return write_text_atomic(scenario_markdown(simulate, compare), ROOT / "docs" / "scenario.md")


def questions() -> Path:
    from dicesim.cli.questions_doc import write_questions

    return write_questions(ROOT / "docs" / "trust.md")


def exploration() -> Path:
    from dicesim.cli.questions_doc import write_exploration

    return write_exploration(ROOT / "docs" / "exploration.md")


if __name__ == "__main__":
    jobs = {"scenario": scenario, "questions": questions, "exploration": exploration}
    names = sys.argv[1:] or list(jobs)
    unknown = [n for n in names if n not in jobs]
    if unknown:
        sys.exit(f"unknown part {unknown[0]!r} (allowed: {', '.join(jobs)})")
    for n in names:
        print(f"wrote {jobs[n]()}")
