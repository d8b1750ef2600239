"""Produce real torch.profiler traces of the tiny DiT-MoE block, annotated for dicesim (test helper)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from dicesim.models import get_model
from validate.model.model import DiTMoEBlock, copies_to_rows


def profile_tiny_block(path: Path, *, batch: int = 1, steps: int = 3, image_size: int = 32,
                       device: str = "cpu") -> Path:
    """Run a tiny DiT-MoE block for ``steps`` steps under torch.profiler; export the Chrome trace.

    Every op sits in a ``dicesim:<kind>;...`` annotation; one ``dicesim:run`` annotation
    names the configuration. ``device="cuda"`` also records the GPU kernels (this is how
    ``tests/data/kineto-h200-tiny-b2.pt.trace.json.gz`` was made on a lent H200).
    """
    torch.manual_seed(0)
    preset = get_model("tiny")
    dev = torch.device(device)
    blk = DiTMoEBlock(preset, 0).eval().to(dev)
    tokens = (image_size // preset.latent_downsample // preset.patch) ** 2
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.no_grad(), profile(activities=acts) as prof:
        with record_function(f"dicesim:run;model=tiny;batch={batch};image_size={image_size};"
                             f"world_size=1;strategy=sync;dtype=fp32;cfg=1;steps={steps}"):
            x_BTD = torch.randn(2 * batch, tokens, preset.hidden, device=dev)
            c_BD = torch.randn(2 * batch, preset.hidden, device=dev)
            for step in range(steps):
                with record_function(f"dicesim:step;step={step}"):
                    with record_function("dicesim:attention;layer=0"):
                        mod = blk.modulation(c_BD)
                        x_BTD = blk.attention_half(x_BTD, c_BD, mod=mod)
                    with record_function("dicesim:gate;layer=0"):
                        h_ND, gate_BD = blk.moe_input(x_BTD, c_BD, mod=mod)
                        idx_NK, score_NK = blk.route(h_ND)
                    rows_RD, ids_R = copies_to_rows(h_ND, idx_NK)
                    with record_function(f"dicesim:experts;layer=0;rows={rows_RD.shape[0]}"):
                        out_RD = blk.experts.forward_rows(rows_RD, ids_R)
                    with record_function("dicesim:shared_expert;layer=0"):
                        shared_ND = blk.shared_expert(h_ND)
                    with record_function("dicesim:local_combine;layer=0"):
                        routed_ND = (out_RD.view(-1, preset.top_k, preset.hidden)
                                     * score_NK.unsqueeze(-1)).sum(1)
                        x_BTD = blk.moe_output(x_BTD, routed_ND, shared_ND, gate_BD)
            if dev.type == "cuda":
                torch.cuda.synchronize()
    prof.export_chrome_trace(str(path))
    return path
