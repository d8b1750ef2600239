"""`dicesim study`: its shape, the embedded default, speedups, the written summary, resume, Dask scale-out."""

from __future__ import annotations

import os
import pandas as pd
import pytest

from dicesim.cli import main
from dicesim.errors import ConfigError
from dicesim.report.study_text import fastest_per_setting, study_summary
from dicesim.strategy import COMPARE_DEFAULT
from dicesim.study import DEFAULT_STUDY, DEFAULT_TOPOLOGIES, load_study, make_study, run_study, study_points, study_table

# tiny on two real machines: NVLink (little to hide) and PCIe without peer-to-peer (much to hide)
SMALL = dict(models=("tiny",), topologies=("dgx-h100", "8x-rtx4090-pcie"), world_sizes=(4,), batches=(2, 8),
             steps=4)
ARGS = ["--models", "tiny", "--topologies", "dgx-h100,8x-rtx4090-pcie", "--world-sizes", "4", "--batches", "2,8",
        "--steps", "4"]


def test_default_study_is_every_builtin_machine_for_xl2_and_g2_across_batches():
    assert DEFAULT_STUDY.axes() == ["topology", "batch"]
    points = study_points(DEFAULT_STUDY)
    assert len(points) == 2 * len(DEFAULT_TOPOLOGIES) * 3 * len(COMPARE_DEFAULT)  # every family's comparison presets
    assert {"sync", "data_parallel", "dice"} <= set(DEFAULT_STUDY.all_strategies())
    assert {p["model"] for p in points} == {"XL/2", "G/2"}
    gpus = {p["topology"]: p["world_size"] for p in points}
    assert gpus == {"8x-rtx4090-pcie": 8, "4x-l40s-pcie": 4, "dgx-a100": 8, "dgx-h100": 8, "hgx-h200": 8,
                    "2x-dgx-h100-ib": 16}  # every GPU of each machine
    assert DEFAULT_STUDY.all_strategies()[0] == "sync"


@pytest.mark.parametrize("fields, message", [
    (dict(batches=(1, 2), world_sizes=(4, 8)), "varies 3 axes"),
    (dict(strategies=("dicey",)), "unknown strategy 'dicey'"),
    (dict(models=("XXL",)), "unknown model 'XXL'"),
    (dict(batches=(0,)), "study.batches"),
    (dict(placement="diagonal"), "study.placement"),
])
def test_bad_studies_are_one_line_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        make_study(**fields)


def test_study_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[study]\nname = "pcie"\nmodels = ["tiny"]\ntopologies = ["8x-rtx4090-pcie"]\n'
                    'world_sizes = [2, 4]\nbatches = [4]\n')
    study = load_study(path)
    assert study.name == "pcie" and study.axes() == ["world_size"]
    path.write_text('[study]\nmodel = "tiny"\n')
    with pytest.raises(ConfigError, match="study.model: unknown key"):
        load_study(path)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    outcome = run_study(make_study(**SMALL), out)
    return out, outcome


def test_study_speedups_and_summary_say_where_hiding_pays(small):
    _, outcome = small
    assert outcome.n_run == 4 * len(COMPARE_DEFAULT)
    # Ulysses cannot split the tiny model's 2 heads over 4 GPUs: its points are skipped, saying why
    uly = outcome.table["strategy"] == "ulysses"
    assert (outcome.table.loc[~uly, "status"] == "ok").all() and (outcome.table.loc[uly, "status"] == "skipped").all()
    assert outcome.table.loc[uly, "reason"].str.contains("2 heads do not split over 4 ranks").all()
    table = study_table(outcome.table)
    assert (table.loc[table["strategy"] == "sync", "speedup"] == 1.0).all()
    best = fastest_per_setting(table, ["topology", "batch"]).set_index(["topology", "batch"])
    # PCIe without peer-to-peer exposes more of sync's step than NVLink, so hiding it pays more
    pcie, nvl = best.loc[("8x-rtx4090-pcie", 8)], best.loc[("dgx-h100", 8)]
    assert pcie["sync_exposed_comm_share_frac"] > nvl["sync_exposed_comm_share_frac"]
    # (tiny on NVLink is bound by host launches at these batches: hiding communication gains ~nothing there;
    # every strategy ties with sync, and window reuse leaves float round-off of absolute times on a tie)
    assert pcie["speedup"] > 1.2 and pcie["speedup"] > nvl["speedup"] >= 1.0 - 1e-12
    # busiest by utilisation of capacity: without peer-to-peer every byte climbs the switch uplink and comes back
    assert "pcie4" in pcie["sync_busiest_links"] and "nvlink4" in nvl["sync_busiest_links"]
    # each row says which profile timed it: the measured H100 one, the 4090's datasheet one
    prof = table.groupby("topology")[["profile", "profile_basis"]].agg(set)
    assert prof.loc["dgx-h100"].tolist() == [{"h100-calibrated-graph"}, {"measured"}]
    assert prof.loc["8x-rtx4090-pcie"].tolist() == [{"rtx4090"}, {"datasheet"}]
    text = " ".join(study_summary(table, ["topology", "batch"]))
    assert "gains most on 8x-rtx4090-pcie" in text and "least on dgx-h100" in text
    assert "From batch 2 to batch 8" in text and "Staleness and memory" in text


def test_study_cli_writes_report_and_resumes(small, capsys):
    out, first = small
    assert main(["study", *ARGS, "--out", str(out), "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert f"0 configurations simulated, {4 * len(COMPARE_DEFAULT)} reused" in text and "gains most on" in text
    assert "Which family wins" in text
    for name in ("study.parquet", "study.csv", "summary.txt", "report.html"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Which family wins, per machine and model" in html and "Memory per GPU" in html
    assert "Speedup over sync" in html and "study-explorer" in html and "Predicted quality cost" in html and "Predicted quality: FD change =" in html
    pd.testing.assert_frame_equal(pd.read_parquet(out / "study.parquet"), first.table)


@pytest.mark.parametrize("args, needle", [
    (["--batches", "two"], "--batches"),
    (["--batches", "1,2", "--world-sizes", "2,4"], "varies 3 axes"),
    (["--workers", "2", "--scheduler", "tcp://x:1"], "--scheduler"),
])
def test_study_cli_bad_input_is_one_line_exit_2(args, needle, tmp_path, capsys):
    local = [] if "--workers" in args else ["--workers", "0"]
    assert main(["study", *ARGS, *args, *local, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


@pytest.mark.slow
def test_study_on_a_cluster_of_worker_processes_equals_the_local_run(small, tmp_path):
    from dask.distributed import LocalCluster

    _, local = small
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = run_study(make_study(**SMALL), tmp_path, scheduler=cluster.scheduler_address)
    assert remote.n_run == 4 * len(COMPARE_DEFAULT)
    pd.testing.assert_frame_equal(remote.table, local.table)


def test_a_cluster_starts_only_where_it_pays():
    """Default study (288 configurations of ~0.04 s) here; long or many costly jobs on every CPU; one CPU never;
    explicit --workers always wins."""
    from dicesim.cli.study_cmd import STUDY_CONFIG_CPU_S, scale_out
    from dicesim.cluster import workers_that_pay

    assert workers_that_pay(288, STUDY_CONFIG_CPU_S, 2) == 0
    assert workers_that_pay(288, 1.0, 2) == 2 and workers_that_pay(4, 10.0, 2) == 2
    assert workers_that_pay(10_000, 100.0, 1) == 0
    assert all(workers_that_pay(100, s, 2) <= workers_that_pay(100, 2 * s, 2) for s in (0.01, 0.1, 0.5, 1.0))
    assert scale_out(1, None, (1, 0.0)) == 1 and scale_out(0, None, (10_000, 100.0)) == 0
    # by default: this process where a cluster does not pay, else as many as the CPUs and memory hold (None)
    assert scale_out(None, None, (288, STUDY_CONFIG_CPU_S)) == 0 and scale_out(None, None, (4, 10.0)) == (None if (os.cpu_count() or 1) >= 2 else 0)
