"""Faults during runs: a sweep killed mid-way resumes with nothing lost or duplicated, a killed
executor rank ends its run in bounded time, and a second writer of one --out is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dicesim.cli import main
from dicesim.outlock import lock_path, output_lock

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}
SWEEP = """
[sweep]
name = "faults"
chunk_size = 1
[base.model]
name = "tiny"
[base.workload]
batch = 1
image_size = 32
steps = 2
[base.topology]
name = "tiny-ring4"
world_size = 4
[base.profile]
file = "rtx4090"
[axes]
strategy = ["sync", "displaced", "interweaved", "dice"]
batch = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25]
"""
#: enough configurations that the run cannot finish between the second chunk and the signal: at about
#: 25 ms each, 98 left take over 2 s (with 20, a loaded machine once let the last 18 finish first, and
#: the interrupted run exited 0)
TOTAL = 100


def _wait_for(cond, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before {what}: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _chunk_keys(out: Path) -> list[str]:
    return [k for p in sorted((out / "chunks").glob("chunk-*.parquet")) for k in pd.read_parquet(p)["key"]]


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory):
    """The table of the same sweep run once without interruption."""
    d = tmp_path_factory.mktemp("reference")
    (d / "sweep.toml").write_text(SWEEP)
    assert main(["sweep", str(d / "sweep.toml"), "--out", str(d / "out"), "--workers", "0"]) == 0
    return pd.read_parquet(d / "out" / "sweep.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_sweep_resumes_without_loss_or_duplicates(tmp_path, capsys, reference_sweep, sig):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    out = tmp_path / "out"
    # a shell's background jobs inherit SIGINT ignored; a user's Ctrl-C reaches a default handler
    proc = subprocess.Popen([sys.executable, "-m", "dicesim", "sweep", str(spec), "--out", str(out), "--workers", "0"],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    chunks = out / "chunks"
    _wait_for(lambda: chunks.is_dir() and len(list(chunks.glob("chunk-*.parquet"))) >= 2, 120, "two chunks", proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    err = proc.stderr.read()
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and err.strip() == "error: interrupted", err
        assert not lock_path(out).exists()  # an interrupted run releases and removes its lock
    else:
        assert proc.returncode == -signal.SIGKILL
    before = _chunk_keys(out)
    assert 2 <= len(before) < TOTAL and len(set(before)) == len(before)

    assert main(["sweep", str(spec), "--out", str(out), "--workers", "0"]) == 0
    assert f"{TOTAL - len(before)} configurations evaluated, {len(before)} reused" in capsys.readouterr().out
    keys = _chunk_keys(out)
    assert sorted(keys) == sorted(set(keys)) and len(keys) == TOTAL  # every configuration once
    assert not [p.name for p in chunks.iterdir() if p.name.startswith(".")]  # no temp file of the killed run
    assert not lock_path(out).exists()

    got = pd.read_parquet(out / "sweep.parquet")
    assert (got["status"] == "ok").all() and len(got) == TOTAL
    pd.testing.assert_frame_equal(got, reference_sweep)


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                kids.append(int(d.name))
    return kids


def _rank_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of the ranks under ``launcher`` (ranks are forkserver children: grandchildren),
    told apart by the log file each rank points its stderr at."""
    ranks = {}
    for child in _children(launcher):
        for pid in _children(child):
            try:
                log = os.readlink(f"/proc/{pid}/fd/2")
            except OSError:
                continue
            name = Path(log).name
            if name.startswith("rank") and name.endswith(".log"):
                ranks[int(name[4:-4])] = pid
    return ranks


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_killed_rank_ends_run_in_bounded_time(tmp_path):
    out = tmp_path / "traces"
    proc = subprocess.Popen([sys.executable, "-m", "validate", "run", "--world-size", "2", "--model", "tiny",
                             "--strategy", "dice", "--steps", "5000", "--batch", "1", "--timeout", "20",
                             "--trace-out", str(out), "--json"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ranks: dict[int, int] = {}

    def started() -> bool:
        ranks.update(_rank_pids(proc.pid))
        return len(ranks) == 2

    _wait_for(started, 120, "two ranks", proc)
    killed_at = time.monotonic()
    os.kill(ranks[1], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)
    # bounded: the watchdog notices at once and settles for about a second, far inside the timeout
    assert time.monotonic() - killed_at < 20
    assert proc.returncode == 1 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "rank 1 failed: killed by signal 9" in lines[0], stderr
    assert "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())  # no trace of a failed run
    _wait_for(lambda: not _alive(ranks[0]), 10, "the surviving rank to be stopped")
    log_dir = lines[0].rsplit("(logs: ", 1)[1].rstrip(")")
    subprocess.run(["rm", "-rf", log_dir], check=False)


def _hold(out: Path) -> subprocess.Popen:
    """A second process that takes the lock of ``out`` and keeps it until killed."""
    code = ("import sys; from dicesim.outlock import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture(scope="module")
def holder(tmp_path_factory):
    """(out, process): another process holding the lock of ``out`` (refused runs change nothing,
    so the tests share it)."""
    out = tmp_path_factory.mktemp("held") / "out"
    proc = _hold(out)
    yield out, proc
    proc.kill()
    proc.wait()


TINY = ["--model", "tiny", "--topology", "tiny-ring4", "--world-size", "4", "--steps", "2", "--batch", "1",
        "--image-size", "32", "--profile", "rtx4090"]


@pytest.mark.parametrize("command", ["sweep", "compare", "simulate", "calibrate"])
def test_second_writer_of_one_out_is_refused(holder, tmp_path, capsys, command):
    out, proc = holder
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    argv = {
        "sweep": ["sweep", str(spec), "--workers", "0"],
        "compare": ["compare", *TINY, "--strategies", "sync,dice", "--workers", "1"],
        "simulate": ["simulate", *TINY],
        "calibrate": ["calibrate", str(ROOT / "traces" / "reference" / "validate-tiny-dice-w2-gloo.trace.json")],
    }[command] + ["--out", str(out)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--out {out} is in use by pid {proc.pid}" in err, err
    assert not out.exists()  # the refused run wrote nothing


def test_lock_of_a_killed_writer_is_taken_over(tmp_path, capsys):
    out = tmp_path / "out"
    proc = _hold(out)
    proc.kill()
    proc.wait()
    assert lock_path(out).exists()  # SIGKILL leaves the file, but the kernel dropped the lock
    assert main(["simulate", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert (out / "summary.json").is_file() and not lock_path(out).exists()


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    from dicesim.outlock import OutputInUse

    with output_lock(tmp_path / "x"):
        with pytest.raises(OutputInUse, match=f"in use by pid {os.getpid()}"):
            with output_lock(tmp_path / "x"):
                pass
    assert not lock_path(tmp_path / "x").exists()
