"""Write tests/data/step_predictions.csv: every step-level figure's prediction as the simulator makes it now.

Run from the repository root after a change that is meant to move the step-level predictions:
``python tests/data/extract_step_predictions.py``; tests/test_step_level.py recomputes every row
from the committed set and compares it exactly, so an unintended move is seen.
"""

from __future__ import annotations

from pathlib import Path

from dicesim.atomic import write_atomic
from dicesim.calibrate.published.step_level import step_level_rows

OUT = Path(__file__).with_name("step_predictions.csv")
COLUMNS = ["id", "split", "machine", "profile", "predicted", "predicted_no_interference"]


def main() -> None:
    rows = step_level_rows()
    assert rows is not None, "run from the repository root (traces/published/steps/)"
    text = rows[COLUMNS].to_csv(index=False, float_format="%.17g")
    write_atomic(OUT, lambda tmp: tmp.write_text(text))
    print(f"wrote {OUT} ({len(rows)} figures)")


if __name__ == "__main__":
    main()
