"""``python -m validate run``: bad input, a dying rank, a hanging rank, JSON + trace output, torchrun."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dicesim.strategy import make_strategy
from dicesim.trace import read_trace
from validate.cli import main
from validate.executor.launch import RankFailure, launch
from validate.executor.worker import CRASH_EXIT_CODE, HANG_ENV, RunSpec

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "validate", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, needle", [
    (["--world-size", "3"], "neither divides"),
    (["--strategy", "warp"], "allowed: sync, data_parallel, displaced"),
    (["--backend", "mpi"], "allowed: gloo, nccl"),
    pytest.param(["--backend", "nccl"], "nccl", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="nccl is valid where CUDA exists")),
    (["--image-size", "20"], "image_size"),
    (["--model", "huge"], "unknown model"),
    (["--world-size", "8", "--group-layout", "diagonal"], "contiguous, strided"),
    (["--cond-policy", "median"], "cond_policy"),
    (["--steps", "0"], "steps"),
    (["--bogus-flag"], "bogus"),
])
def test_bad_input_is_one_line_exit_2(args, needle, capsys):
    code = main(["run", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("seeds", ["1", "1001", "1000000000"])
def test_quality_seed_count_outside_its_range_is_refused_before_any_work(seeds, capsys):
    # a billion seeds once built a billion-element tuple before anything checked it
    code = main(["quality", "--model", "digits", "--seeds", seeds])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "seeds" in err and "2..1000" in err, err


def test_bad_input_real_process_exit_code():
    proc = _cli("run", "--world-size", "3", "--strategy", "dice")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_dying_rank_ends_run_with_one_line_and_no_trace(tmp_path):
    out = tmp_path / "traces"
    start = time.monotonic()
    proc = _cli("run", "--world-size", "2", "--strategy", "dice", "--steps", "6", "--batch", "1",
                "--trace-out", str(out), "--json", env={"DICESIM_VALIDATE_CRASH_AT": "1:2"})
    assert time.monotonic() - start < 90
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "rank 1 failed" in lines[0] and f"exited with code {CRASH_EXIT_CODE}" in lines[0]
    assert not out.exists() or not any(out.iterdir())
    _cleanup_logs(lines[0])


@pytest.mark.slow
def test_hanging_rank_is_named_within_the_timeout(monkeypatch):
    monkeypatch.setenv(HANG_ENV, "1:2")
    spec = RunSpec(strategy=make_strategy("interweaved"), steps=5, batch=1, trace=False)
    start = time.monotonic()
    with pytest.raises(RankFailure) as err:
        launch([spec], world_size=2, timeout_s=3)
    assert time.monotonic() - start < 60
    msg = str(err.value)
    assert "\n" not in msg and "rank 1 failed: stopped responding" in msg
    assert multiprocessing.active_children() == []  # every rank reaped, none left running
    _cleanup_logs(msg)
    # the forkserver that started those ranks saw the fault switch; later launches must not
    monkeypatch.delenv(HANG_ENV)
    (outcome,) = launch([spec], world_size=2, timeout_s=20)
    assert len(outcome.ranks) == 2


def _cleanup_logs(message: str) -> None:
    if "(logs: " in message:
        shutil.rmtree(message.rsplit("(logs: ", 1)[1].rstrip(")"), ignore_errors=True)


@pytest.mark.slow
def test_json_summary_and_trace_files(tmp_path):
    out = tmp_path / "traces"
    proc = _cli("run", "--world-size", "2", "--strategy", "dice", "--steps", "4", "--batch", "1", "--shadow",
                "--count-comm", "separate", "--seed", "3", "--trace-out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["schema"] == "dicesim-result/1" and summary["source"] == "executor"
    assert summary["world_size"] == 2 and len(summary["per_step_latency_s"]) == 4
    assert summary["total_latency_s"] == pytest.approx(sum(summary["per_step_latency_s"]))
    assert len(summary["per_step_exposed_comm_s"]) == 4 and len(summary["extra"]["held_nbytes_per_rank"]) == 2
    assert summary["mean_lag_steps"] > 0 and summary["shadow_rel_l2_max"] > 0 and summary["peak_buffer_bytes"] > 0
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 2 and not any(f.startswith(".") for f in files)
    df, meta = read_trace(next(out.glob("*.parquet")))
    assert set(df["rank"]) == {0, 1}
    assert {"compute", "comm", "comm:counts"} <= set(df["stream"])
    coll = df[df["kind"] == "collective"]
    assert set(coll["name"]) == {"counts", "dispatch", "combine"} and (coll["end_us"] >= coll["start_us"]).all()
    assert {"attention", "gate", "run_experts", "shared_expert", "local_combine"} <= set(df["name"])
    hist = np.array(meta.extra["router_hist"])  # rank, step, layer, expert
    tokens_per_rank = 2 * 4  # CFG doubles 1 image of 2x2 tokens
    assert hist.shape == (2, 4, 4, 4) and (hist.sum(axis=3) == tokens_per_rank * 2).all()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_runs_under_torchrun():
    proc = subprocess.run(
        ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "validate", "run", "--world-size", "2",
         "--strategy", "interweaved", "--steps", "3", "--batch", "1", "--json"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[:1500] + "\n...\n" + proc.stderr[-1500:]  # the rank's own words come first
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["extra"]["lag_kept_steps"][2] == [1, 1, 1, 1]
