"""GPU check of the overlap model (issue 8, item 4): host-staged executor runs vs the simulator.

On a machine with one CUDA GPU (an H100 or H200; about 5 minutes, see docs/gpu-overlap-check.md):

    PYTHONPATH=. python3 benchmarks/gpu_overlap_check.py --device cuda --out traces/gpu/overlap

Smoke run on a CPU (what tests/test_gpu_overlap_check.py runs, seconds):

    PYTHONPATH=. python benchmarks/gpu_overlap_check.py --device cpu --model tiny --world-size 2 \\
        --batches 1 --steps 4 --image-size 32 --dtype fp32 --out /tmp/overlap

1. measures the copy path: device -> pinned host, host -> device, both at once, and the staged
   round trip through the executor's own copy path (``copy_bandwidth.json``); then a preflight:
   the tiny model through every strategy, host-staged against the emulation (seconds; stops the
   script before the model build if the copy path is broken);
2. runs sync, displaced, interweaved and dice as ``--world-size`` host-staged emulated ranks
   (as ``python -m validate run --transport host-staged``), one model for all runs, after a
   short warm-up run, and writes each trace (``hs-<model>-w<W>-b<B>-<strategy>``);
3. ``--verify`` (default): the first batch's runs again without copies (the emulation); the
   samples must agree (max |difference| reported);
4. simulates every run twice on the one-GPU host-staged topology: ``shipped`` (the built-in
   profile and topology as they are) and ``refit`` (compute and collective latencies fitted on
   the sync runs, the measured staged bandwidth on the PCIe links; asynchronous runs held out);
5. writes ``overlap_check.json``, ``overlap_check.md`` and ``README.md`` into ``--out`` and
   prints the tables.

``--simulate-only`` repeats steps 4-5 from the files an earlier run left in ``--out`` (no device
needed), e.g. on another machine if the simulation failed after the device runs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

STRATEGIES = ("sync", "displaced", "interweaved", "dice")


def _csv_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda | cpu")
    p.add_argument("--model", default="XL/2")
    p.add_argument("--world-size", type=int, default=8, help="emulated ranks")
    p.add_argument("--batches", type=_csv_ints, default=[8, 16], help="images per emulated rank, comma-separated")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default=None, help="default: h200-calibrated on an H200, else h100-calibrated")
    p.add_argument("--topology", default=None, help="default: 1x-h200-host-staged on an H200, else 1x-h100-...")
    p.add_argument("--no-verify", dest="verify", action="store_false")
    p.add_argument("--copy-mib", type=int, default=256, help="bytes per copy in the bandwidth probe (MiB)")
    p.add_argument("--out", default="traces/gpu/overlap")
    p.add_argument("--simulate-only", action="store_true", help="reuse the traces and logs already in --out")
    return p.parse_args(argv)


def _rate_Bps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds if seconds > 0 else float("nan")


def copy_bandwidth(device, mib: int, reps: int = 5) -> dict[str, float]:
    """Copy bandwidths (bytes/s): each direction alone, both at once, and the staged round trip."""
    import torch

    from validate.executor.copypath import make_copy_path

    n = mib << 20
    cuda = device.type == "cuda"
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    host, host2 = (torch.empty(n, dtype=torch.uint8, pin_memory=cuda) for _ in range(2))
    streams = (torch.cuda.Stream(device), torch.cuda.Stream(device)) if cuda else (None, None)

    def timed(*copies) -> float:  # seconds per repetition, all copies at once, each on its own stream
        for _ in range(2):
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                for s, fn in zip(streams, copies):
                    if cuda:
                        with torch.cuda.stream(s):
                            fn()
                    else:
                        fn()
            if cuda:
                torch.cuda.synchronize(device)
            elapsed = (time.perf_counter() - t0) / reps  # second pass: warm
        return elapsed

    d2h = lambda: host.copy_(src, non_blocking=cuda)  # noqa: E731
    h2d = lambda: dst.copy_(host2, non_blocking=cuda)  # noqa: E731
    both_s = timed(d2h, h2d)
    path = make_copy_path(device)
    rows = src.view(-1, 4096)
    every = torch.arange(rows.shape[0], device=device)
    none = every[:0]

    def staged() -> None:
        path.start(rows, dst.view(-1, 4096), every, none, ready=None).wait()
        if cuda:
            torch.cuda.current_stream(device).synchronize()

    staged()
    t0 = time.perf_counter()
    for _ in range(reps):
        staged()
    staged_s = (time.perf_counter() - t0) / reps
    path.close()
    return {"nbytes": n, "d2h_Bps": _rate_Bps(n, timed(d2h)), "h2d_Bps": _rate_Bps(n, timed(h2d)),
            "both_each_way_Bps": _rate_Bps(n, both_s), "staged_round_trip_Bps": _rate_Bps(n, staged_s)}


def preflight(dev, strategies: list[str]) -> dict[str, float]:
    """The tiny model through every strategy, host-staged against the emulation, before the big build:
    a broken copy path fails here in seconds. Max |difference| of the samples per strategy."""
    from dicesim.strategy import make_strategy
    from validate.executor.hoststaged import run_host_staged
    from validate.executor.worker import RunSpec, run_emulated

    out = {}
    for name in strategies:
        spec = RunSpec(strategy=make_strategy(name), steps=3, batch=2, trace=False)
        got = run_host_staged(spec, 4, dev, min_chunk_nbytes=1024).outcome.ranks[0].samples_BCLL
        out[name] = (got - run_emulated(spec, 4, dev).samples_BCLL).abs().max().item()
        if not out[name] <= 1e-4:
            raise SystemExit(f"preflight: host-staged {name} differs from the emulation by {out[name]:.3g}")
    return out


def run_all(args: argparse.Namespace, dev, out: Path) -> tuple[list[Path], dict]:
    """Every host-staged run (traces written) and the verification against the emulation."""
    import torch

    from dicesim.strategy import make_strategy
    from validate.executor.hoststaged import run_host_staged
    from validate.executor.worker import RunSpec, build_model, run_emulated

    W = args.world_size
    strategies = [s for s in args.strategies.split(",") if s]
    if "sync" not in strategies:
        strategies.insert(0, "sync")  # the reference of the compute slow-down and of the refit
    base = RunSpec(strategy=make_strategy("sync"), model=args.model, steps=args.steps, batch=args.batches[0],
                   image_size=args.image_size, dtype=args.dtype, seed=args.seed)
    t0 = time.perf_counter()
    log = {"preflight_max_abs_diff": preflight(dev, strategies), "preflight_s": time.perf_counter() - t0}
    print(f"preflight (tiny model, host-staged vs emulated): {log['preflight_max_abs_diff']}", flush=True)
    t0 = time.perf_counter()
    model = build_model(replace(base, batch=W * base.batch), None, dev)
    log["model_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_host_staged(replace(base, steps=2), W, dev, model=model)  # warm-up: kernels, allocators, pinned pool
    log["warmup_s"] = time.perf_counter() - t0
    paths, runs_log, verify = [], [], {}
    for b in args.batches:
        for name in strategies:
            spec = replace(base, strategy=make_strategy(name), batch=b)
            t0 = time.perf_counter()
            run = run_host_staged(spec, W, dev, model=model)
            stem = f"hs-{spec.preset.name.replace('/', '')}-w{W}-b{b}-{name}"
            files = run.write_trace(out, stem)
            s = run.summary()
            runs_log.append({"stem": stem, "wall_s": time.perf_counter() - t0,
                             "mean_step_latency_s": s["mean_step_latency_s"],
                             "step_latency_s": s["step_latency_s"], "peak_held_nbytes": s["peak_held_nbytes"]})
            print(f"{stem}: {s['mean_step_latency_s'] * 1e3:.1f} ms/step, "
                  f"{sum(s['staged_nbytes_per_step']) / 2**20:.1f} MiB through host memory", flush=True)
            paths.append(files["parquet"])
            if args.verify and b == args.batches[0]:
                ref = run_emulated(replace(spec, trace=False), W, dev, model=model)
                diff = (ref.samples_BCLL - run.outcome.ranks[0].samples_BCLL).abs().max().item()
                verify[name] = {"max_abs_diff": diff, "bitwise_equal": diff == 0.0}
            del run
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return paths, {**log, "runs": runs_log, "verify": verify}


def simulate_all(paths: list[Path], profile_name: str, topology: str, bw: dict) -> dict[str, list]:
    """Simulate every run with the shipped profile and with the sync-refit one; the check rows of both."""
    from dicesim.calibrate.overlap.check import check_rows, refit_on_sync, simulate_trace
    from dicesim.calibrate.runs import load_runs
    from dicesim.sim.costs.profile import get_profile
    from dicesim.topology import get_topology
    from dicesim.topology.graph import LinkSpec
    from dicesim.topology.host_staged import one_gpu_host_staged

    runs = load_runs(paths)
    prof = get_profile(profile_name)
    shipped = check_rows([(r, simulate_trace(r, prof, topology)) for r in runs])
    staged_Bps = bw["staged_round_trip_Bps"]
    refit_prof = refit_on_sync([r for r in runs if r.strategy_name == "sync"], prof, staged_Bps)
    gpu = get_topology(topology).graph["gpu"]
    G = one_gpu_host_staged(gpu, name=f"{topology}-measured", host_link=LinkSpec(
        bw_Bps=staged_Bps, latency_s=0.6e-6, link="pcie5", source="generic"))
    refit = check_rows([(r, simulate_trace(r, refit_prof, G)) for r in runs])
    return {"shipped": shipped, "refit": refit, "refit_profile": refit_prof}


def report(log: dict, device_name: str, torch_version: str, bw: dict, tables: dict, profile: str, topology: str,
           sim_s: float) -> str:
    """README / overlap_check.md: how the files were made, the copy path, both error tables."""
    from dicesim.calibrate.overlap.check import markdown_table

    a = log["run"]
    cmd = "PYTHONPATH=. python3 benchmarks/gpu_overlap_check.py " + " ".join(log["argv"])
    verify = ", ".join(f"{k} {v['max_abs_diff']:.3g}" for k, v in log["verify"].items()) or "not run"
    return (
        f"# Host-staged overlap check: {a['model']}, {a['world_size']} emulated ranks on one {device_name}\n\n"
        f"Captured {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')} with torch {torch_version}:\n\n"
        f"    {cmd}\n\n"
        f"Device part {log['device_wall_s']:.0f} s (model build {log['model_build_s']:.0f} s), simulation "
        f"{sim_s:.0f} s. Batches {a['batches']} images per emulated rank (CFG doubles them), {a['image_size']} px, "
        f"{a['dtype']}, {a['steps']} steps; step 0 is left out of every mean. Traces: `hs-*.events.parquet` / "
        f"`.trace.json` (shared schema, world size 1, `meta.extra.host_staged`); `runs.json`: per-run wall time "
        f"and step latencies.\n\n"
        f"Copy path (`copy_bandwidth.json`, {bw['nbytes'] >> 20} MiB copies): device->host "
        f"{bw['d2h_Bps'] / 1e9:.1f} GB/s, host->device {bw['h2d_Bps'] / 1e9:.1f} GB/s, both at once "
        f"{bw['both_each_way_Bps'] / 1e9:.1f} GB/s each way, staged round trip {bw['staged_round_trip_Bps'] / 1e9:.1f}"
        f" GB/s.\n\nHost-staged vs emulated samples, max |difference|: {verify} (preflight, tiny model: "
        f"{', '.join(f'{k} {v:.3g}' for k, v in log['preflight_max_abs_diff'].items())}).\n\n"
        f"## Shipped: profile `{profile}`, topology `{topology}`\n\n{markdown_table(tables['shipped'])}\n"
        f"## Refit: compute and collective latencies fitted on the sync runs, links at the staged bandwidth\n\n"
        f"Asynchronous strategies are held out; `sync` rows are fitted. Interference stays "
        f"`{tables['refit_profile'].interference:g}` (the profile's): that is what this tests.\n\n"
        f"{markdown_table(tables['refit'])}")


def _finite(x):
    """JSON without NaN: non-finite floats become null."""
    if isinstance(x, float):
        return x if x == x and abs(x) != float("inf") else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import torch

    from dicesim.atomic import write_text_atomic
    from validate.executor.hoststaged import checked_device

    t_start = time.perf_counter()
    out = Path(args.out)
    if args.simulate_only:
        bw = json.loads((out / "copy_bandwidth.json").read_text())
        name = bw.pop("device")
        log = json.loads((out / "runs.json").read_text())
        paths = sorted(out.glob("hs-*.events.parquet"))
    else:
        dev = checked_device(args.device)
        if dev.type == "cpu":
            torch.set_num_threads(1)  # the copy worker thread is the second
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        out.mkdir(parents=True, exist_ok=True)
        bw = copy_bandwidth(dev, args.copy_mib)
        write_text_atomic(json.dumps(_finite({"device": name, **bw}), indent=1), out / "copy_bandwidth.json")
        print(f"{name}: " + ", ".join(f"{k} {v / 1e9:.1f} GB/s" for k, v in bw.items() if k.endswith("Bps")),
              flush=True)
        paths, log = run_all(args, dev, out)
        log.update(argv=argv, device_wall_s=time.perf_counter() - t_start,
                   run={k: getattr(args, k) for k in ("model", "world_size", "batches", "steps", "image_size",
                                                       "dtype", "seed")})
        write_text_atomic(json.dumps(_finite(log), indent=1), out / "runs.json")
    h200 = "H200" in name
    profile = args.profile or ("h200-calibrated" if h200 else "h100-calibrated")
    topology = args.topology or ("1x-h200-host-staged" if h200 else "1x-h100-host-staged")
    t_sim = time.perf_counter()
    tables = simulate_all(paths, profile, topology, bw)
    text = report(log, name, torch.__version__, bw, tables, profile, topology, time.perf_counter() - t_sim)
    write_text_atomic(text, out / "overlap_check.md")
    write_text_atomic(text, out / "README.md")
    doc = {"device": name, "torch": torch.__version__, "argv": argv, "profile": profile, "topology": topology,
           "copy_bandwidth": bw, "log": log,
           "shipped": [asdict(r) for r in tables["shipped"]], "refit": [asdict(r) for r in tables["refit"]],
           "refit_profile": tables["refit_profile"].model_dump(mode="json")}
    write_text_atomic(json.dumps(_finite(doc), indent=1, allow_nan=False), out / "overlap_check.json")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
