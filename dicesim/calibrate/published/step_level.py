"""The step level of ``dicesim accuracy --published``: the hook for the step-level predictions.

The step-level set (``traces/published/steps/``, schema ``dicesim-published-steps/1``) holds
published end-to-end and per-step latencies of multi-GPU DiT inference. They are checks of the
whole simulator: nothing is ever fitted on them. Their predictions are not built yet (issue 21,
item 1); until they are, :func:`step_level_rows` returns None and every output says
"step level: not yet predicted".

The contract for whoever builds them: return one row per step-level figure with at least the
columns ``id``, ``split`` (``held-out``, or ``excluded`` / ``statement`` for figures that do not
count), ``family`` (interconnect family: ``pcie``, ``nvlink``, ``none``), ``published``,
``predicted``, ``unit``, ``error`` (predicted / published - 1), ``group`` (the run),
``source_unit`` (the independence unit), ``source`` and ``url``. The command then summarises the
held-out rows against :data:`~dicesim.calibrate.published.levels.STEP_TARGET`, prints the line
and writes the section, exactly as for the collective level.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DEFAULT_DIR = Path("traces/published/steps")
NOT_YET = "step level: not yet predicted"


def step_level_rows(paths: list[Path] | None = None) -> pd.DataFrame | None:
    """The step-level rows (see the module docstring), or None while they are not predicted."""
    del paths  # the step-level set is read here once its predictions exist
    return None
