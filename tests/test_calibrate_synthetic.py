"""Calibration recovers the parameters the simulator was run with (the simulator plays the executor)."""

from __future__ import annotations

import pytest
from calibrate_cases import (
    TRUE_A2A_BASE_S,
    TRUE_BW_BPS,
    TRUE_COUNTS_BASE_S,
    TRUE_EDGE_LAT_S,
    TRUE_EFF,
    TRUE_LAUNCH_S,
    TRUE_PEAK_TFLOPS,
    synthetic_traces,
    true_profile,
)

from dicesim.calibrate.accuracy import run_accuracy
from dicesim.calibrate.api import calibrate_runs
from dicesim.calibrate.runs import load_runs
from dicesim.models import block_workload, get_model
from dicesim.sim.costs.costmodel import CostModel

INTERFERENCE = 0.25
COMM_INTERFERENCE = 0.4


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    synthetic_traces(out, profile=true_profile(INTERFERENCE, COMM_INTERFERENCE), batches=(1, 2, 3), steps=6)
    return out


@pytest.fixture(scope="module")
def fitted(syn_dir):
    runs = [r for r in load_runs([syn_dir]) if r.batch in (1, 3)]
    return calibrate_runs(runs)


def test_compute_parameters_recovered(fitted):
    for kind, fit in fitted.op_fits.items():
        launch, s_per_flop, _ = fit.roofline
        assert launch == pytest.approx(TRUE_LAUNCH_S[kind], rel=1e-5), kind
        assert s_per_flop == pytest.approx(1.0 / (TRUE_PEAK_TFLOPS * 1e12 * TRUE_EFF[kind]), rel=1e-5), kind
        assert fit.roofline_rel_err_max < 1e-5


def test_profile_times_ops_like_the_truth(fitted):
    """The calibrated profile (not just the fit) gives the truth's op times, at a size it never saw."""
    wl = block_workload(get_model("tiny"), batch=5, image_px=32, dtype="fp32")
    truth = CostModel(true_profile(), wl, experts_on_rank=2)
    cal = CostModel(fitted.profile, wl, experts_on_rank=2)
    for kind in ("attention", "gate", "shared_expert", "local_combine", "embed", "final"):
        assert cal.action_time_s(kind) == pytest.approx(truth.action_time_s(kind), rel=1e-4), kind
    assert cal.expert_time_s(77) == pytest.approx(truth.expert_time_s(77), rel=1e-4)


def test_collectives_and_interference_recovered(fitted):
    comm = fitted.comm
    assert comm.a2a_latency_s == pytest.approx(TRUE_A2A_BASE_S + 2 * TRUE_EDGE_LAT_S, rel=1e-6)
    assert comm.counts_latency_s == pytest.approx(TRUE_COUNTS_BASE_S + 2 * TRUE_EDGE_LAT_S, rel=1e-6)
    assert comm.bw_Bps == pytest.approx(TRUE_BW_BPS, rel=1e-6)
    assert fitted.interference == pytest.approx(INTERFERENCE, rel=1e-4)
    assert fitted.profile.host_op_s == 0.0 and fitted.profile.host_collective_s == 0.0


def test_comm_interference_recovered(fitted):
    """Communication slowed by compute comes back from the step latency of the displaced runs."""
    assert fitted.overlap is not None and fitted.overlap.n_configs == 2
    assert fitted.profile.comm_interference == pytest.approx(COMM_INTERFERENCE, rel=1e-3)
    assert fitted.overlap.rel_err_rms < 1e-4 < fitted.overlap.rel_err_rms_at_zero
    assert "comm_interference" in fitted.profile.citations


def test_held_out_predictions_exact_on_synthetic_runs(syn_dir):
    """End to end: fit on batches 1 and 3, predict batch 2 through a rebuilt scenario."""
    rep = run_accuracy(load_runs([syn_dir]), fit_on="batch in (1, 3)")
    held = rep.rows[rep.rows["held_out"]]
    assert set(held["batch"]) == {2} and len(held) == 2
    assert held["step_err"].abs().max() < 1e-3
    assert held["exposed_err_of_step"].abs().max() < 1e-3
    assert (held["overlap_err"].abs() < 1e-3).all()
    assert rep.summary["rankings_equal"] == rep.summary["rankings_total"] == 1


def test_interference_not_invented_without_it(tmp_path):
    synthetic_traces(tmp_path, profile=true_profile(0.0), batches=(1, 3), strategies=("displaced",), steps=6)
    cal = calibrate_runs(load_runs([tmp_path]))
    assert cal.interference == pytest.approx(0.0, abs=1e-6)
    assert cal.profile.comm_interference == pytest.approx(0.0, abs=1e-4)
