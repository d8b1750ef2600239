"""Start the ranks of an executor run, watch them, and bring their results home.

Two ways in:

- :func:`launch` spawns ``world_size`` local processes (torch.multiprocessing, spawn),
  each with one torch thread, rendezvous over TCP on a free local port. A watchdog polls
  them: the first rank that dies or fails makes the launcher stop the others (SIGTERM,
  then SIGKILL) and raise :class:`RankFailure` with one line naming that rank. Process
  groups get a timeout, so a hung rank turns into a failing peer within ``timeout_s``.
- :func:`run_from_env` is for ``torchrun`` (``env://`` rendezvous): every rank runs the
  specs; rank 0 gets every rank's results.

In both, each rank runs *all* the given specs in order in one process group (tests run a
dozen strategies for the price of one start-up), and every rank's results are gathered on
rank 0 after each spec. Nothing is written to disk here; traces are written once, by the
caller, from the gathered results, so a failed run leaves no trace file behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import pickle
import queue as _queue
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from dicesim.errors import ConfigError, DicesimError
from validate.executor.families import run_rank
from validate.executor.rendezvous import read_rank_env, torchrun_requested
from validate.executor.tracing import clock_offsets_ns
from validate.executor.worker import GroupCache, RankResult, RunSpec

BACKENDS: tuple[str, ...] = ("gloo", "nccl")
_POLL_S = 0.05
_KILL_GRACE_S = 3.0
_SETTLE_S = 1.0  # after a first failure, wait this long for the culprit's own report


class RankFailure(RuntimeError):
    """A rank died, failed or hung; the message is one line."""


class RankInputError(DicesimError):
    """A rank refused its input (e.g. a checkpoint that does not fit the model): exit code 2."""


@dataclass
class RunOutcome:
    """Every rank's results for one spec, plus how their clocks line up."""

    spec: RunSpec
    world_size: int
    backend: str
    ranks: list[RankResult]
    clock_offsets_ns: dict[int, int]
    clock_method: str


def check_backend(backend: str, world_size: int) -> None:
    """ConfigError unless ``backend`` can run ``world_size`` ranks on this machine."""
    if backend not in BACKENDS:
        raise ConfigError("backend", f"unknown backend {backend!r}", BACKENDS)
    if world_size < 1:
        raise ConfigError("world_size", f"must be >= 1, got {world_size}", ">= 1")
    if backend == "nccl":
        if not torch.cuda.is_available() or not dist.is_nccl_available():
            raise ConfigError("backend", "nccl needs CUDA GPUs and an NCCL build of torch", ("gloo",))
        if torch.cuda.device_count() < world_size and "LOCAL_RANK" not in os.environ:
            raise ConfigError("world_size", f"{world_size} ranks but {torch.cuda.device_count()} GPUs",
                              f"1..{torch.cuda.device_count()}")


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:400]


def _device(backend: str, local_rank: int) -> torch.device:
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _run_specs(specs: Sequence[RunSpec], *, rank: int, world_size: int, backend: str,
               device: torch.device, timeout_s: float) -> list[RunOutcome] | None:
    """Run every spec on this rank; rank 0 returns the gathered outcomes, others None."""
    groups = GroupCache(timeout=_dt.timedelta(seconds=timeout_s))
    offsets, method = clock_offsets_ns(world_size)
    outcomes: list[RunOutcome] = []
    for spec in specs:
        result = run_rank(spec, rank=rank, world_size=world_size, device=device, groups=groups)
        every: list[Any] = [None] * world_size if rank == 0 else None
        dist.gather_object(result, every, dst=0)
        if rank == 0:
            outcomes.append(RunOutcome(spec=spec, world_size=world_size, backend=backend, ranks=every,
                                       clock_offsets_ns=offsets, clock_method=method))
    return outcomes if rank == 0 else None


def _worker(rank: int, world_size: int, backend: str, init_method: str, timeout_s: float,
            specs: Sequence[RunSpec], results: Any, log_dir: str, env: dict[str, str]) -> None:
    """Body of one rank: stderr to a log file, one thread, run, report, exit."""
    log = open(os.path.join(log_dir, f"rank{rank}.log"), "w")  # noqa: SIM115 (lives as long as the process)
    os.dup2(log.fileno(), 2)
    # a forkserver child has the environment the server started with, not the launcher's: drop
    # fault-injection switches left over from whichever launch started the server, then apply ours
    for key in [k for k in os.environ if k.startswith("DICESIM_VALIDATE_") and k not in env]:
        del os.environ[key]
    os.environ.update(env)
    torch.set_num_threads(1)
    try:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                timeout=_dt.timedelta(seconds=timeout_s))
        device = _device(backend, rank)
        outcomes = _run_specs(specs, rank=rank, world_size=world_size, backend=backend, device=device,
                              timeout_s=timeout_s)
        if rank == 0:
            # plain pickle bytes: torch's queue pickler would share tensors through file descriptors
            # that vanish when this process exits
            results.put(("ok", rank, pickle.dumps(outcomes)))
        dist.destroy_process_group()
        code = 0
    except BaseException as exc:  # noqa: BLE001 (reported to the launcher as one line)
        traceback.print_exc()
        # bad input only a rank can see (a checkpoint that does not fit the model) stays bad input
        kind = "input" if isinstance(exc, DicesimError) else "error"
        results.put((kind, rank, exc.one_line() if isinstance(exc, DicesimError) else _one_line(exc)))
        code = 1
    log.flush()
    results.close()
    results.join_thread()
    os._exit(code)  # skips interpreter teardown (seconds with gloo threads); the queue is flushed


def _context() -> Any:
    """A forkserver that has imported torch once: later ranks start in milliseconds, not seconds.

    The server is a clean process (no CUDA context, no thread pools), so forking from it is
    safe, unlike forking the launcher.
    """
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed", "validate.executor.families", "validate.executor.launch"])
    return ctx


def free_port() -> int:
    """A TCP port on 127.0.0.1 free now (the rendezvous of a local process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list[Any]) -> None:
    """Terminate, then kill, every process still running; always reap (no zombies)."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + _KILL_GRACE_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def launch(specs: Sequence[RunSpec], *, world_size: int, backend: str = "gloo",
           timeout_s: float = 30.0) -> list[RunOutcome]:
    """Run ``specs`` on ``world_size`` local ranks; RankFailure (one line) if any rank fails.

    Configs are checked before anything starts (ConfigError). The whole launch is bounded:
    a failure ends it within about ``timeout_s`` plus a few seconds.
    """
    check_backend(backend, world_size)
    for spec in specs:
        spec.check(world_size)
    ctx = _context()
    results = ctx.Queue()
    log_dir = tempfile.mkdtemp(prefix="dicesim-validate-")
    init_method = f"tcp://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k.startswith("DICESIM_VALIDATE_")}
    env.update(OMP_NUM_THREADS="1", TORCH_CPP_LOG_LEVEL="ERROR")
    procs = []
    try:
        for rank in range(world_size):
            p = ctx.Process(target=_worker, name=f"validate-rank{rank}", daemon=True,
                            args=(rank, world_size, backend, init_method, timeout_s, list(specs), results, log_dir,
                                  env))
            p.start()
            procs.append(p)
    except BaseException:
        _stop(procs)
        raise
    try:
        outcomes = _watch(procs, results, world_size, timeout_s, log_dir)
    except BaseException:
        _stop(procs)
        raise
    _stop(procs)
    shutil.rmtree(log_dir, ignore_errors=True)
    return outcomes


def _watch(procs: list[Any], results: Any, world_size: int, timeout_s: float, log_dir: str) -> list[RunOutcome]:
    """Collect rank 0's results; on the first sign of failure, settle briefly and name the culprit."""
    outcomes: list[RunOutcome] | None = None
    errors: dict[int, str] = {}
    inputs: dict[int, str] = {}  # ranks that failed on bad input (DicesimError)
    fail_seen_at: float | None = None
    done_at: float | None = None
    while True:
        try:
            while True:
                kind, rank, payload = results.get(timeout=_POLL_S)
                if kind == "ok":
                    outcomes = pickle.loads(payload)
                else:
                    errors.setdefault(rank, payload)
                    if kind == "input":
                        inputs.setdefault(rank, payload)
        except _queue.Empty:
            pass
        codes = [p.exitcode for p in procs]
        failed = {r: c for r, c in enumerate(codes) if c not in (None, 0)}
        if outcomes is not None and not failed:
            if all(c == 0 for c in codes):
                return outcomes
            # results are home; a rank stuck in shutdown is stopped by the caller
            done_at = done_at or time.monotonic()
            if time.monotonic() - done_at > timeout_s:
                return outcomes
            continue
        if (failed or errors) and fail_seen_at is None:
            fail_seen_at = time.monotonic()
        if fail_seen_at is not None and (all(c is not None for c in codes)
                                         or time.monotonic() - fail_seen_at > _SETTLE_S):
            if inputs:
                shutil.rmtree(log_dir, ignore_errors=True)
                rank = min(inputs)
                raise RankInputError(f"rank {rank}: {inputs[rank]}")
            silent = [r for r, c in enumerate(codes) if c is None and r not in errors]
            raise RankFailure(_failure_line(failed, errors, silent, log_dir))
        if fail_seen_at is None and all(c is not None for c in codes):
            raise RankFailure(f"all {world_size} ranks exited without results (logs: {log_dir})")


def _is_victim(msg: str) -> bool:
    """Errors a rank gets because a *peer* died or hung, not because of its own fault."""
    low = msg.lower()
    return any(k in low for k in ("connection reset", "connection closed", "broken pipe", "timed out",
                                  "timeout", "connection refused", "socket", "peer"))


def _failure_line(failed: dict[int, int], errors: dict[int, str], silent: list[int], log_dir: str) -> str:
    """One line naming the most likely culprit: a rank that died without a message first,
    then one with its own error, then a rank that went silent while its peers timed out."""
    died = [r for r, c in sorted(failed.items()) if r not in errors]
    own = [r for r in sorted(errors) if not _is_victim(errors[r])]
    if died:
        rank, code = died[0], failed[died[0]]
        why = f"killed by signal {-code}" if code < 0 else f"exited with code {code} without an error message"
    elif own:
        rank, why = own[0], errors[own[0]]
    elif silent and errors:
        rank, why = silent[0], f"stopped responding; its peers timed out ({errors[min(errors)][:200]})"
    else:
        rank = min(errors)
        why = errors[rank]
    return f"rank {rank} failed: {why}; stopped the other ranks (logs: {log_dir})"


def run_from_env(specs: Sequence[RunSpec], *, backend: str, timeout_s: float = 30.0) -> list[RunOutcome] | None:
    """Run under torchrun (``env://``): returns the outcomes on rank 0, None elsewhere.

    The environment is read strictly first (:mod:`validate.executor.rendezvous`: bad values are exit 2);
    a rendezvous that fails or times out (a peer that never joins) is one RankFailure line."""
    env = read_rank_env()
    rank, world_size, local_rank = env.rank, env.world_size, env.local_rank
    check_backend(backend, world_size)
    for spec in specs:
        spec.check(world_size)
    torch.set_num_threads(1)
    try:
        with _native_stderr_to(tempfile.TemporaryFile()):  # c10d prints C++ frames on every failed try
            dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                                    timeout=_dt.timedelta(seconds=timeout_s))
    except Exception as exc:  # noqa: BLE001 -- DistStoreError, RuntimeError, ValueError: all one line
        raise RankFailure(f"rank {rank}: rendezvous at {env.master_addr}:{env.master_port} failed within "
                          f"{timeout_s:g} s: {_one_line(exc)[:300]}") from None
    try:
        return _run_specs(specs, rank=rank, world_size=world_size, backend=backend,
                          device=_device(backend, local_rank), timeout_s=timeout_s)
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _native_stderr_to(sink: Any) -> Iterator[None]:
    """Point file descriptor 2 at ``sink`` for the block (native code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sink.close()


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another env:// launcher); some of its
    variables without the others is refused (:func:`validate.executor.rendezvous.read_rank_env`)."""
    return torchrun_requested()
