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
    PYTHONPATH=. python benchmarks/trace_time_split.py traces/cpu-seq --stretch distrifusion:sp:kv_gather

``--stretch S:REF:COLL``: every compute op of S's runs (steps >= 1, every repetition) divided by the median
of the same op in REF's runs of the same world size and batch, split by whether one of the rank's own
``COLL`` collectives was in flight during the op (how much the op slowed while it ran).

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


def op_stretch(runs: list[TraceRun], strategy: str, ref: str, coll: str) -> pd.DataFrame:
    """Per (world size, batch): mean and median op time of ``strategy`` over ``ref``'s median of the same op,
    during one of the rank's own ``coll`` collectives and outside them."""
    out = []
    for (w, b) in sorted({(r.world_size, r.batch) for r in runs if r.strategy_name == strategy}):
        mine = [r for r in runs if (r.world_size, r.batch) == (w, b)]
        base: dict[str, list[float]] = {}
        for r in (r for r in mine if r.strategy_name == ref):
            c = r.events[(r.events["kind"] == "compute") & (r.events["step"] >= FIRST_STEP)]
            for name, g in c.groupby("name"):
                base.setdefault(name, []).extend((g["end_us"] - g["start_us"]).tolist())
        med = {n: float(pd.Series(v).median()) for n, v in base.items()}
        during, outside = [], []
        for r in (r for r in mine if r.strategy_name == strategy):
            ev = r.events[r.events["step"] >= FIRST_STEP]
            kv = ev[(ev["kind"] == "collective") & (ev["name"] == coll)]
            for x in ev[ev["kind"] == "compute"].itertuples():
                if x.name not in med:
                    continue
                k = kv[kv["rank"] == x.rank]
                hit = bool(((k["start_us"] < x.end_us) & (k["end_us"] > x.start_us)).any())
                (during if hit else outside).append((x.end_us - x.start_us) / med[x.name])
        d, o = pd.Series(during, dtype=float), pd.Series(outside, dtype=float)
        out.append({"world size": w, "batch": b, "ops during": len(d), "mean during": d.mean(),
                    "median during": d.median(), "ops outside": len(o), "mean outside": o.mean(),
                    "median outside": o.median()})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--stretch", help="S:REF:COLL: op times of S over REF's, during and outside S's COLL")
    args = ap.parse_args(argv)
    runs = load_runs(args.traces)
    if args.stretch:
        parts = args.stretch.split(":")
        if len(parts) != 3:
            ap.error(f"--stretch {args.stretch!r}: expected STRATEGY:REFERENCE:COLLECTIVE, "
                     "e.g. distrifusion:sp:kv_gather")
        t = op_stretch(runs, *parts)
        print("| " + " | ".join(t.columns) + " |\n|" + "---|" * len(t.columns))
        for r in t.itertuples(index=False):
            print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r) + " |")
        return 0
    rows = []
    for key, (run, m, _) in representatives(runs).items():
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
