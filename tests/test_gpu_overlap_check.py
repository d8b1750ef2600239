"""benchmarks/gpu_overlap_check.py end to end on the CPU (tiny model): traces, verification, tables."""

from __future__ import annotations

import json

import pytest

from dicesim.calibrate.runs import load_runs
from script_module import load_script



@pytest.fixture(scope="module")
def check(tmp_path_factory):
    mod = load_script("benchmarks/gpu_overlap_check.py")
    out = tmp_path_factory.mktemp("overlap")
    code = mod.main(["--device", "cpu", "--model", "tiny", "--world-size", "2", "--batches", "1,2", "--steps", "4",
                     "--image-size", "32", "--dtype", "fp32", "--copy-mib", "4", "--out", str(out)])
    return code, out, json.loads((out / "overlap_check.json").read_text())


def test_runs_every_strategy_and_batch_and_writes_its_files(check):
    code, out, doc = check
    assert code == 0
    stems = {r.stem for r in load_runs([out])}
    assert stems == {f"hs-tiny-w2-b{b}-{s}" for b in (1, 2) for s in ("sync", "displaced", "interweaved", "dice")}
    for name in ("README.md", "overlap_check.md", "copy_bandwidth.json"):
        assert (out / name).stat().st_size > 0
    bw = json.loads((out / "copy_bandwidth.json").read_text())
    assert all(bw[k] > 0 for k in ("d2h_Bps", "h2d_Bps", "both_each_way_Bps", "staged_round_trip_Bps"))


def test_host_staged_runs_equal_the_emulation(check):
    _code, _out, doc = check
    assert set(doc["log"]["verify"]) == {"sync", "displaced", "interweaved", "dice"}
    assert all(v["bitwise_equal"] for v in doc["log"]["verify"].values())
    assert doc["log"]["preflight_max_abs_diff"] == {s: 0.0 for s in ("sync", "displaced", "interweaved", "dice")}


def test_tables_have_a_row_per_run_and_the_same_bytes_on_both_sides(check):
    _code, out, doc = check
    text = (out / "overlap_check.md").read_text()
    assert "## Shipped" in text and "## Refit" in text
    for variant in ("shipped", "refit"):
        rows = doc[variant]
        assert len(rows) == 8 and {r["strategy"] for r in rows} == {"sync", "displaced", "interweaved", "dice"}
        for r in rows:
            assert r["meas_step_s"] > 0 and r["sim_step_s"] > 0
            if r["strategy"] == "sync":
                # every exchange carries both copies: the simulator's routed rows are the measured ones
                assert r["sim_staged_nbytes"] == r["meas_staged_nbytes"] > 0
                assert r["meas_slowdown"] == r["sim_slowdown"] == 0.0
            else:
                assert r["sim_staged_nbytes"] == pytest.approx(r["meas_staged_nbytes"], rel=0.1)
    # refit fits the sync runs only: their compute and collective latencies come from them
    assert "sync-refit" in doc["refit_profile"]["name"]
