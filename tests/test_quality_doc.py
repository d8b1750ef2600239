"""The quality page's number formatting and orderings (validate/quality/doc.py)."""

from __future__ import annotations

import pandas as pd

from validate.quality.doc import _ordering, _pm, _separable


def _summary(rows):
    return pd.DataFrame(rows, columns=["strategy", "fd_change_mean", "fd_change_std"])


def test_float_rounding_of_an_exact_zero_prints_as_zero():
    assert _pm(-4.4e-7, 9.6e-7) == "0.000 ± 0.000"
    assert _pm(-0.0012, 0.0004) == "-0.001 ± 0.000"


def test_ties_at_the_printed_precision_keep_the_table_order_and_are_not_resolved():
    s = _summary([("sync", 0.0, 0.0), ("sp", 0.0, 0.0), ("ulysses", 0.0, 0.0), ("ring", -4e-7, 1e-6),
                  ("dice", 0.659, 0.225), ("displaced", 2.187, 0.412)])
    assert _ordering(s, "fd_change", 3).split(" < ")[:3] == ["sp (0.000 ± 0.000)", "ulysses (0.000 ± 0.000)",
                                                              "ring (0.000 ± 0.000)"]
    text = _separable(s, "fd_change", 3)
    assert "sp / ulysses" in text and "ulysses / ring" in text
    assert "ring / dice" not in text and "dice / displaced" not in text  # 1.53 apart, spreads 0.41
