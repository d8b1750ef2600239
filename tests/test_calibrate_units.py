"""Fitting kernels, --fit-on expressions, profile mapping and the out-of-range warning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from calibrate_cases import true_profile
from hypothesis import given, settings
from hypothesis import strategies as st

from dicesim.calibrate.fit_compute import fit_op
from dicesim.calibrate.lsq import robust_nnls, weighted_median
from dicesim.calibrate.profile_fit import (
    fitted_ranges,
    range_warnings,
    warn_outside_range,
)
from dicesim.calibrate.select import compile_selector, split_runs
from dicesim.errors import ConfigError
from dicesim.scenario import Scenario


def test_robust_nnls_ignores_a_few_huge_outliers():
    x = np.linspace(1, 10, 40)
    y = 3.0 + 2.0 * x
    y[[5, 17, 31]] *= 20  # descheduled samples
    X = np.stack([np.ones_like(x), x], 1)
    c = robust_nnls(X, y, relative=False, l1=True)
    assert c == pytest.approx([3.0, 2.0], rel=1e-3)
    assert robust_nnls(X, -y, l1=False).tolist() == [0.0, 0.0]  # never negative


def test_weighted_median():
    assert weighted_median(np.array([1.0, 2.0, 3.0]), np.array([1, 1, 10])) == 3.0
    assert np.isnan(weighted_median(np.array([])))


@settings(max_examples=40, deadline=None)
@given(launch=st.floats(1e-6, 1e-3), a=st.floats(1e-12, 1e-9), b=st.floats(1e-12, 1e-9))
def test_roofline_fit_reproduces_exact_roofline_data(launch, a, b):
    F = np.array([1e5, 3e5, 1e6, 3e6, 1e7, 2e5])
    B = np.array([4e6, 1e5, 2e6, 5e5, 3e6, 9e6])
    t = launch + np.maximum(a * F, b * B)
    means = pd.DataFrame({"kind": "gate", "flops": F, "nbytes": B, "t_s": t, "n": 10})
    fit = fit_op("gate", means)
    assert fit.time_s(F, B, "roofline") == pytest.approx(t, rel=1e-6)
    assert fit.roofline_rel_err_max < 1e-6


def test_selector_grammar():
    f = {"model": "small", "batch": 4, "world_size": 2, "strategy": "dice", "steps": 8, "image_size": 64,
         "backend": "gloo", "device": "cpu", "stem": "x"}
    assert compile_selector("batch in (1, 4)")(f)
    assert compile_selector('world_size == 2 and not strategy == "sync"')(f)
    assert not compile_selector("batch > 4 or world_size != 2")(f)
    assert compile_selector("1 <= batch <= 4")(f)
    for bad in ("open('x')", "batch.real", "colour == 1", "batch in", "lambda: 1"):
        with pytest.raises(ConfigError, match="fit-on"):
            compile_selector(bad)


def test_split_runs_partitions():
    class R:
        def __init__(self, b):
            self.b = b

        def fields(self):
            return {"batch": self.b, "world_size": 2}

    fit, held = split_runs([R(1), R(2), R(4), R(8)], "batch in (1, 4)")
    assert [r.b for r in fit] == [1, 4] and [r.b for r in held] == [2, 8]


def test_out_of_range_warning_is_one_line(capsys):
    prof = true_profile().with_updates(
        name="cal", fitted_range="model=small; world_size=2..4; batch=1..4; image_size=64..64; flops=1e3..1e7")
    assert fitted_ranges(prof)["batch"] == (1.0, 4.0)
    inside = Scenario(model="small", batch=2, world_size=2, image_size=64, dtype="fp32")
    assert range_warnings(prof, inside) == []
    assert not warn_outside_range(prof, inside)
    assert capsys.readouterr().err == ""
    outside = Scenario(model="small", batch=16, world_size=8, image_size=64, dtype="fp32")
    assert warn_outside_range(prof, outside)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch 16" in err and "world_size 8" in err and "FLOPs" in err
    other = Scenario(model="XL/2", batch=2, world_size=2)  # another model: its op sizes are out of range
    assert any("FLOPs" in w for w in range_warnings(prof, other))
    assert range_warnings(true_profile(), outside) == []  # a datasheet profile has no fitted range
