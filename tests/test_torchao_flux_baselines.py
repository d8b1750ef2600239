"""FLUX.1-dev on one H100 (sayakpaul/diffusers-torchao's README, quantization None): the settings read from the
benchmark script, the batch carried into the DiT and the VAE, and one prediction per setting across sources."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dicesim.calibrate.published.step_level import dense_run, load_step_figures, step_level_rows
from dicesim.sim.costs.profile import get_profile
from dicesim.sim.dense_vae import run_decode_flops, vae_decode_s

SOURCES = ("diffusers-torchao-flux", "diffusers-torchao-flux-bs16")


@pytest.fixture(scope="module")
def figures() -> list[dict]:
    return [f for f in load_step_figures()[0] if f["source"] in SOURCES]


@pytest.fixture(scope="module")
def rows():
    return step_level_rows().set_index("id")


def test_the_unquantized_rows_are_staged_as_one_gpu_baselines(figures, rows):
    """Six rows of 'Additional Results' (batch 1, 4, 8; eager and compiled) and the batch-16 bf16 reference."""
    got = sorted((f["batch"], f["compiled"]) for f in figures)
    assert got == [(1, False), (1, True), (4, False), (4, True), (8, False), (8, True), (16, False)]
    for f in figures:
        assert f["gpus"] == 1 and f["interconnect_family"] == "none" and f["use"] == "check", f["id"]
        assert rows.loc[f["id"], "split"] == "baseline" and rows.loc[f["id"], "machine"] == "dgx-h100", f["id"]
        # no fused twin (every quantization-None row is fuse False) and the preset's text length (512)
        assert "dup_of" not in f and "text_tokens" not in f and not f["optimizations"]
        # FluxPipeline's defaults at the table's day: 1024 px, 28 steps, guidance embedded
        assert (f["height_px"], f["width_px"], f["frames"], f["steps"]) == (1024, 1024, 1, 28)
        assert f["cfg"].startswith("distilled")
        # the quoted row's cells say what the fields say (the batch-16 table has a leading index column)
        cells = [c.strip() for c in f["quote"].strip("| ").split("|")]
        after_ckpt = cells[cells.index("black-forest-labs/FLUX.1-dev") + 1:]
        batch, fuse, compile_, compile_vae, quant, sparsify, _, _, time = after_ckpt
        assert (int(batch), compile_ == "True", float(time)) == (f["batch"], f["compiled"], f["value"]), f["id"]
        assert (fuse, compile_vae, quant, sparsify) == ("False", "False", "None", "False"), f["id"]


def test_batch_multiplies_the_dit_samples_and_the_decodes(figures):
    """One prompt, ``num_images_per_prompt`` = batch: the DiT runs ``batch`` latents of 64 x 64 tokens plus 512 text
    tokens, and the VAE decodes every image, so the decode FLOPs are ``batch`` times one image's."""
    one = dense_run(next(f for f in figures if f["batch"] == 1))
    h100 = get_profile("h100-sxm")
    for f in figures:
        run = dense_run(f)
        assert run.batch == f["batch"] and not run.cfg_on and run.parallel.world == 1
        assert run.model.image_tokens(1024, 1024, 1) == 64 * 64 and run.model.text_tokens == 512
        assert run_decode_flops(run) == pytest.approx(f["batch"] * run_decode_flops(replace(run, batch=1)))
        assert vae_decode_s(run, h100) == pytest.approx(f["batch"] * vae_decode_s(one, h100))


def test_one_setting_is_predicted_alike_across_sources(figures, rows):
    """xDiT's one-H100 FLUX.1-dev rows ran the same setting (1024 px, 28 steps, batch 1; FlashAttention-2 in both
    frameworks' mapping): the simulator has nothing to tell them apart, so it predicts them alike."""
    for compiled, xdit in ((False, "xdit-flux1dev-h100x1-1gpu-eager"), (True, "xdit-flux1dev-h100x1-1gpu-compile")):
        ours = next(f for f in figures if f["batch"] == 1 and f["compiled"] == compiled)
        assert rows.loc[ours["id"], "predicted"] == rows.loc[xdit, "predicted"]
    # and a larger batch never costs less than a smaller one at the same setting
    for compiled in (False, True):
        preds = [rows.loc[f["id"], "predicted"] for f in sorted(figures, key=lambda f: f["batch"])
                 if f["compiled"] == compiled]
        assert preds == sorted(preds)
