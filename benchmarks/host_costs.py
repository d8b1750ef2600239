"""Measure the executor's host costs on this CPU (tiny tensors) and write them as TOML.

    PYTHONPATH=. python3 benchmarks/host_costs.py [OUT.toml] [steps] [reps]

(default ``traces/host/cpu-executor.toml``). What is measured and why: :mod:`validate.hostcost`;
what reads it: ``dicesim calibrate --host-costs`` (:mod:`dicesim.calibrate.fit_host`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomli_w

from dicesim.atomic import write_atomic
from validate.hostcost import measure


def main(out: str, steps: int, reps: int) -> None:
    data = measure(steps=steps, reps=reps)
    write_atomic(Path(out), lambda tmp: tmp.write_bytes(tomli_w.dumps(data).encode("utf-8")))
    for section in ("bench", "executor"):
        for kind, row in data[section].items():
            print(f"{section:8s} {kind:15s} {row['host_s'] * 1e6:8.1f} us  launches {row['launches']:5.1f}"
                  f"  syncs {row['syncs']:4.1f}", flush=True)
    e = data["experts"]
    print(f"experts: {e['host_s'] * 1e6:.1f} us + {e['per_expert_s'] * 1e6:.1f} us per local expert; launches "
          f"{e['launches']} + {e['launches_per_expert']} per expert; syncs {e['syncs']}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else "traces/host/cpu-executor.toml", int(args[1]) if len(args) > 1 else 30,
         int(args[2]) if len(args) > 2 else 300)
