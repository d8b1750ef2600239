"""Hangs and network edges (issue 19, classes 5 and 6): every loop that waits has a bound or a
proof of progress, every network wait a timeout (docs/limits.md), and a bad address, a server
that is not Dask or a rendezvous that fails is one line.

Each test runs under an alarm, so a regression fails instead of hanging the suite. Network
timeouts are lowered with monkeypatch (the limits are read when used)."""

from __future__ import annotations

import signal
import socket
import threading
from contextlib import contextmanager

import pytest

from fuzz_cases import run_cli, verdict


@contextmanager
def within(seconds: int):
    def alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _one_line(o, needle: str = "") -> str:
    assert verdict(o, expect_error=True) is None, o.err or o.crash
    assert needle in o.err, o.err
    return o.err


# --- recommend with 1 or 2 steps ----------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2])
def test_recommend_with_few_steps_ends_and_matches_the_exhaustive_search(steps):
    """With 1-2 steps different plans share their synchronous layers and steps, so timing classes
    are mutually "at least as fast": each waited for the other and the search spun at 100% CPU."""
    from dicesim.recommend import make_limits, search
    from dicesim.scenario import make_scenario
    from dicesim.search_space import make_space

    sc = make_scenario(model="tiny", topology="tiny-ring4", world_size=4, steps=steps, batch=1, image_size=32,
                       profile="rtx4090")
    space = make_space(schemes=("displaced",), sync_presets=("none", "deep"), cond_intervals=(1, 2), warmups=(1, 2),
                       cond_policies=("low",))
    with within(60):
        fast = search(sc, space, make_limits(max_weighted_lag_steps=0.9), workers=0)
        full = search(sc, space, make_limits(max_weighted_lag_steps=0.9), workers=0, exhaustive=True)
    assert fast.rounds <= fast.n_classes + 1
    assert fast.best["strategy"] == full.best["strategy"]
    assert set(fast.front["strategy"]) == set(full.front["strategy"])


def test_recommend_cli_with_one_step_ends(tmp_path):
    with within(120):
        o = run_cli(["recommend", "--model", "tiny", "--topology", "tiny-ring4", "--world-size", "4", "--steps", "1",
                     "--batch", "1", "--image-size", "32", "--profile", "rtx4090", "--schemes", "displaced",
                     "--cond-intervals", "1,2", "--warmups", "1", "--workers", "0", "--out", str(tmp_path / "r")])
    assert o.code == 0, o.err
    assert (tmp_path / "r" / "candidates.parquet").is_file()


# --- --scheduler: malformed, another protocol, silent, not Dask ---------------------------
@contextmanager
def server(mode: str):
    """A TCP server on a free port: ``mute`` accepts and never answers, ``banner`` greets first
    (as SSH does), ``http`` answers a request with an HTTP reply."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def serve():
        s.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = s.accept()
            except OSError:
                continue
            conns.append(c)
            if mode == "banner":
                c.sendall(b"SSH-2.0-OpenSSH_8.9\r\n")
            elif mode == "http":
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"tcp://127.0.0.1:{s.getsockname()[1]}"
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        s.close()


SWEEP = ('[sweep]\nname = "s"\n[base.model]\nname = "tiny"\n[base.workload]\nbatch = 1\nimage_size = 32\nsteps = 2\n'
         '[base.topology]\nname = "tiny-ring4"\nworld_size = 4\n[base.profile]\nfile = "rtx4090"\n'
         '[axes]\nstrategy = ["sync", "dice"]\n')


@pytest.mark.parametrize("mode, needle", [
    ("mute", "no Dask handshake within 0.5 s"),
    ("banner", "announces"),
    ("http", "announces"),
])
def test_a_server_that_is_not_dask_is_one_line(tmp_path, monkeypatch, mode, needle):
    monkeypatch.setattr("dicesim.limits.SCHEDULER_CONNECT_TIMEOUT_S", 0.5)
    (tmp_path / "s.toml").write_text(SWEEP)
    with server(mode) as address, within(30):
        o = run_cli(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o"), "--scheduler", address])
    _one_line(o, needle)
    assert not (tmp_path / "o" / "sweep.parquet").exists()


@pytest.mark.parametrize("address, needle", [
    ("http://127.0.0.1:8786", "protocol 'http'"),
    ("tcp://[::1", "not a Dask scheduler address"),
    ("tcp://127.0.0.1:99999", "port 99999 is out of range"),
    ("localhost", "not a Dask scheduler address"),
    ("inproc://nothing", "cannot reach Dask scheduler"),
    ("tcp://127.0.0.1:٨٧٨٦", "not a Dask scheduler address"),
    ("tcp://nosuchhost.invalid:8786", "unknown host"),
])
def test_a_malformed_scheduler_address_is_one_line(tmp_path, address, needle):
    (tmp_path / "s.toml").write_text(SWEEP)
    with within(60):
        for argv in (["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o")], ["study", "--models", "tiny",
                     "--topologies", "tiny-ring4", "--batches", "1", "--steps", "2", "--out", str(tmp_path / "st")]):
            _one_line(run_cli([*argv, "--scheduler", address]), needle)


def test_a_scheduler_without_workers_is_given_up(tmp_path, monkeypatch):
    from dask.distributed import LocalCluster

    monkeypatch.setattr("dicesim.limits.SCHEDULER_WORKERS_TIMEOUT_S", 1.0)
    (tmp_path / "s.toml").write_text(SWEEP)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, within(60):
        o = run_cli(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o"), "--scheduler",
                     cluster.scheduler_address])
    _one_line(o, "has no worker after 1 s")


# --- python -m validate run under torchrun variables --------------------------------------
@pytest.mark.parametrize("env, needle", [
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK: environment variable is 'x'"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK: environment variable is '2' (allowed: integers 0..1"),
    ({"RANK": "0", "WORLD_SIZE": "²"}, "WORLD_SIZE"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "70000"}, "MASTER_PORT"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "-1"}, "MASTER_PORT"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "a;b"}, "MASTER_ADDR"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "9"}, "LOCAL_RANK"),
    ({"WORLD_SIZE": "2", "RANK": None}, "RANK: is not set, but other torchrun variables are"),
])
def test_bad_torchrun_variables_are_one_line(monkeypatch, env, needle):
    base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    for k, v in {**base, **env}.items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    with within(60):
        _one_line(run_cli(["run", "--steps", "2"], executor=True), needle)


def test_a_peer_that_never_joins_is_one_line_within_the_timeout(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    with within(60):
        o = run_cli(["run", "--steps", "2", "--timeout", "1"], executor=True)
    assert o.code == 1 and not o.crash and "Traceback" not in o.err, o.err or o.crash
    lines = [line for line in o.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: rank 0: rendezvous at 127.0.0.1"), o.err
