"""Shared check for the exact shortcuts (folding, window reuse): two results are the same run."""

from __future__ import annotations

import numpy as np
import pandas as pd

TABLES = ("per_step", "per_rank", "lags", "token_lags", "buffers", "links")


def assert_same_run(a, b, rtol: float = 1e-9, atol: float = 1e-15) -> None:
    """Every headline number and every table of ``a`` and ``b`` agree (``rtol``); exact shortcuts
    may only differ by float round-off of absolute times."""
    assert a.totals.keys() == b.totals.keys()
    for k, v in a.totals.items():
        assert np.isclose(v, b.totals[k], rtol=rtol, atol=atol), (k, v, b.totals[k])
    for name in TABLES:
        x, y = getattr(a, name), getattr(b, name)
        assert list(x.columns) == list(y.columns) and len(x) == len(y), name
        for col in x.columns:
            if pd.api.types.is_numeric_dtype(x[col]):
                assert np.allclose(x[col].to_numpy(float), y[col].to_numpy(float), rtol=rtol, atol=atol,
                                   equal_nan=True), (name, col)
            else:
                assert (x[col].to_numpy() == y[col].to_numpy()).all(), (name, col)


def sorted_events(ev: pd.DataFrame) -> pd.DataFrame:
    """Events in a canonical row order (folded traces list the copies after the originals)."""
    return ev.sort_values(list(ev.columns), kind="stable").reset_index(drop=True)


def h100_profile(**updates):
    """The H100 datasheet profile with ``updates`` (what the equality tests vary)."""
    from dicesim.sim.costs.profile import get_profile

    return get_profile("h100-sxm").with_updates(**updates)


def reuse_pair(kw: dict):
    """The same run without window reuse and with it (the reference run reuses nothing)."""
    from dicesim.sim.api import simulate

    full = simulate(**kw, reuse=False)
    fast = simulate(**kw)
    assert full.meta["reuse"]["reused_windows"] == 0
    return full, fast


def assert_reuse_skips_work(kw: dict) -> None:
    """Window reuse on ``kw`` (on a profile with interference and host time) equals the full run and
    really skipped work: some windows reused, fewer events."""
    full, fast = reuse_pair(dict(kw, profile=h100_profile(interference=0.2, host_op_s=3e-6)))
    assert_same_run(full, fast)
    info = fast.meta["reuse"]
    assert info["applied"] and 0 < info["reused_windows"] < info["windows"]  # it really skipped work
    assert fast.meta["sim_events"] < full.meta["sim_events"]
