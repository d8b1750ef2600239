"""Per-op GPU timings of DiT-MoE block shapes, written as traces in the shared schema.

Run on a CUDA machine (``PYTHONPATH=. python3 benchmarks/gpu_block_timings.py OUT_DIR``).
For each model (XL/2, G/2) and per-GPU batch (1..32 images, 256 px, CFG doubles them) it
times the compute ops the simulator's cost model knows — attention half, gate, routed
experts (on the rows one rank of an 8-way expert-parallel group receives under uniform
routing), shared expert, local combine — with CUDA events, bf16, after warm-up. Every
timed repetition is one event with the op's FLOPs and bytes from ``dicesim.models``, so
``dicesim calibrate`` can fit per-op efficiencies from these files directly.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from dicesim.models import block_workload, get_model
from dicesim.trace import EventRecorder, TraceMeta, write_trace
from validate.model.blockops import block_ops, experts_per_rank
from validate.model.model import DiTMoEBlock

BATCHES = tuple(int(b) for b in sys.argv[3].split(",")) if len(sys.argv) > 3 else (1, 2, 4, 8, 16, 32)
MODELS = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("XL/2", "G/2")
EP_WORLD = 8
WARMUP, REPS = 5, 20
DT = {"cuda": torch.bfloat16, "cpu": torch.float32}  # CUDA: bf16; CPU: fp32 (a dry run)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _mark(dev: torch.device):
    """A point on the device timeline: a recorded CUDA event, or the host clock on CPU."""
    if dev.type != "cuda":
        return time.perf_counter()
    ev = torch.cuda.Event(enable_timing=True)
    ev.record()
    return ev


def _elapsed_us(base, ev) -> float:
    if isinstance(base, float):
        return (ev - base) * 1e6
    return base.elapsed_time(ev) * 1e3


def _peaks(dev: torch.device) -> dict[str, float]:
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    tflops = 10 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12
    x = torch.empty(2 * 1024**3 // 2, device=dev, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    copy_GBps = 10 * 2 * x.numel() * 2 / (time.perf_counter() - t0) / 1e9  # read + write
    return {"matmul_bf16_tflops": tflops, "device_copy_GBps": copy_GBps}


def time_model(name: str, dev: torch.device, out: Path, gpu_key: str, peaks: dict, device_name: str) -> list[dict]:
    preset = get_model(name)
    X = experts_per_rank(preset, EP_WORLD)
    block = DiTMoEBlock(preset, 0, expert_ids=tuple(range(X))).to(dev, DT[dev.type]).eval()
    rows_out = []
    for batch in BATCHES:
        wl = block_workload(preset, batch=batch, image_px=256, cfg=True)
        recv_rows = wl.routed_rows // EP_WORLD
        ops = {op: (b.fn, b.cost, b.rows) for op, b in block_ops(
            preset, block, batch=batch, image_px=256, ep_world=EP_WORLD, device=dev, dtype=DT[dev.type],
            seed=batch).items()}
        rec = EventRecorder("executor")
        with torch.inference_mode():
            for fn, _cost, _rows in ops.values():
                for _ in range(WARMUP):
                    fn()
            _sync(dev)
            base = _mark(dev)
            marks = []
            for op, (fn, cost, rows) in ops.items():
                for rep in range(REPS):
                    s = _mark(dev)
                    fn()
                    marks.append((op, rep, s, _mark(dev), cost, rows))
            _sync(dev)
        for op, rep, s, e, cost, rows in marks:
            start_us, end_us = _elapsed_us(base, s), _elapsed_us(base, e)
            rec.add(0, "compute", "compute", op, start_us, end_us, layer=0, step=rep, rows=int(rows),
                    nbytes=int(cost.nbytes), flops=float(cost.flops))
        if dev.type == "cuda":  # the same ops replayed from CUDA graphs: device time without launch cost
            offset_us = max(_elapsed_us(base, m[3]) for m in marks) + 1.0
            for op, (fn, cost, rows) in ops.items():
                graph = torch.cuda.CUDAGraph()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side), torch.inference_mode():
                    fn()
                torch.cuda.current_stream().wait_stream(side)
                with torch.cuda.graph(graph), torch.inference_mode():
                    fn()
                graph.replay()
                torch.cuda.synchronize()
                g_base = _mark(dev)
                g_marks = []
                for rep in range(REPS):
                    s = _mark(dev)
                    graph.replay()
                    g_marks.append((rep, s, _mark(dev)))
                torch.cuda.synchronize()
                for rep, s, e in g_marks:
                    rec.add(0, "compute:graph", "compute", op, offset_us + _elapsed_us(g_base, s),
                            offset_us + _elapsed_us(g_base, e), layer=0, step=rep, rows=int(rows),
                            nbytes=int(cost.nbytes), flops=float(cost.flops))
                offset_us += _elapsed_us(g_base, g_marks[-1][2]) + 1.0
                del graph
        df = rec.to_frame()
        meta = TraceMeta(
            source="executor", model=name, world_size=1, backend=dev.type, device=device_name,
            torch_version=torch.__version__, strategy="op-timings",
            scenario={"model": name, "batch": batch, "image_size": 256, "cfg": True, "dtype": "bf16",
                      "ep_world": EP_WORLD, "experts_per_rank": X, "recv_rows": recv_rows},
            extra={"what": "per-op kernel timings, CUDA events", "warmup": WARMUP, "reps": REPS, **peaks},
        )
        stem = f"{gpu_key}-{name.replace('/', '')}-b{batch}"
        write_trace(df, meta, out, stem)
        for stream in sorted(df["stream"].unique()):
            for op in ops:
                d = df[(df["name"] == op) & (df["stream"] == stream)]
                dur_us = float((d["end_us"] - d["start_us"]).median())
                rows_out.append({"gpu": gpu_key, "model": name, "batch": batch, "op": op, "stream": stream,
                                 "median_us": dur_us, "tflops": float(d["flops"].iloc[0]) / dur_us / 1e6,
                                 "rows": int(d["rows"].iloc[0])})
            print(f"{name} b{batch} [{stream}]: " + ", ".join(f"{r['op']} {r['median_us']:.1f} us"
                                                             for r in rows_out[-len(ops):]), flush=True)
    torch.cuda.empty_cache()
    return rows_out


def main(out_dir: str) -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    gpu_key = "h200" if "H200" in name else "h100" if "H100" in name else name.lower().replace(" ", "-")
    out = Path(out_dir)
    peaks = _peaks(dev) if dev.type == "cuda" else {}
    print(f"{name}: {peaks}", flush=True)
    summary = []
    for m in MODELS:
        summary += time_model(m, dev, out, gpu_key, peaks, name)
    (out / f"{gpu_key}-summary.json").write_text(json.dumps(
        {"device": name, "torch": torch.__version__, "peaks": peaks, "ops": summary}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "traces/gpu")  # [models csv] [batches csv]
