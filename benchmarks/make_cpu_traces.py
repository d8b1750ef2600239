"""Regenerate the CPU reference traces in ``traces/cpu/`` (executor on gloo, ``small`` model), or any
other set of strategy presets of any family (``--strategies``; the sequence family's set is ``traces/cpu-seq/``).

One process group per world size: every (batch, strategy preset) runs in it, ``--reps``
times, interleaved (one start-up for all of them); rank 0 writes each run's trace as
``cpu-small-w<W>-b<B>-<strategy>-r<rep>.events.parquet``. Only the runs named in ``--json-for``
also keep their Chrome JSON twin (for Perfetto); the rest stay Parquet-only to keep the
directory small. The output directory's ``README.md`` is rewritten with the command of every run.
Each rank runs its strategy's family's executor (:func:`validate.executor.families.run_rank`).

    PYTHONPATH=. python benchmarks/make_cpu_traces.py traces/cpu
    PYTHONPATH=. python benchmarks/make_cpu_traces.py traces/cpu-seq --strategies sp,distrifusion,ulysses \
        --json-for cpu-small-w2-b2-distrifusion-r0
    PYTHONPATH=. python benchmarks/make_cpu_traces.py /tmp/cpu --world-sizes 2 --batches 1,2 --steps 4

Each run is equivalent to
``python -m validate run --world-size W --backend gloo --model small --strategy S --steps T
--batch B --image-size 64 --trace-out DIR`` (the script only batches them per process group).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from pathlib import Path

STRATEGIES = ("sync", "displaced", "interweaved", "displaced-deep", "interweaved-deep", "dice", "data_parallel")
JSON_FOR = ("cpu-small-w2-b2-sync-r0", "cpu-small-w2-b2-dice-r0")
#: how a set whose presets are all of one family is used (the expert family's set calibrates; any other is
#: predicted from it, never fitted on: docs/accuracy-sequence.md)
USED_BY = {
    "expert_parallel": "Used by `dicesim calibrate {out}` and `dicesim accuracy {out}` (see docs/accuracy.md).",
    "sequence": "Used by `dicesim accuracy traces/cpu {out} --fit-on 'family == \"expert_parallel\" and batch in (1, 4)' "
                "--reps median --collectives traces/cpu-collectives/gloo-collectives-v1.csv --out docs/accuracy-sequence.md`: "
                "every run here is held out (predicted by a calibration fitted on expert-parallel runs only, its "
                "all-gathers and ring passes on a gloo microbenchmark; see docs/accuracy-sequence.md).",
}


def _csv_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _csv_strategies(text: str) -> list[str]:
    """Preset names of any family, comma-separated; argparse turns the error into one line, exit 2."""
    from dicesim.strategy import STRATEGY_NAMES

    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in STRATEGY_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown strategy preset {', '.join(bad) or '(none)'} "
                                         f"(allowed: {', '.join(STRATEGY_NAMES)})")
    return names


def _rank_main(rank: int, world_size: int, port: int, specs: list, stems: list, out: str,
               json_for: list) -> None:
    """One rank: run every spec in one gloo process group; rank 0 writes each run's trace itself.

    Writing from rank 0 (rather than shipping results to the launcher through a
    multiprocessing queue) keeps the samples tensors out of inter-process fd passing.
    """
    import datetime as dt

    import torch
    import torch.distributed as dist

    from validate.executor.launch import RunOutcome
    from validate.executor.summary import write_run_trace
    from validate.executor.tracing import clock_offsets_ns
    from validate.executor.families import run_rank
    from validate.executor.worker import GroupCache

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=dt.timedelta(seconds=120))
    groups = GroupCache()
    offsets, method = clock_offsets_ns(world_size)
    for spec, stem in zip(specs, stems):
        result = run_rank(spec, rank=rank, world_size=world_size, device=torch.device("cpu"), groups=groups)
        every = [None] * world_size if rank == 0 else None
        dist.gather_object(result, every, dst=0)
        if rank == 0:
            outcome = RunOutcome(spec=spec, world_size=world_size, backend="gloo", ranks=every,
                                 clock_offsets_ns=offsets, clock_method=method)
            paths = write_run_trace(outcome, out, stem)
            if stem not in json_for:
                paths["json"].unlink(missing_ok=True)
    dist.barrier()
    dist.destroy_process_group()


def _run_group(world_size: int, args: argparse.Namespace, out: Path) -> list[str]:
    """Every (batch, strategy) ``args.reps`` times in one process group, interleaved: repetition 0
    of every configuration, then repetition 1, ... (the strategy order rotates per repetition),
    so a slow spell of a shared machine hits all configurations alike instead of one of them."""
    import torch.multiprocessing as tmp

    from validate.executor.launch import free_port

    from dicesim.strategy import make_strategy
    from validate.executor.worker import RunSpec

    names = list(args.strategies)
    order = [(rep, b, names[(i + 2 * rep) % len(names)]) for rep in range(args.reps) for b in args.batches
             for i in range(len(names))]
    specs = [RunSpec(strategy=make_strategy(s), model=args.model, steps=args.steps, batch=b,
                     image_size=args.image_size, seed=0, trace=True) for _, b, s in order]
    for spec in specs:
        spec.check(world_size)
    stems = [f"cpu-{args.model}-w{world_size}-b{b}-{name}-r{rep}" for rep, b, name in order]
    tmp.start_processes(_rank_main, args=(world_size, free_port(), specs, stems, str(out), list(args.json_for)),
                        nprocs=world_size, join=True, start_method="spawn")
    return [f"| `cpu-{args.model}-w{world_size}-b{b}-{name}-r{{0..{args.reps - 1}}}` | `python -m validate run "
            f"--world-size {world_size} --backend gloo --model {args.model} --strategy {name} --steps {args.steps} "
            f"--batch {b} --image-size {args.image_size} --trace-out DIR` |" for b in args.batches for name in names]


def _command(out: Path, argv: list[str]) -> str:
    """The command that made this directory: the script, the output directory and the flags given."""
    flags = [a for a in argv if Path(a) != out]
    return " ".join(["PYTHONPATH=. python benchmarks/make_cpu_traces.py", out.as_posix(), *flags])


def _used_by(out: Path, strategies: list[str]) -> str:
    from dicesim.strategy import make_strategy

    families = sorted({make_strategy(s).family for s in strategies})
    if len(families) != 1 or families[0] not in USED_BY:
        return f"Strategy families: {', '.join(families)} (see docs/accuracy.md)."
    return USED_BY[families[0]].format(out=out.as_posix())


def _readme(out: Path, rows: list[str], args: argparse.Namespace, elapsed_s: float, command: str,
            load: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    import torch

    from dicesim.strategy import make_strategy

    families = sorted({make_strategy(s).family for s in args.strategies})
    of = "" if families == ["expert_parallel"] else f", {' and '.join(families)} family"
    text = f"""# CPU reference traces (executor on gloo, `{args.model}` model{of})

Captured on {_dt.date.today().isoformat()} on {platform.machine()} with {os.cpu_count()} CPU cores
({platform.processor() or 'unknown CPU'}), torch {torch.__version__}, gloo backend, one torch thread
per rank, fp32, {args.image_size} px images (CFG on), {args.steps} steps, seed 0, {args.reps} repetitions of
every run (interleaved across batches and strategies); total {elapsed_s:.0f} s; strategies
{', '.join(f'`{s}`' for s in args.strategies)}.
All ranks of a run share this machine's cores, and other processes may have been running (load average
over 1/5/15 min, this script's own ranks included: {' / '.join(f'{v:.2f}' for v in load[0])} at the start, {' / '.join(f'{v:.2f}' for v in load[1])}
at the end): treat the timings as what a small, busy CPU box measures, not as a benchmark.

Regenerate with

    {command}

which runs every configuration of one world size in one process group, repetitions interleaved.
Each run is the same as the single command listed below (trace stems differ: the script names
them by world size, batch and repetition `-r<k>`; `dicesim accuracy` treats the repetitions of
one configuration as one measurement). Every trace is `<stem>.events.parquet` (schema
`dicesim-trace/1`; `meta.extra` holds the router histogram per rank, step, layer and expert,
the placement and the executor's own summary); {', '.join(f'`{s}`' for s in args.json_for)} also
have a `.trace.json` for Perfetto.

{_used_by(out, list(args.strategies))}

| trace stems | equivalent command |
|---|---|
""" + "\n".join(rows) + "\n"
    tmp = out / ".README.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "README.md")


def main(argv: list[str] | None = None) -> int:
    """Run the grid and write traces plus README into the output directory."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--world-sizes", type=_csv_ints, default=[2, 4])
    ap.add_argument("--batches", type=_csv_ints, default=[1, 2, 4])
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every run (interleaved)")
    ap.add_argument("--strategies", type=_csv_strategies, default=list(STRATEGIES),
                    help="strategy presets, comma-separated, of any family (default: the expert-parallel set of "
                         "traces/cpu; traces/cpu-seq: sp,distrifusion,ulysses)")
    ap.add_argument("--model", default="small")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--json-for", type=lambda s: s.split(","), default=list(JSON_FOR))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    t0 = time.monotonic()
    rows: list[str] = []
    for w in args.world_sizes:
        print(f"world size {w}: batches {args.batches} x {len(args.strategies)} strategies x {args.reps} reps",
              file=sys.stderr, flush=True)
        rows += _run_group(w, args, args.out)
    _readme(args.out, rows, args, time.monotonic() - t0, _command(args.out, argv), (load0, os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
