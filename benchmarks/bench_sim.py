"""End-to-end simulator speed: seconds per ``simulate()`` call (plan, routing, engine, metrics).

Run: ``python benchmarks/bench_sim.py [--repeat 3] [--profile]``. Cases (targets from the
project brief): G/2 (40 layers, 16 experts) on 8 GPUs (dgx-h100 and 8x-rtx4090-pcie), 50 steps,
strategy dice, <= 1 s; XL/2 (28 layers, 8 experts) on 64 GPUs of ``8x-dgx-h100-ib`` (8 groups of
8, contiguous and strided placement), 50 steps, dice, <= 10 s. Reported: best process CPU time
(robust on a shared machine) and best wall time over ``--repeat`` runs, simpy event count, and the
network's plan memo hits/misses. ``--profile`` prints the top cProfile entries of each case.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from dicesim.sim.api import simulate

CASES = (
    ("G/2 x8 dgx-h100 dice", 1.0, dict(model="G/2", world_size=8, topology="dgx-h100")),
    ("G/2 x8 8x-rtx4090-pcie dice", 1.0, dict(model="G/2", world_size=8, topology="8x-rtx4090-pcie")),
    ("XL/2 x64 8x-dgx-h100-ib contiguous dice", 10.0,
     dict(model="XL/2", world_size=64, topology="8x-dgx-h100-ib", placement="contiguous")),
    ("XL/2 x64 8x-dgx-h100-ib strided dice", 10.0,
     dict(model="XL/2", world_size=64, topology="8x-dgx-h100-ib", placement="strided")),
)
COMMON = dict(strategy="dice", steps=50, batch=8, image_size=256)


def run_case(fields: dict, repeat: int) -> tuple[float, float, dict]:
    """Best CPU and wall seconds over ``repeat`` calls, and the last result's summary + meta."""
    best_cpu = best_wall = float("inf")
    out: dict = {}
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        res = simulate(**COMMON, **fields)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
        out = {**res.summary(), **res.meta}
    return best_cpu, best_wall, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    simulate(model="tiny", strategy="dice", world_size=4, topology="tiny-ring4", steps=3, batch=1,
             profile="h100-sxm")  # warm imports
    print(f"{'case':44s} {'cpu_s':>7s} {'wall_s':>7s} {'target_s':>8s}  sim step latency   memo hit/miss")
    for name, target, fields in CASES:
        cpu, wall, out = run_case(fields, args.repeat)
        ok = "ok" if cpu <= target else "SLOW"
        print(f"{name:44s} {cpu:7.3f} {wall:7.3f} {target:8.1f}  {out['step_latency_s'] * 1e3:8.3f} ms  "
              f"{out['memo_hits']}/{out['memo_misses']}  {ok}")
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(simulate, **COMMON, **fields)
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
