"""Where evaluations run: this process, a LocalCluster of worker processes, or an existing Dask cluster.

Sweeps, studies and ``recommend`` hand batches of independent, picklable jobs to
:func:`map_jobs`. ``workers=0`` and no scheduler runs them here, in order (tests,
debugging); ``workers=N`` starts a ``dask.distributed`` LocalCluster of N single-threaded
worker processes for the duration of the call; ``scheduler="tcp://host:8786"`` connects to
a running cluster (its workers need dicesim installed; results come back to this process,
so no shared disk is needed). One scale-out mechanism for every command: Dask, not a
home-made scheduler.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional

from dicesim.errors import ConfigError
from dicesim import limits
from dicesim.membudget import plan_workers
from dicesim.scheduler_probe import check_scheduler

#: CPU seconds a LocalCluster costs on top of its jobs: its start and every worker's imports, and per
#: job the shipping of it and its result. Measured on the 2-CPU development machine with farm-bench
#: (medians of 2, load 1.6-1.8, 2026-12-07): the default study (288 configurations) 28.5 s of CPU
#: with 2 workers against 11.3 s in this process, a study of 8 (XL/2, dgx-h100, batch 8) 5.36 s
#: against 2.77 s; the two differences give the start and the per-job cost
#: (earlier, before the study's caches: 57.8 s against 30.0 s for 288)
CLUSTER_START_CPU_S = 2.2
CLUSTER_JOB_CPU_S = 0.052
#: the spread must be this much faster: the CPUs are rarely idle (default study, load 11: 115.0 s
#: wall with 2 workers against 69.6 s here; at load 1.7: 16.6 s against 11.2 s), and a tie is not
#: worth a cluster
CLUSTER_MARGIN = 0.75


def workers_that_pay(n_jobs: int, job_cpu_s: float, cpus: int) -> int:
    """Local workers to start by default: one per CPU when spreading ``n_jobs`` jobs of about
    ``job_cpu_s`` CPU seconds over them takes less wall time than running them here, counting what
    the cluster adds (:data:`CLUSTER_START_CPU_S`, :data:`CLUSTER_JOB_CPU_S`) and a margin
    (:data:`CLUSTER_MARGIN`); else 0 (this process)."""
    if cpus < 2:
        return 0
    here_s = n_jobs * job_cpu_s
    spread_s = (n_jobs * (job_cpu_s + CLUSTER_JOB_CPU_S) + CLUSTER_START_CPU_S) / cpus
    return cpus if spread_s < CLUSTER_MARGIN * here_s else 0


def scale_out(workers: Optional[int], scheduler: Optional[str], jobs: tuple[int, float] | None = None
              ) -> Optional[int]:
    """Local worker processes to start: none with a scheduler; ``workers`` when given (checked against
    the CPUs and memory, :mod:`dicesim.membudget`); by default none when ``jobs`` (count, CPU seconds
    each) are too little work to pay for a cluster (:func:`workers_that_pay`), else
    None = as many as the CPUs and the memory allow (planned where the runs are known)."""
    if scheduler and workers is not None:
        raise ConfigError("--workers", "cannot be combined with --scheduler (the cluster decides)")
    if scheduler:
        return 0
    if workers is not None:
        return plan_workers(workers, [], jobs=workers)
    if jobs is not None and workers_that_pay(jobs[0], jobs[1], os.cpu_count() or 1) == 0:
        return 0
    return None


@contextmanager
def dask_client(*, workers: int, scheduler: str | None = None, processes: bool = True) -> Iterator[Any]:
    """A connected ``distributed.Client``; a LocalCluster it started is closed on exit."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover -- a core dependency; only a broken install lacks it
        raise ConfigError("--workers", "needs dask[distributed], a core dependency of dicesim: reinstall with "
                          "`python3 -m pip install -e .`", "0") from None
    cluster = None
    if scheduler:
        check_scheduler(scheduler)  # address, connection and handshake, each bounded in time
        try:
            client = Client(scheduler, timeout=f"{limits.SCHEDULER_CONNECT_TIMEOUT_S:g}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError("--scheduler", f"cannot reach Dask scheduler {scheduler!r}: {exc}") from None
        try:  # a scheduler without workers would leave every job waiting, unbounded
            client.wait_for_workers(1, timeout=limits.SCHEDULER_WORKERS_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            client.close()
            raise ConfigError("--scheduler", f"Dask scheduler {scheduler!r} has no worker after "
                              f"{limits.SCHEDULER_WORKERS_TIMEOUT_S:g} s ({type(exc).__name__})") from None
    else:
        cluster = LocalCluster(n_workers=max(workers, 1), threads_per_worker=1, processes=processes,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def map_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int = 0, scheduler: str | None = None,
             processes: bool = True, shared: tuple = (), client: Any = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(i, fn(*shared, *jobs[i]))`` for every job, in completion order.

    ``shared`` arguments are sent to each worker once (scattered), not once per job. An
    exception in a job propagates. ``client`` reuses an open client (see :func:`dask_client`).
    """
    if not jobs:
        return
    if client is None and workers <= 0 and not scheduler:
        for i, job in enumerate(jobs):
            yield i, fn(*shared, *job)
        return
    if client is None:
        with dask_client(workers=workers, scheduler=scheduler, processes=processes) as own:
            yield from _on_client(own, fn, jobs, shared)
    else:
        yield from _on_client(client, fn, jobs, shared)


def _on_client(client: Any, fn: Callable[..., Any], jobs: Sequence[tuple], shared: tuple
               ) -> Iterator[tuple[int, Any]]:
    from dask.distributed import as_completed

    shared_f = client.scatter(list(shared), broadcast=True) if shared else []
    futures = {client.submit(fn, *shared_f, *job, pure=False): i for i, job in enumerate(jobs)}
    for fut in as_completed(futures):
        yield futures[fut], fut.result()
