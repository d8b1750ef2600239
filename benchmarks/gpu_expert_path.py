"""GPU check of the experts' host cost (issue 21, item 4): ``ExpertBank.forward_rows`` on one device.

The held-out H200 step (traces/gpu/h200-executor) spends about 2.86 ms per layer in ``forward_rows``
with 8 local experts, where the host model gives 1.58 ms (docs/calibration.md, "Known limits"):
about 330 us of host per local expert against 171 us. Costing the counted ops with the GPU machine's
own per-launch cost gives the same 130-170 us, so the difference is something the op-level timings
never exercised. This script measures it, on one GPU (about 2 minutes):

    PYTHONPATH=. python3 benchmarks/gpu_expert_path.py --device cuda --out traces/gpu/expert-path
    CUBLASLT_HEURISTICS_CACHE_CAPACITY=0 PYTHONPATH=. python3 benchmarks/gpu_expert_path.py \\
        --device cuda --out traces/gpu/expert-path-nocache      # the cost of a heuristics miss

Smoke run on a CPU (what tests/test_gpu_expert_path.py runs, seconds):

    PYTHONPATH=. python benchmarks/gpu_expert_path.py --device cpu --model tiny --batch 1 --image-size 32 \\
        --local 3 --reps 3 --out /tmp/ep

For 1..``--local`` experts with rows, the rows of ``--batch`` images (with CFG) go through
``forward_rows`` (the executor's path: sort, one count read, gather / SwiGLU / scatter per expert) and
``forward_grouped`` (the op-level timings' path), routed two ways: ``fixed`` (the same ids every call,
as the op-level timings) and ``varying`` (new ids every call: row counts per expert change as in a
run). Per call: ``issue_s`` (host, from the call to its return, the stream drained before),
``whole_s`` (until the device is done) and ``b2b_s`` (calls back to back, per call). The per-expert
cost is the least-squares slope over the expert count. Writes ``expert_path.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dicesim.atomic import write_atomic
from dicesim.models import block_workload, get_model
from validate.model.experts import ExpertBank

PATHS = ("forward_rows", "forward_grouped")
ROUTINGS = ("fixed", "varying")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda | cpu")
    p.add_argument("--model", default="XL/2")
    p.add_argument("--batch", type=int, default=8, help="images per GPU (with CFG: twice as many rows)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--local", type=int, default=8, help="most local experts with rows")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _ids(k: int, rows: int, routing: str, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    if routing == "fixed":  # equal counts, the same every call
        return (torch.arange(rows) % k).to(dev)
    return torch.randint(0, k, (rows,), generator=gen).to(dev)


def _calls(bank: ExpertBank, path: str, rows_RD: torch.Tensor, ids: list[torch.Tensor]) -> list:
    """One zero-argument call per routing; counts for the grouped path are read before any timing."""
    if path == "forward_rows":
        return [lambda i=i: bank.forward_rows(rows_RD, i) for i in ids]
    counts = [torch.bincount(i, minlength=len(bank)).tolist() for i in ids]
    return [lambda c=c: bank.forward_grouped(rows_RD, c) for c in counts]


def _time_calls(calls: list, dev: torch.device) -> dict[str, float]:
    """Median host issue and whole time per call (stream drained before each), and back to back per call."""
    issue, whole = [], []
    for call in calls:
        _sync(dev)
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        _sync(dev)
        issue.append(t1 - t0)
        whole.append(time.perf_counter() - t0)
    _sync(dev)
    t0 = time.perf_counter()
    for call in calls:
        call()
    _sync(dev)
    return {"issue_s": float(np.median(issue)), "whole_s": float(np.median(whole)),
            "b2b_s": (time.perf_counter() - t0) / len(calls)}


def measure(args: argparse.Namespace) -> dict:
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    preset = get_model(args.model)
    local = min(args.local, preset.num_experts)
    banks = {k: ExpertBank(preset, range(k), layer=0).to(device=dev, dtype=dtype) for k in range(1, local + 1)}
    rows = block_workload(preset, batch=args.batch, image_px=args.image_size, cfg=True).routed_rows
    gen = torch.Generator().manual_seed(0)
    rows_RD = torch.randn(rows, preset.hidden, generator=gen).to(device=dev, dtype=dtype)
    out: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "model": args.model, "rows": rows, "local": local, "reps": args.reps,
                 "cublaslt_heuristics_cache_capacity": os.environ.get("CUBLASLT_HEURISTICS_CACHE_CAPACITY", "default"),
                 "runs": [], "per_expert": {}}
    with torch.inference_mode():
        for path in PATHS:
            for routing in ROUTINGS:
                ks, issue_K = [], []
                for k in range(1, local + 1):
                    ids = [_ids(k, rows, routing, gen, dev) for _ in range(args.reps + 2)]
                    calls = _calls(banks[k], path, rows_RD, ids)
                    for call in calls[:2]:  # warm-up
                        call()
                    out["runs"].append({"path": path, "routing": routing, "experts": k,
                                        **_time_calls(calls[2:], dev)})
                    issue_K.append(out["runs"][-1]["issue_s"])
                    ks.append(k)
                slope, fixed = np.polyfit(np.array(ks, float), np.array(issue_K), 1) if len(ks) > 1 else (0.0, 0.0)
                out["per_expert"][f"{path}/{routing}"] = {"per_expert_s": float(slope), "fixed_s": float(fixed)}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bad = [f"--{n} {v}" for n, v in (("local", args.local), ("reps", args.reps), ("batch", args.batch)) if v < 1]
    if bad or args.device not in ("cuda", "cpu"):
        print(f"gpu_expert_path: {(bad or [f'--device {args.device}'])[0]} (allowed: --local, --reps, --batch >= 1; "
              f"--device cuda or cpu)", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_expert_path: --device cuda but no CUDA device here (allowed: cuda on a GPU machine, cpu)",
              file=sys.stderr)
        return 2
    res = measure(args)
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    write_atomic(dest / "expert_path.json", lambda tmp: tmp.write_text(json.dumps(res, indent=1)))
    print(f"{res['device']}, {res['model']}, {res['rows']} rows, cuBLASLt heuristics cache "
          f"{res['cublaslt_heuristics_cache_capacity']}")
    for key, fit in res["per_expert"].items():
        print(f"{key:26s} host per local expert {fit['per_expert_s'] * 1e6:8.1f} us  + {fit['fixed_s'] * 1e6:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
