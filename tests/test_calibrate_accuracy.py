"""`dicesim accuracy` / `dicesim calibrate` on the committed CPU reference traces (a small subset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicesim.calibrate.accuracy import run_accuracy
from dicesim.calibrate.accuracy_doc import write_accuracy
from dicesim.calibrate.runs import load_runs
from dicesim.cli import main
from dicesim.sim.api import simulate
from dicesim.sim.costs.profile import load_profile

REF = Path(__file__).resolve().parent.parent / "traces" / "cpu"
SUBSET = sorted(str(p) for p in REF.glob("cpu-small-w2-b*-*.events.parquet")
                if any(f"-{s}-r" in p.name for s in ("sync", "dice")))

pytestmark = pytest.mark.skipif(len(SUBSET) < 12, reason="reference traces traces/cpu not present")


@pytest.fixture(scope="module")
def report():
    return run_accuracy(load_runs(SUBSET), fit_on="batch in (1, 4)")


def test_reference_subset_predicts_every_held_out_configuration(report):
    held = report.rows[report.rows["held_out"]]
    assert sorted(held["strategy"]) == ["dice", "sync"] and set(held["batch"]) == {2}
    assert (held["reps"] == 3).all()
    for col in ("measured_step_latency_s", "predicted_step_latency_s", "predicted_exposed_comm_s"):
        assert (held[col] > 0).all(), col
    assert held["step_err"].abs().max() < 1.0  # a sanity bound, not the accuracy claim (docs/accuracy.md)
    s = report.summary
    assert s["held_out_configs"] == 2 and s["rankings_total"] == 1
    assert set(s["per_strategy"]) == {"dice", "sync"}
    assert report.calibrations[2].profile.fitted_range.startswith("model=small; world_size=2..2; batch=1..4")


def test_accuracy_page_and_figure_written(report, tmp_path):
    md, html = write_accuracy(report, tmp_path / "accuracy.md", command="dicesim accuracy traces/cpu")
    text = md.read_text()
    assert "accuracy.html" in text and "median abs step-latency error" in text
    assert "cpu-small-w2-b2-dice" in text and "cpu-small-w2-b2-sync" in text
    assert "plotly" in html.read_text()
    assert not list(tmp_path.glob(".*.tmp"))


def test_calibrate_cli_profile_feeds_the_simulator(tmp_path, capsys):
    out = tmp_path / "cpu.toml"
    assert main(["calibrate", *SUBSET, "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["collectives"]["all_to_alls"] > 0 and "experts" in doc["ops"]
    prof = load_profile(out)
    assert prof.name == "cpu" and prof.host_op_s == 0.0
    topo = tmp_path / "cpu.topology-w2.toml"
    assert topo.is_file()
    res = simulate(model="small", strategy="dice", world_size=2, batch=2, image_size=64, steps=4, dtype="fp32",
                   topology=str(topo), profile=prof)
    assert res.summary()["step_latency_s"] > 0


def test_accuracy_cli_errors_are_one_line(capsys):
    assert main(["accuracy", *SUBSET[:3], "--fit-on", "batch in (1, 2, 4)"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: fit-on") and "\n" not in err
    assert main(["accuracy", *SUBSET[:3], "--fit-on", "__import__('os')"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: fit-on") and "Traceback" not in err
