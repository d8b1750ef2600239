"""Time gloo's collectives on this machine, as nccl-tests does for NCCL: the CPU profile's own all-gather and
point-to-point pass parameters are fitted on these rows (:mod:`dicesim.calibrate.fit_collectives`), never on
the sequence-parallel traces they are checked against.

For each world size (one process per rank, ``torch.set_num_threads(1)``, gloo over loopback as the executor's
ranks: benchmarks/make_cpu_traces.py) and each slice size, float32 tensors:

- ``all_gather``: ``dist.all_gather(out_list, x)`` of a ``slice_nbytes`` tensor, what the executor's K/V and
  token gathers call (validate/executor/kvcomm.py ``DistributedKV._gather``);
- ``all_to_all``: ``dist.all_to_all_single`` of ``world_size x slice_nbytes`` (``slice_nbytes`` to every peer),
  as Ulysses' head all-to-alls and the expert family's dispatch/combine;
- ``p2p_pass``: one ring-attention pass, ``dist.batch_isend_irecv`` of (send K, receive K, send V, receive V)
  to rank+1 / from rank-1, K and V of ``slice_nbytes / 2`` each (kvcomm.py ``ring_issue``).

Each repetition: a barrier, then the op timed on every rank (``perf_counter_ns`` around the blocking call,
``wait()`` included). The service time of a repetition is the mean of the ranks' times: from the members'
mean ready time to the end, the quantity the traces' collectives are fitted on
(dicesim/calibrate/timeline.py, "its *service time* runs from the members' mean ready time ... until the
members see it complete": a rank that waits for a straggler of the shared machine charges it to the
collective, here the ranks' skew leaving the barrier); ``median_s`` is its median over repetitions, after
``--warmup`` untimed ones; the repetitions of every (op, size) are interleaved, the order rotating.
``last_arrival_median_s``: the median of the shortest of the ranks' times (the
rank that left the barrier last waits least: the op without the skew), for reference. Rank 0 writes one CSV row per
(op, world size, slice size) and a README with the command, the date, the load average and the versions.

    PYTHONPATH=. python benchmarks/gloo_collectives.py traces/cpu-collectives
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from pathlib import Path

OPS = ("all_gather", "all_to_all", "p2p_pass")
SLICE_NBYTES = (1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
SCHEMA = "dicesim-gloo-collectives/1"
COLUMNS = ("op", "world_size", "slice_nbytes", "reps", "median_s", "p25_s", "p75_s", "last_arrival_median_s")


def _csv_ints(low: int):
    """A comma-separated list of integers >= ``low`` (argparse turns the error into one line, exit 2)."""
    def parse(text: str) -> list[int]:
        try:
            vals = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
        if not vals or min(vals) < low:
            raise argparse.ArgumentTypeError(f"need integers >= {low}, got {text!r}")
        return vals
    return parse


def _op(name: str, rank: int, world_size: int, slice_nbytes: int):
    """A callable running one blocking ``name`` on this rank (its buffers allocated once)."""
    import torch
    import torch.distributed as dist

    n = max(slice_nbytes // 4, 2)
    if name == "all_gather":
        x = torch.full((n,), float(rank))
        out = [torch.empty(n) for _ in range(world_size)]
        return lambda: dist.all_gather(out, x)
    if name == "all_to_all":
        x, out = torch.full((n * world_size,), float(rank)), torch.empty(n * world_size)
        return lambda: dist.all_to_all_single(out, x)
    k, v = torch.full((n // 2,), float(rank)), torch.full((n - n // 2,), float(rank))
    rk, rv = torch.empty_like(k), torch.empty_like(v)
    nxt, prv = (rank + 1) % world_size, (rank - 1) % world_size

    def ring_pass():
        ops = [dist.P2POp(dist.isend, k, nxt), dist.P2POp(dist.irecv, rk, prv),
               dist.P2POp(dist.isend, v, nxt), dist.P2POp(dist.irecv, rv, prv)]
        for w in dist.batch_isend_irecv(ops):
            w.wait()
    return ring_pass


def _rank_main(rank: int, world_size: int, port: int, sizes: list[int], warmup: int, reps: int,
               queue) -> None:
    import datetime as dt

    import numpy as np
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=dt.timedelta(seconds=120))
    rows = []
    cases = [(name, size) for name in OPS for size in sizes]
    runs = {c: _op(c[0], rank, world_size, c[1]) for c in cases}
    for c in cases:
        for _ in range(warmup):
            runs[c]()
    t_CR: dict[tuple, list[float]] = {c: [] for c in cases}
    for rep in range(reps):  # interleaved, the order rotating: a slow spell of the machine hits every case alike
        for k in range(len(cases)):
            c = cases[(k + rep) % len(cases)]
            dist.barrier()
            t0 = time.perf_counter_ns()
            runs[c]()
            t_CR[c].append((time.perf_counter_ns() - t0) * 1e-9)
    for name, size in cases:
        every = [None] * world_size
        dist.all_gather_object(every, t_CR[(name, size)])
        if rank == 0:
            t_WR = np.array(every, dtype=float)
            svc = t_WR.mean(axis=0)  # per repetition: from the mean ready time to the end
            rows.append((name, world_size, size, reps, float(np.median(svc)), float(np.percentile(svc, 25)),
                         float(np.percentile(svc, 75)), float(np.median(t_WR.min(axis=0)))))
    if rank == 0:
        queue.put(rows)
    dist.barrier()
    dist.destroy_process_group()


def _run(world_size: int, sizes: list[int], warmup: int, reps: int) -> list[tuple]:
    import torch.multiprocessing as tmp

    from validate.executor.launch import free_port

    ctx = tmp.get_context("spawn")
    queue = ctx.SimpleQueue()
    tmp.start_processes(_rank_main, args=(world_size, free_port(), sizes, warmup, reps, queue),
                        nprocs=world_size, join=True, start_method="spawn")
    return queue.get()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output directory (gets gloo-collectives-v1.csv and README.md)")
    p.add_argument("--world-sizes", type=_csv_ints(2), default=[2, 4])
    p.add_argument("--slice-nbytes", type=_csv_ints(8), default=list(SLICE_NBYTES))
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--reps", type=int, default=200)
    args = p.parse_args(argv)
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    t0 = time.time()
    rows = [r for w in args.world_sizes for r in _run(w, args.slice_nbytes, args.warmup, args.reps)]
    load_after = os.getloadavg()
    csv = args.out / "gloo-collectives-v1.csv"
    lines = [f"# schema: {SCHEMA}", ",".join(COLUMNS)]
    lines += [f"{o},{w},{s},{n},{m:.9g},{a:.9g},{b:.9g},{lo:.9g}" for o, w, s, n, m, a, b, lo in rows]
    csv.write_text("\n".join(lines) + "\n")
    flags = (argv if argv is not None else sys.argv[1:])[1:]  # what followed the output directory
    cmd = " ".join(["PYTHONPATH=. python benchmarks/gloo_collectives.py", args.out.as_posix(), *flags])
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    (args.out / "README.md").write_text(f"""# gloo collectives on this machine (microbenchmark)

`gloo-collectives-v1.csv` (schema `{SCHEMA}`): per (op, world size, slice size) the median and quartiles
over {args.reps} repetitions (after {args.warmup} warm-up ones) of the op's service time (the ranks' mean time
after a barrier), and the median of the last-arriving rank's time. Made by

    {cmd}

on {now} in {time.time() - t0:.0f} s; host {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()},
torch {torch.__version__}; load average (1, 5, 15 min) before {', '.join(f'{v:.2f}' for v in load_before)}, after
{', '.join(f'{v:.2f}' for v in load_after)} (the machine is shared: other work may have run alongside).

What each op is and how a repetition is timed: the docstring of `benchmarks/gloo_collectives.py`.
`slice_nbytes` is one rank's slice: the all-gather's input, the all-to-all's bytes to each peer, the K/V block
of one ring pass. Used by `dicesim accuracy ... --collectives traces/cpu-collectives/gloo-collectives-v1.csv`
(the CPU profile's all-gather and ring-pass parameters: docs/calibration.md). Never fitted on the
sequence-parallel traces.
""")
    print(f"wrote {csv} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
