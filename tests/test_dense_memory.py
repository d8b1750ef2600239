"""The dense memory model: closed forms of its holders, and the step set's memory verdicts re-derived."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dicesim.calibrate.published.step_level import outcome_rows, ran_rows
from dicesim.calibrate.published.step_memory import memory_check
from dicesim.dense_models import get_dense_model
from dicesim.plan.footprint import RUNTIME
from dicesim.sim.dense import DenseParallel, DenseRun
from dicesim.sim.dense_memory import (activation_nbytes, attention_phase_elements, block_peak_elements, dense_memory,
                                      dit_params, dit_weight_nbytes, largest_block_params, nccl_nbytes,
                                      tokens_per_gpu)
from dicesim.sim.dense_pipelines import ENCODERS, PIPELINES, vae_decode_nbytes, vae_params


def _run(name="hunyuanvideo-t2v", h=720, w=1280, frames=129, cfg_on=False, **par) -> DenseRun:
    return DenseRun(model=get_dense_model(name), height_px=h, width_px=w, frames=frames, steps=50, batch=1,
                    cfg_on=cfg_on, compiled=False, parallel=DenseParallel(**par))


def test_flux_parameters_match_the_published_checkpoint():
    # FLUX.1-dev's bf16 checkpoint (flux1-dev.safetensors) is 23.8 GB on its Hugging Face file list:
    # 2 bytes x the closed form's parameters must land on it
    n, basis = dit_params(get_dense_model("flux.1-dev"))
    assert "closed form" in basis and n * 2 / 1e9 == pytest.approx(23.8, abs=0.05)
    # the closed form itself: 19 double blocks of two 18 D^2 streams, 38 single blocks of 15 D^2, plus
    # biases, norms and embedders (D = 3072)
    D = 3072
    assert 0 < n - (19 * 36 + 38 * 15) * D * D < 0.01 * n


def test_stated_counts_within_ten_percent():
    for name in ("flux.1-dev", "hunyuanvideo-t2v", "open-sora-2.0"):
        m = get_dense_model(name)
        assert dit_params(m)[0] == pytest.approx(m.params_B * 1e9, rel=0.10)


def test_weight_bytes_are_parameters_times_dtype_and_split_by_tensor_parallel():
    m = get_dense_model("open-sora-2.0")
    n = dit_params(m, guidance_embed=False)[0]
    for b in (1, 2, 4):
        assert dit_weight_nbytes(m, b, guidance_embed=False) == n * b
    # tensor parallel splits the blocks only: the embedders and final layer stay whole on every GPU
    outside = dit_params(replace(m, double_blocks=0, single_blocks=0), guidance_embed=False)[0]
    assert dit_weight_nbytes(m, 2, 4, guidance_embed=False) == int((outside + (n - outside) / 4) * 2)
    # a single block of the Flux layout: modulation 3D^2, linear1 (3+r)D^2, linear2 (1+r)D^2 (+ biases, norms)
    D, r = m.hidden, 4
    assert largest_block_params(m, False) >= (3 + (3 + r) + (1 + r)) * D * D


def test_encoder_and_vae_counts_against_published_totals():
    assert ENCODERS["t5-v1_1-xxl encoder"][0] == pytest.approx(4.762e9, rel=1e-3)  # T5EncoderModel XXL
    assert ENCODERS["clip-vit-l-14 text"][0] == pytest.approx(123.06e6, rel=1e-3)  # CLIPTextModel ViT-L/14
    assert ENCODERS["llava-llama-3-8b text"][0] == pytest.approx(7.505e9, rel=1e-3)  # LlamaModel 8B, no LM head
    assert vae_params((128, 256, 512, 512), 2, 16, 9) == pytest.approx(83.8e6, rel=0.01)  # Flux AE, 2D


def test_activations_scale_with_tokens_per_gpu():
    one = _run()
    assert tokens_per_gpu(one) == 33 * 45 * 80 + 256
    for u in (2, 4, 8):
        split = _run(ulysses=u)
        assert tokens_per_gpu(split) == -(-tokens_per_gpu(one) // u)
        assert activation_nbytes(split, 2) == pytest.approx(activation_nbytes(one, 2) / u, rel=1e-3)
    # CFG without CFG parallel doubles the rows; with it each GPU runs one branch
    assert tokens_per_gpu(_run(cfg_on=True)) == 2 * tokens_per_gpu(one)
    assert tokens_per_gpu(_run(cfg_on=True, cfg=2)) == tokens_per_gpu(one)
    # the single block's peak (r = 4): Flux 10 + 3r rows of D (x, x_mod, linear1 (3+r), q/k (2), attn,
    # gelu (r), concat (1+r), linear2 out); HunyuanVideo 4 more (roped and joined q, k); Open-Sora 2 fewer
    # (v_mlp 1+r instead of linear1's 3+r)
    for forward, rows in (("flux", 22), ("hunyuanvideo", 26), ("open-sora", 20)):
        assert activation_nbytes(one, 2, forward) == int(rows * tokens_per_gpu(one) * 3072 * 2)
    with pytest.raises(ValueError, match="forward"):
        activation_nbytes(one, 2, "mochi")


def test_nccl_and_decode_holders():
    assert nccl_nbytes(_run()) == 0
    assert nccl_nbytes(_run(ulysses=4)) == 3 * RUNTIME.p2p_per_peer_nbytes + RUNTIME.ring_per_comm_nbytes
    assert nccl_nbytes(_run(ring=8)) == 2 * RUNTIME.p2p_per_peer_nbytes + RUNTIME.ring_per_comm_nbytes
    pl = PIPELINES["open-sora-2.0"]
    # spatial tiles of 256 px, whole clip: the tile term is (3 x 256 + 128) channels x 129 x 256 x 256 x 2 B
    video = 3 * 129 * 256 * 256
    assert vae_decode_nbytes(pl, 256, 256, 129, 1) == 896 * 129 * 256 * 256 * 2 + 3 * video * 2


def test_sequential_offload_keeps_one_block_of_weights():
    run = _run(h=544, w=960, frames=97)
    full, off = dense_memory(run), dense_memory(run, offload="sequential")
    # one double block of the 60 stays on the GPU
    assert off.holders["dit"] == largest_block_params(run.model) * 2 < full.holders["dit"] / 30
    assert off.holders["text_encoders"] == 0 and off.holders["activations"] == full.holders["activations"]
    mochi = get_dense_model("mochi-1-preview")  # no closed form: an even share of the stated 10 B over 48 blocks
    assert largest_block_params(mochi) == int(10e9 / 48)
    with pytest.raises(ValueError, match="offload"):
        dense_memory(run, offload="model")


#: the committed set's memory verdicts, re-derived (a change meant to move them edits this table and
#: docs/step-level.md together): id -> (verdict starts with, predicted GiB or None)
EXPECTED = {
    "hunyuanvideo-readme-peakmem-720x1280": ("statement: -2.5%", 58.5),
    "hunyuanvideo-readme-peakmem-544x960": ("statement: +11.2%", 50.1),
    "opensora2-256x256-x1-peakmem": ("measurement: -12.5%", 46.0),
    "opensora2-256x256-x2-peakmem": ("measurement: -21.1%", 34.9),
    "opensora2-256x256-x4-peakmem": ("measurement: -33.6%", 29.4),
    "opensora2-768x768-x1-peakmem": ("measurement: -18.4%", 49.2),
    "opensora2-768x768-x2-peakmem": ("measurement: -2.5%", 47.1),
    "opensora2-768x768-x4-peakmem": ("measurement: +6.3%", 47.1),
    "opensora2-768x768-x8-peakmem": ("measurement: +6.3%", 47.1),
    "skyreels-hyxdit-4090x1-oom": ("disagrees: predicted to fit", 18.1),
    "skyreels-hyxdit-4090x2-oom": ("agrees: does not fit", 37.1),
    "skyreels-hyxdit-4090x8-unsupported": ("agrees", None),
    "skyreels-hyxdit-a800x8-unsupported": ("agrees", None),
}


def test_memory_verdicts_rederived_from_the_committed_set():
    o = outcome_rows().set_index("id")
    assert set(o.index) == set(EXPECTED)
    for fid, (verdict, gib) in EXPECTED.items():
        assert o.loc[fid, "verdict"].startswith(verdict), (fid, o.loc[fid, "verdict"])
        if gib is not None:
            assert o.loc[fid, "predicted"].startswith(f"{gib:.1f} GiB"), (fid, o.loc[fid, "predicted"])
    # every run the sources did run on the official pipelines is predicted to fit its card
    ran = ran_rows()
    assert len(ran) == 23 and ran["fits"].all()


def test_attention_phase_buffers_stay_below_the_mlp_peak():
    # Ulysses' send/receive copies and ring attention's K/V blocks add to the attention phase only; with
    # the counts of block_peak_elements that phase never exceeds the MLP peak
    for forward in ("flux", "hunyuanvideo", "open-sora"):
        for r in (2.5, 4.0):
            plain = attention_phase_elements(r, 1, 1, 1, forward)
            assert attention_phase_elements(r, 4, 1, 1, forward) == plain - 2 + 8
            assert attention_phase_elements(r, 1, 4, 1, forward) == plain - 2 + 6
            peak = sum(n for n, _ in block_peak_elements(r, forward).values())
            assert max(attention_phase_elements(r, u, g, 1, forward) for u, g in ((1, 1), (8, 1), (1, 8))) <= peak


def test_an_oom_figure_on_an_unknown_card_is_not_checked():
    fig = {"kind": "oom", "gpu": "not stated", "optimizations": []}
    out = memory_check(fig, _run(), None)
    assert out["verdict"].startswith("not checked") and out["error"] is None
    # a model without a pipeline is not modelled, whatever the card
    flux = _run("flux.1-dev", h=1024, w=1024, frames=1)
    out = memory_check({**fig, "gpu": "H100"}, flux, ("h100-sxm", "dgx-h100", ""))
    assert out["verdict"].startswith("not modelled")


def test_a_set_without_memory_figures_still_reports(tmp_path):
    # places holding latency figures only: no outcome rows, the runs-that-ran check still counts
    import shutil
    from pathlib import Path

    from dicesim.calibrate.published.step_memory import memory_lines

    shutil.copy(Path("traces/published/steps/xdit.toml"), tmp_path / "xdit.toml")
    o, ran = outcome_rows([tmp_path]), ran_rows([tmp_path])
    assert o.empty and list(o.columns)[:3] == ["id", "kind", "evidence"]
    lines = memory_lines(o, ran)
    assert len(ran) > 0 and ran["fits"].all() and f"{len(ran)} of {len(ran)} predicted to fit" in lines[-1]
