"""Numbers in range but not physical (issue 19, class 3): every physical quantity an input sets is
bounded from below and above (``dicesim.limits.PHYSICAL``, the unit in the error), sums cannot
overflow, and every accepted input gives finite results.

The property tests draw link bandwidths and latencies, profile rates and router histograms from
the whole float range (subnormals, 1e-300, 1e308 included) and run the real CLI: each input is
either refused with one line, or simulated to a result whose every number is finite.
"""

from __future__ import annotations

import json
import math
import re
import tomllib

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_cases import ACCEPTANCE, FUZZ_SCALE, PUBLISHED, ROOT, TINY, run_cli, verdict

PROFILE = ROOT / "dicesim" / "data" / "profiles" / "rtx4090.toml"
SIM = ["simulate", *TINY, "--json"]
#: floats across the whole range, with the hostile ones made likely
ANY_FLOAT = st.one_of(
    st.sampled_from([5e-324, 1e-310, 1e-300, 1e-20, 0.0, 1e-9, 1e6, 1e15, 1.0000001e15, 1e16, 1e300, 1e308,
                     1.7976931348623157e308]),
    st.floats(min_value=0.0, max_value=1e308, allow_nan=False, allow_infinity=False, allow_subnormal=True),
    st.floats(min_value=1e5, max_value=1e16),
)


#: one strategy of each family and each exchange: expert all-to-alls (dice), blocking K/V
#: all-gathers (sp), asynchronous flattened K/V all-gathers (distrifusion)
FAMILIES = st.sampled_from(["dice", "sp", "distrifusion"])


def _topology(tmp_path, bw_Bps: float, latency_s: float):
    from dicesim.topology import get_topology, save_toml

    f = tmp_path / "topo.toml"
    save_toml(get_topology("tiny-ring4"), f)
    doc = tomllib.loads(f.read_text())
    doc["links"][0]["bw_Bps"] = bw_Bps
    doc["links"][0]["latency_s"] = latency_s
    f.write_text(tomli_w.dumps(doc))
    return f


def _finite_json(out: str) -> dict:
    doc = json.loads(out)
    bad = [k for k, v in doc.items() if isinstance(v, float) and not math.isfinite(v)]
    assert not bad, f"non-finite {bad} in an accepted run"
    return doc


def _accepted_or_one_line(o) -> None:
    problem = verdict(o)
    assert problem is None, f"{problem}: {o.err or o.crash}"
    if o.code == 0:
        _finite_json(o.out)


# --- the reports ------------------------------------------------------------------
@pytest.mark.parametrize("bw", ["5e-324", "1e-300", "0.5", "1e16"])
def test_implausible_link_bandwidth_is_refused_with_its_range(tmp_path, bw):
    f = _topology(tmp_path, float(bw), 1e-6)
    o = run_cli(["check", str(f)])
    assert verdict(o, expect_error=True) is None, o.err
    assert "bw_Bps=" in o.err and "outside the plausible range (allowed: 1 MB/s to 1 PB/s per direction)" in o.err


@pytest.mark.parametrize("field, value, needle", [
    ("peak_tflops", 1e-300, "peak_tflops: 1e-300 is outside the plausible range (allowed: 1e-06 to 1e+05 TFLOP/s"),
    ("mem_bw_GBps", 5e-324, "mem_bw_GBps: 5e-324 is outside the plausible range"),
    ("interference", 1e308, "interference: 1e+308 is outside the plausible range (allowed: 0 to 100"),
    # the per-GPU memory model's capacity (issue 23): one byte, or 4 EiB, is no GPU
    ("memory_capacity_bytes", 1, "memory_capacity_bytes: 1 is outside the plausible range (allowed: 256 MiB to 4 TiB"),
    ("memory_capacity_bytes", 1 << 62, "memory_capacity_bytes: 4611686018427387904 is outside the plausible range"),
])
def test_implausible_profile_rates_are_refused(tmp_path, field, value, needle):
    prof = tomllib.loads(PROFILE.read_text())
    prof[field] = value
    f = tmp_path / "p.toml"
    f.write_text(tomli_w.dumps(prof))
    o = run_cli([*SIM, "--profile", str(f)])
    assert verdict(o, expect_error=True) is None, o.err
    assert needle in o.err, o.err


def test_an_efficiency_near_zero_is_refused(tmp_path):
    prof = tomllib.loads(PROFILE.read_text())
    prof["ops"]["experts"]["compute_eff"] = 1e-300
    f = tmp_path / "p.toml"
    f.write_text(tomli_w.dumps(prof))
    o = run_cli([*SIM, "--profile", str(f)])
    assert verdict(o, expect_error=True) is None and "ops.experts.compute_eff: 1e-300 is outside" in o.err, o.err


@pytest.mark.parametrize("value", [1e308, 1e16])
def test_a_histogram_whose_sum_overflows_is_refused(tmp_path, value):
    """All entries 1e308 (a uniform load) summed to inf; every probability became 0 and the run
    came out 27% too fast with exit 0."""
    f = tmp_path / "h.npy"
    np.save(f, np.full((4, 4), value))
    o = run_cli([*SIM, "--profile", "rtx4090", "--histogram", str(f)])
    assert verdict(o, expect_error=True) is None, o.err
    assert "routing.histogram: count" in o.err and "(allowed: 0 to 1e+15 tokens per expert)" in o.err


def test_a_histogram_of_large_but_plausible_counts_matches_the_uniform_load(tmp_path):
    f = tmp_path / "h.npy"
    np.save(f, np.full((4, 4), 1e15))
    o = run_cli([*SIM, "--profile", "rtx4090", "--histogram", str(f)])
    uniform = run_cli([*SIM, "--profile", "rtx4090"])
    assert o.code == 0 and uniform.code == 0, o.err
    assert json.loads(o.out)["step_latency_s"] == pytest.approx(json.loads(uniform.out)["step_latency_s"], rel=1e-9)


@pytest.mark.parametrize("value", ["1e308", "1e-300"])
def test_a_published_figure_out_of_range_is_refused(tmp_path, value):
    f = tmp_path / "pub.toml"
    text = PUBLISHED.read_text()
    f.write_text(re.sub(r"^value = [0-9.]+", f"value = {value}", text, count=1, flags=re.M))
    for argv in (["check", str(f)], ["accuracy", "--published", str(f), "--json"]):
        o = run_cli(argv)
        assert verdict(o, expect_error=True) is None, o.err
        assert "value:" in o.err and "outside the plausible range (allowed: 0.001 to 1e+07 GB/s" in o.err, o.err


def test_an_acceptance_figure_of_1e308_is_refused(tmp_path):
    f = tmp_path / "acc.toml"
    f.write_text(ACCEPTANCE.read_text().replace("value = 1.26", "value = 1e308"))
    o = run_cli(["accuracy", "--paper", str(f), "--json"])
    assert verdict(o, expect_error=True) is None, o.err
    assert "value" in o.err and "1000" in o.err


def test_a_non_finite_result_is_refused_not_written():
    from dicesim.limits import NonFiniteResult, check_finite_figures

    check_finite_figures({"step_latency_s": 1e300, "name": "x"}, where="ok")
    with pytest.raises(NonFiniteResult, match="produced nan for exposed_comm_s; no result was written"):
        check_finite_figures({"step_latency_s": 1.0, "exposed_comm_s": float("nan")}, where="run")


# --- property: every accepted input gives finite results ----------------------------------
@settings(max_examples=30 * FUZZ_SCALE, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(bw=st.one_of(st.floats(1e6, 1e15), ANY_FLOAT), latency=st.one_of(st.floats(1e-9, 10.0), ANY_FLOAT),
       strategy=FAMILIES)
def test_every_accepted_topology_gives_finite_results(tmp_path_factory, bw, latency, strategy):
    f = _topology(tmp_path_factory.mktemp("t"), bw, latency)
    _accepted_or_one_line(run_cli(["simulate", *TINY[:2], "--topology", str(f), *TINY[4:], "--profile", "rtx4090",
                                   "--strategy", strategy, "--json"]))


@settings(max_examples=30 * FUZZ_SCALE, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(peak=st.one_of(st.floats(1e-6, 1e5), ANY_FLOAT), mem=st.one_of(st.floats(1e-3, 1e5), ANY_FLOAT),
       eff=st.one_of(st.floats(1e-6, 1.0), ANY_FLOAT), launch=st.one_of(st.floats(0.0, 10.0), ANY_FLOAT),
       interference=st.one_of(st.floats(0.0, 100.0), ANY_FLOAT), strategy=FAMILIES)
def test_every_accepted_profile_gives_finite_results(tmp_path_factory, peak, mem, eff, launch, interference,
                                                     strategy):
    prof = tomllib.loads(PROFILE.read_text())
    prof.update(peak_tflops=peak, mem_bw_GBps=mem, interference=interference)
    prof["ops"]["experts"].update(compute_eff=eff, launch_s=launch)
    f = tmp_path_factory.mktemp("p") / "p.toml"
    f.write_text(tomli_w.dumps(prof))
    _accepted_or_one_line(run_cli([*SIM, "--profile", str(f), "--strategy", strategy]))


@settings(max_examples=20 * FUZZ_SCALE, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(counts=st.lists(st.one_of(st.floats(0.0, 1e15), ANY_FLOAT), min_size=4, max_size=4))
def test_every_accepted_histogram_gives_finite_results(tmp_path_factory, counts):
    f = tmp_path_factory.mktemp("h") / "h.npy"
    np.save(f, np.array(counts))
    _accepted_or_one_line(run_cli([*SIM, "--profile", "rtx4090", "--histogram", str(f)]))
