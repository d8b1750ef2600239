"""Forward throughput of the fused attention kernels on the GPU in hand, as curves for attention_kernels.toml.

The step level times every attention core at a published kernel curve (dicesim/data/attention_kernels.toml,
docs/step-level.md "Attention kernels"). A GPU with its own curve reads it unscaled; the H100 and H200
have none measured on a stated form factor (SageAttention's H100 bars do not state SXM or PCIe), so they
are scaled from the FlashAttention-3 paper's H100 SXM5 figure. This script measures the curve on the
device it runs on, in the convention of the curves already there (SageAttention's bench/bench_baseline.py:
batch 4, 32 heads, non-causal, FLOPs 4 x batch x heads x head_dim x N^2), on one GPU (about 1 minute):

    PYTHONPATH=. python3 benchmarks/gpu_attention_curves.py --device cuda --out traces/gpu/attention

For each PyTorch SDPA backend (``flash``: FlashAttention-2; ``cudnn`` where this PyTorch has it), head
dim and length: the median of ``--reps`` timed calls (CUDA events, after warm-up). Writes
``attention_curves.json`` (device name, SM count, PyTorch version, every timing) and
``attention_curves.toml``: one ``[[curve]]`` per backend and head dim in attention_kernels.toml's schema,
with ``device`` set to the name the driver reports, ready to be reviewed and copied in with its source.

Smoke run on a CPU (what tests/test_gpu_attention_curves.py runs; the math backend, tiny shapes):

    PYTHONPATH=. python benchmarks/gpu_attention_curves.py --device cpu --seqs 64,128 --heads 2 --batch 1 \\
        --reps 2 --out /tmp/attn
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from dicesim.atomic import write_atomic

#: the SDPA backend behind each curve kernel name of attention_kernels.toml (KERNELS there)
BACKENDS = {"fa2": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda | cpu")
    p.add_argument("--head-dims", type=_csv_ints, default=[64, 128])
    p.add_argument("--seqs", type=_csv_ints, default=[1024, 2048, 4096, 8192, 16384, 32768])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def _time_s(fn, dev: torch.device, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls after three warm-ups (CUDA events on a GPU)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def attention_flops(batch: int, heads: int, head_dim: int, seq: int) -> float:
    """Non-causal forward FLOPs: Q K^T and P V, 2 x N^2 x head_dim each, per head and sample."""
    return 4.0 * batch * heads * head_dim * seq * seq


def measure(args: argparse.Namespace) -> dict:
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    backends = dict(BACKENDS) if dev.type == "cuda" else {"math": SDPBackend.MATH}
    rows = []
    for kernel, backend in backends.items():
        for hd in args.head_dims:
            for n in args.seqs:
                q, k, v = (torch.randn(args.batch, args.heads, n, hd, device=dev, dtype=dtype) for _ in range(3))
                try:
                    with sdpa_kernel(backend):
                        s = _time_s(lambda: F.scaled_dot_product_attention(q, k, v), dev, args.reps)
                except RuntimeError as exc:  # the backend refuses this shape or GPU: recorded, not fatal
                    rows.append({"kernel": kernel, "head_dim": hd, "seq": n, "error": str(exc).splitlines()[0]})
                    continue
                fl = attention_flops(args.batch, args.heads, hd, n)
                rows.append({"kernel": kernel, "head_dim": hd, "seq": n, "time_s": s, "tflops": fl / s / 1e12})
                del q, k, v
    props = torch.cuda.get_device_properties(dev) if dev.type == "cuda" else None
    return {"schema": "dicesim-attention-bench/1", "device": props.name if props else "cpu",
            "sms": props.multi_processor_count if props else None, "torch": torch.__version__,
            "batch": args.batch, "heads": args.heads, "dtype": str(dtype).removeprefix("torch."), "rows": rows}


def _sig4(x: float) -> float:
    """``x`` to four significant digits (a TFLOP/s reading; a CPU smoke run's are far below 0.1)."""
    return float(f"{x:.4g}")


def curves_toml(result: dict) -> str:
    """The measured curves in attention_kernels.toml's ``[[curve]]`` schema (one per kernel and head dim).
    ``arch`` and ``peak_tflops`` are left for the reviewer: they come from the GPU's profile and datasheet."""
    out = [f"# measured by benchmarks/gpu_attention_curves.py on {result['device']} (torch {result['torch']}, "
           f"{result['dtype']}, batch {result['batch']}, {result['heads']} heads, non-causal)"]
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in result["rows"]:
        if "tflops" in r:
            groups.setdefault((r["kernel"], r["head_dim"]), []).append(r)
    for (kernel, hd), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["seq"])
        out += ["", "[[curve]]", f'kernel = "{kernel}"', 'arch = "FILL IN (the profile\'s arch)"', f"head_dim = {hd}",
                f'gpu = "{result["device"]}"', f'device = "{result["device"]}"',
                "peak_tflops = 0.0  # FILL IN: the datasheet dense peak", f"sms = {result['sms'] or 0}",
                f"seq = {[r['seq'] for r in rs]}", f"tflops = {[_sig4(r['tflops']) for r in rs]}",
                'source = "FILL IN: traces/gpu/<dir>/attention_curves.json, the run\'s date and machine"']
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device (use --device cpu for a smoke run)", file=sys.stderr)
        return 2
    result = measure(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "attention_curves.json", lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))
    toml_text = curves_toml(result)
    write_atomic(out / "attention_curves.toml", lambda tmp: tmp.write_text(toml_text))
    for r in result["rows"]:
        what = f"{r['tflops']:.1f} TFLOP/s ({r['time_s'] * 1e3:.3f} ms)" if "tflops" in r else f"refused: {r['error']}"
        print(f"{r['kernel']:6s} head dim {r['head_dim']:4d} seq {r['seq']:6d}: {what}")
    print(f"wrote {out / 'attention_curves.json'} and {out / 'attention_curves.toml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
