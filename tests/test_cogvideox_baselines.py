"""CogVideoX-5B and -2B on one GPU (sayakpaul/diffusers-torchao's README tables): the cogvideox-2b
preset from its cited config, its missing RoPE, its VAE, and how the fused-QKV twins are counted."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dicesim.calibrate.published.step_level import dense_run, load_step_figures, step_level_rows
from dicesim.dense_models import COGVIDEOX_ROPE_KERNELS, COGVIDEOX_ROPE_PASSES, block_work, get_dense_model
from dicesim.sim.dense_vae import run_decode_flops

SOURCE = "diffusers-torchao-cogvideox"


@pytest.fixture(scope="module")
def figures() -> list[dict]:
    return [f for f in load_step_figures()[0] if f["source"] == SOURCE]


def test_2b_preset_is_its_config():
    """THUDM/CogVideo@e000b43 sat/configs/cogvideox_2b.yaml: 30 layers, width 1920, 30 heads (of 64),
    patch 2, 226 text tokens, Basic3DPositionEmbeddingMixin (no RoPE); 17,550 video tokens at 480x720x49."""
    m, big = get_dense_model("cogvideox-2b"), get_dense_model("cogvideox-5b")
    assert (m.single_blocks, m.hidden, m.heads, m.head_dim, m.text_tokens) == (30, 1920, 30, 64, 226)
    assert m.rope is False and big.rope is True
    assert m.image_tokens(480, 720, 49) == 13 * 30 * 45 == big.image_tokens(480, 720, 49)


@pytest.mark.parametrize("tp", [1, 2])
def test_no_rope_removes_exactly_ropes_eager_passes_and_kernels(tp):
    m = get_dense_model("cogvideox-2b")
    with_rope = replace(m, rope=True)
    n, D = 1000.0, m.hidden
    kw = dict(img_tokens=n, txt_tokens=226.0, attn_q=n + 226, attn_kv=n + 226, heads_share=1.0 / tp, tp=tp)
    a, b = block_work(m, "single", compiled=False, **kw), block_work(with_rope, "single", compiled=False, **kw)
    # RoPE runs over heads, so tensor parallelism splits it, and over the video tokens only (diffusers'
    # CogVideoXAttnProcessor2_0 rotates query[:, :, text_seq_length:]): 2 bytes x 56 D per video token / tp
    assert b.elementwise.nbytes - a.elementwise.nbytes == pytest.approx(2 * COGVIDEOX_ROPE_PASSES * n * D / tp)
    assert b.kernels - a.kernels == COGVIDEOX_ROPE_KERNELS == 18
    assert a.linear_ops == b.linear_ops and a.attention_ops == b.attention_ops
    # compiled, RoPE is fused into the q/k norm's kernel: nothing changes
    c, d = block_work(m, "single", compiled=True, **kw), block_work(with_rope, "single", compiled=True, **kw)
    assert (c.elementwise, c.kernels) == (d.elementwise, d.kernels)


def test_2b_runs_the_5b_decoder(figures):
    """Same decoder config (ch 128, ch_mult 1/2/2/4, 3 res blocks, z 16): the same decode FLOPs at one shape."""
    f = next(f for f in figures if f["model"] == "cogvideox-2b")
    run = dense_run(f)
    big = replace(run, model=get_dense_model("cogvideox-5b"))
    assert run_decode_flops(run) == run_decode_flops(big) > 0


def test_torchao_rows_are_one_gpu_baselines_and_fused_twins_count_like_repeated_runs(figures):
    assert len(figures) == 20
    rows = step_level_rows().set_index("id")
    by_id = {f["id"]: f for f in figures}
    for f in figures:
        assert f["gpus"] == 1 and f["interconnect_family"] == "none" and f["use"] == "check"
        assert rows.loc[f["id"], "split"] == "baseline", f["id"]
        twin = f.get("dup_of")
        if twin:  # a fuse_qkv run of an unfused row's setting: both counted, predicted alike
            assert f["id"] == twin + "-fuseqkv" and by_id[twin]["value"] != f["value"]
            same = ("model", "gpu", "compiled", "precision", "height_px", "width_px", "frames", "steps")
            assert all(by_id[twin][k] == f[k] for k in same)
            assert rows.loc[f["id"], "predicted"] == rows.loc[twin, "predicted"]
    twins = [f for f in figures if f.get("dup_of")]
    assert len(twins) == 8 and all(f["gpu"].startswith("A100") for f in twins)
