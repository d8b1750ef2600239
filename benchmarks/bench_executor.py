"""Per-step latency of every strategy in the torch.distributed executor, CPU gloo ranks.

    python benchmarks/bench_executor.py [--model small] [--steps 12] [--batch 2] [--out docs/bench-executor.md]

All strategies of one world size run in one launch (one process group), so process start-up
is paid once. The step latency reported is the median over steps 1..T-1 of the slowest
rank (step 0 is a synchronous warm-up for every asynchronous scheme). Ranks share this
machine's cores, so absolute numbers measure CPU contention as much as communication.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from dicesim.atomic import write_text_atomic
from dicesim.strategy import make_strategy
from validate.executor.launch import launch
from validate.executor.summary import summarize
from validate.executor.worker import RunSpec

STRATEGIES = ("sync", "data_parallel", "displaced", "interweaved", "displaced-deep", "interweaved-deep", "dice")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--worlds", default="2,4")
    ap.add_argument("--repeat", type=int, default=3, help="launches per world size; medians are reported")
    ap.add_argument("--out", default=None, help="write a markdown table here")
    args = ap.parse_args()
    rows = []
    for W in (int(w) for w in args.worlds.split(",")):
        specs = [RunSpec(strategy=make_strategy(s), model=args.model, steps=args.steps, batch=args.batch,
                         image_size=args.image_size, trace=False) for s in STRATEGIES]
        per_rep: dict[str, list[tuple[float, float]]] = {}
        summaries = {}
        for rep in range(args.repeat):
            t0 = time.perf_counter()
            outcomes = launch(specs, world_size=W, backend="gloo", timeout_s=120)
            print(f"world {W} repeat {rep}: {len(specs)} strategies in {time.perf_counter() - t0:.1f} s wall",
                  flush=True)
            for out in outcomes:
                s = summarize(out)
                summaries[s["strategy"]] = s
                per_rep.setdefault(s["strategy"], []).append(
                    (float(np.median(s["step_latency_s"][1:])) * 1e3, float(np.median(s["exposed_comm_s"][1:])) * 1e3))
        for name, reps in per_rep.items():
            lat = np.array([r[0] for r in reps])
            s = summaries[name]
            rows.append((W, name, float(np.median(lat)), float(lat.min()), float(lat.max()),
                         float(np.median([r[1] for r in reps])), s["mean_lag_steps"], s["peak_held_nbytes"] / 1024))
    sync = {W: lat for W, name, lat, *_ in rows if name == "sync"}
    header = ("| ranks | strategy | step latency (ms), median [min-max] | vs sync (x) | exposed comm (ms) "
              "| mean lag (steps) | peak held (KiB/rank) |\n|---|---|---|---|---|---|---|")
    lines = [header] + [
        f"| {W} | {name} | {lat:.2f} [{lo:.2f}-{hi:.2f}] | {sync[W] / lat:.2f} | {exp:.2f} | {lag:.2f} | {kib:.1f} |"
        for W, name, lat, lo, hi, exp, lag, kib in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        head = (f"# Executor benchmark\n\nCommand: `python benchmarks/bench_executor.py --model {args.model} "
                f"--steps {args.steps} --batch {args.batch} --image-size {args.image_size} --repeat {args.repeat}`\n\n"
                f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads "
                f"in the parent, torch {torch.__version__}, gloo, 1 thread per rank.\n\n")
        write_text_atomic(head + table + "\n" + READING, args.out)


READING = """
Reading this table: the machine's CPU cores carry the 2-4 rank processes *and* gloo's
communication threads, so "overlap" mostly means the operating system interleaving them,
and the spread between repeats (min-max) is of the same order as the differences between
the asynchronous strategies. What the table shows robustly: asynchronous schemes hide part
of the all-to-all (exposed communication drops against `sync`), `data_parallel` avoids it
entirely (the model is tiny, so holding every expert is free here), lags are exactly the
plan's (displaced's 2 steps and interweaved's 1, less the synchronous first steps), and the
held bytes order displaced > interweaved > the deep variants. On GPUs, where communication
runs on its own stream and copy engines, see the simulator and docs/gpu-overlap-check.md.
"""


if __name__ == "__main__":
    main()
