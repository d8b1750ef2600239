"""Host cost of diffusers' DiT blocks on this CPU (tiny tensors): a check of the step model's host per kernel.

    python3 -m pip install diffusers==0.32.1      # only this benchmark needs it (not a dicesim dependency)
    PYTHONPATH=. python3 benchmarks/host_diffusers_blocks.py [OUT.toml] [reps] [rounds]

(default ``traces/host/cpu-diffusers-blocks.toml``). The step model (docs/step-level.md, "Host") charges an
eager block its counted kernels x 17.2 us, the host cost per kernel of the *executor's* ops on the H100
machine. The published runs ran *diffusers'* blocks (xDiT, ParaAttention, cache-dit all call them), whose
Python around each kernel could be heavier. This measures it the way :mod:`validate.hostcost` measures the
executor's ops: each block's forward on tiny bf16 tensors (its kernels next to free on CPU), this thread's
CPU time, the ``QUANTILE`` of interleaved calls, its ATen kernel launches counted by the same dispatch mode.
Each round also times the op-level ops (:func:`validate.hostcost.measure_bench`), and a block's figure is
its median ratio to the round's op-level total times the committed op-level total
(``traces/host/cpu-executor.toml``): the file is on the same CPU scale as the one ``rho`` and ``tau`` were
fitted with, whatever CPU runs this. :mod:`dicesim.calibrate.host_blocks` maps it onto a GPU machine's host.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tomli_w
import torch

from dicesim.atomic import write_atomic
from dicesim.calibrate.fit_host import DEFAULT_HOST_COSTS, load_host_costs
from validate.hostcost import QUANTILE, _clock, _Counter, _Probe, measure_bench

DIFFUSERS_VERSION = "0.32.1"
#: the probe's shape: hidden = heads x head dim = 32 (the executor probe's width), 8 image + 4 text tokens
HEADS, HEAD_DIM, IMG_TOKENS, TXT_TOKENS = 2, 16, 8, 4
DTYPE = torch.float32  # as the op-level probe (validate.hostcost): bf16 kernels on CPU add their own time


def _blocks() -> dict[str, tuple[str, Callable[[], object]]]:
    """Block name -> (diffusers class, a call of its forward on tiny tensors)."""
    from diffusers.models.embeddings import FluxPosEmbed
    from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
    from diffusers.models.transformers.sana_transformer import SanaTransformerBlock
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

    D, g = HEADS * HEAD_DIM, torch.Generator().manual_seed(0)

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(DTYPE)

    def made(m: torch.nn.Module) -> torch.nn.Module:
        return m.to(DTYPE).eval()

    x, c, xs, temb = t(1, IMG_TOKENS, D), t(1, TXT_TOKENS, D), t(1, IMG_TOKENS + TXT_TOKENS, D), t(1, D)
    rot = FluxPosEmbed(theta=10000, axes_dim=[4, 6, 6])(torch.zeros(IMG_TOKENS + TXT_TOKENS, 3))
    double = made(FluxTransformerBlock(dim=D, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM))
    single = made(FluxSingleTransformerBlock(dim=D, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM))
    cog = made(CogVideoXBlock(dim=D, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, time_embed_dim=D))
    sana = made(SanaTransformerBlock(dim=D, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
                                     num_cross_attention_heads=HEADS, cross_attention_head_dim=HEAD_DIM,
                                     cross_attention_dim=D))
    sana_t = t(1, 6 * D)
    return {
        "flux_double": ("FluxTransformerBlock", lambda: double(hidden_states=x, encoder_hidden_states=c, temb=temb,
                                                                image_rotary_emb=rot)),
        "flux_single": ("FluxSingleTransformerBlock", lambda: single(hidden_states=xs, temb=temb,
                                                                      image_rotary_emb=rot)),
        "cogvideox": ("CogVideoXBlock", lambda: cog(hidden_states=x, encoder_hidden_states=c, temb=temb)),
        "sana": ("SanaTransformerBlock", lambda: sana(hidden_states=x, encoder_hidden_states=c, timestep=sana_t,
                                                      height=2, width=IMG_TOKENS // 2)),
    }


def _round(blocks: dict, reps: int) -> tuple[dict[str, float], float]:
    """One round: each block's host seconds and the op-level ops' total, timed back to back."""
    bench_total = sum(r["host_s"] for r in measure_bench(reps=reps).values())
    times: dict[str, list[float]] = defaultdict(list)
    with torch.inference_mode():
        for _ in range(reps):  # interleaved: a disturbance hits every block alike
            for name, (_, fn) in blocks.items():
                t0 = _clock()
                fn()
                times[name].append(_clock() - t0)
    return {k: float(np.quantile(v, QUANTILE)) for k, v in times.items()}, bench_total


def measure(*, reps: int = 300, rounds: int = 5) -> dict:
    import diffusers

    torch.set_num_threads(1)
    blocks = _blocks()
    probe = _Probe()
    with torch.inference_mode(), _Counter(probe):
        for name, (_, fn) in blocks.items():
            probe.wrap(name, fn)()
    runs = [_round(blocks, reps) for _ in range(rounds)]
    committed = load_host_costs(DEFAULT_HOST_COSTS)
    scale = sum(r.host_s for r in committed.bench.values())
    totals = np.array([total for _, total in runs])
    out = {}
    for name, (cls, _) in blocks.items():
        raw = np.array([times[name] for times, _ in runs])
        out[name] = {"diffusers_class": cls, "host_s": float(np.median(raw / totals) * scale),
                     "raw_host_s": float(np.median(raw)), "launches": probe.launches[name],
                     "syncs": probe.syncs[name]}
    meta = {"device": "cpu", "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "python": platform.python_version(),
            "date": _dt.date.today().isoformat(), "quantile": QUANTILE, "reps": reps, "rounds": rounds,
            "dtype": str(DTYPE).removeprefix("torch."),
            "shape": f"hidden {HEADS * HEAD_DIM} ({HEADS} heads of {HEAD_DIM}), "
                                     f"{IMG_TOKENS} image + {TXT_TOKENS} text tokens, batch 1",
            "scale": f"host_s = median over rounds of (block / round's op-level total) x the op-level total of "
                     f"{DEFAULT_HOST_COSTS} ({scale * 1e6:.1f} us); raw_host_s is this CPU's"}
    return {"schema": "dicesim-host-blocks/1", "meta": meta, "block": out}


def main(argv: list[str]) -> int:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print(f"error: this benchmark needs diffusers: python3 -m pip install diffusers=={DIFFUSERS_VERSION}",
              file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else Path("traces/host/cpu-diffusers-blocks.toml")
    data = measure(reps=int(argv[1]) if len(argv) > 1 else 300, rounds=int(argv[2]) if len(argv) > 2 else 5)
    write_atomic(out, lambda tmp: tmp.write_bytes(tomli_w.dumps(data).encode("utf-8")))
    for name, row in data["block"].items():
        print(f"{name:12s} {row['host_s'] * 1e6:8.1f} us  launches {row['launches']:4d}  "
              f"{row['host_s'] / row['launches'] * 1e6:5.2f} us per launch "
              f"(this CPU: {row['raw_host_s'] * 1e6:.1f} us)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
