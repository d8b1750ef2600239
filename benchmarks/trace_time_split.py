"""Where a traced run's step time goes on the compute track: ops, waits, and the gaps between them.

For the representative repetition of every configuration in the given trace directories (the one
``dicesim accuracy --reps median`` uses), per rank and step (steps >= 1, mean over ranks and steps), in ms:

- ``ops``: compute-track ops; ``other_gaps``: host time before an op that no event covers;
- ``waits``: wait events (what ``dicesim accuracy`` counts as measured exposed communication, with the
  host work around a count exchange);
- ``gap_before_waits``: the time between the previous compute-track event and a wait. When a blocking
  collective has completed before its wait starts (the issuing call held the host thread), its time
  lands here and not in the wait.

    PYTHONPATH=. python benchmarks/trace_time_split.py traces/cpu-seq

Only reads traces; simulates nothing (docs/sequence-parallel.md, "Timing against CPU measurements").
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from dicesim.calibrate.accuracy import representatives
from dicesim.calibrate.measure import FIRST_STEP
from dicesim.calibrate.runs import TraceRun, load_runs


def time_split_ms(run: TraceRun) -> dict[str, float]:
    """Mean per rank and step (steps >= FIRST_STEP) of ops, waits and the gaps before each, in ms."""
    ev = run.events
    track = ev[(ev["stream"] == "compute") & ev["kind"].isin(("compute", "wait")) & (ev["step"] >= 0)]
    parts = []
    for _, g in track.sort_values(["rank", "start_us", "end_us"], kind="stable").groupby("rank"):
        gap = (g["start_us"] - g["end_us"].shift(1)).clip(lower=0).fillna(0.0)
        parts.append(g.assign(gap_us=gap, dur_us=g["end_us"] - g["start_us"]))
    t = pd.concat(parts)
    t = t[t["step"] >= FIRST_STEP]
    n = t["step"].nunique() * t["rank"].nunique() * 1e3
    wait = t["kind"] == "wait"
    return {"ops": t.loc[~wait, "dur_us"].sum() / n, "other_gaps": t.loc[~wait, "gap_us"].sum() / n,
            "waits": t.loc[wait, "dur_us"].sum() / n, "gap_before_waits": t.loc[wait, "gap_us"].sum() / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="+")
    args = ap.parse_args(argv)
    rows = []
    for key, (run, m, _) in representatives(load_runs(args.traces)).items():
        rows.append({"configuration": key, "step": m["step_latency_s"] * 1e3, **time_split_ms(run)})
    df = pd.DataFrame(rows)
    print("| configuration | measured step (ms) | ops | other gaps | waits | gaps before waits |")
    print("|---|---|---|---|---|---|")
    for r in df.itertuples():
        print(f"| {r.configuration} | {r.step:.1f} | {r.ops:.1f} | {r.other_gaps:.1f} | {r.waits:.1f} | "
              f"{r.gap_before_waits:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
