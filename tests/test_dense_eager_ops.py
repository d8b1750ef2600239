"""CogVideoX's (``dit-joint-text``), Mochi's (``mmdit-asymmetric``) and HunyuanVideo's eager blocks: their kernels
and elementwise passes re-derived from the op tables of docs/step-level.md ("Elementwise passes"), the CPU replays
of diffusers' CogVideoXBlock / CogVideoXAttnProcessor2_0, MochiTransformerBlock / MochiAttnProcessor2_0 and
Tencent/HunyuanVideo's MMDoubleStreamBlock / MMSingleStreamBlock and diffusers' SanaTransformerBlock
(benchmarks/count_diffusers_elementwise.py); the Flux count unchanged."""

from __future__ import annotations

from dataclasses import replace

import pytest

from script_module import load_script

from dicesim.dense_models import (EAGER_LINEAR_KERNELS, SANA_LINEAR_HEAD_DIM, block_kernels, block_work, eager_passes,
                                  elementwise_passes, elementwise_split, get_dense_model)

#: the replay's op table: (op, kernels in the block, passes per token in D bf16 elements (str: times r), tokens,
#: split); tokens: "stream" = one kernel per stream over its own tokens (text and video alike: per joint token),
#: "joint" = over the concatenated tokens, "video" = video tokens only, "none" = per sample (no per-token bytes);
#: split: "hidden" (every TP rank) or "heads" (over heads or the MLP hidden: divided by the TP degree)
OPS = [
    ("norm1 SiLU(temb), linear", 2, 0, "none", "hidden"),
    ("norm1 LayerNorm", 2, 2, "stream", "hidden"), ("norm1 1 + scale", 2, 0, "none", "hidden"),
    ("norm1 x (1 + scale)", 2, 2, "stream", "hidden"), ("norm1 + shift", 2, 2, "stream", "hidden"),
    ("cat [text, video]", 1, 2, "joint", "hidden"),
    ("to_q, to_k, to_v", 3, 0, "joint", "heads"),
    ("norm_q, norm_k contiguous copy", 2, 2 * 2, "joint", "heads"),
    ("norm_q, norm_k LayerNorm", 2, 2 * 2, "joint", "heads"),
    ("RoPE neg (q, k)", 2, 2 * 1, "video", "heads"), ("RoPE stack", 2, 2 * 2, "video", "heads"),
    ("RoPE x.float()", 2, 2 * 3, "video", "heads"), ("RoPE x * cos", 2, 2 * 4, "video", "heads"),
    ("RoPE rotated.float()", 2, 2 * 3, "video", "heads"), ("RoPE rotated * sin", 2, 2 * 4, "video", "heads"),
    ("RoPE sum", 2, 2 * 6, "video", "heads"), ("RoPE .to(bf16)", 2, 2 * 3, "video", "heads"),
    ("RoPE copy_ into the slice", 2, 2 * 2, "video", "heads"),
    ("SDPA", 1, 0, "joint", "heads"), ("output layout copy", 1, 2, "joint", "heads"),
    ("to_out", 1, 0, "joint", "hidden"),
    ("gate_msa x attn", 2, 2, "stream", "hidden"), ("residual", 2, 3, "stream", "hidden"),
    ("norm2 SiLU(temb), linear", 2, 0, "none", "hidden"),
    ("norm2 LayerNorm", 2, 2, "stream", "hidden"), ("norm2 1 + scale", 2, 0, "none", "hidden"),
    ("norm2 x (1 + scale)", 2, 2, "stream", "hidden"), ("norm2 + shift", 2, 2, "stream", "hidden"),
    ("cat [text, video]", 1, 2, "joint", "hidden"),
    ("ff linear", 1, 0, "joint", "heads"), ("GELU", 1, "2r", "joint", "heads"), ("ff linear", 1, 0, "joint", "heads"),
    ("gate_ff x ff", 2, 2, "stream", "hidden"), ("residual", 2, 3, "stream", "hidden"),
]


def _passes(p, r: float) -> float:
    return 2 * r if p == "2r" else float(p)


def _table(r: float, rope: bool, tp: int) -> tuple[int, float, float]:
    """(kernels, passes per joint token, passes per video token) of the table."""
    kernels, joint, video = 0, 0.0, 0.0
    for _, k, p, tokens, split in OPS:
        if tokens == "video" and not rope:
            continue
        kernels += k
        x = _passes(p, r) / (tp if split == "heads" else 1)
        if tokens in ("stream", "joint"):
            joint += x
        elif tokens == "video":
            video += x
    return kernels, joint, video


@pytest.mark.parametrize("name", ["cogvideox-5b", "cogvideox-2b", "consisid"])
@pytest.mark.parametrize("tp", [1, 2])
def test_eager_cogvideox_block_is_its_op_table(name, tp):
    m = get_dense_model(name)
    kernels, joint, video = _table(m.mlp_ratio, m.rope, tp)
    assert block_kernels(m, 1, False) == kernels
    n_img, n_txt, D = 1000.0, 226.0, m.hidden
    bw = block_work(m, "single", img_tokens=n_img, txt_tokens=n_txt, attn_q=n_img + n_txt, attn_kv=n_img + n_txt,
                    heads_share=1.0 / tp, tp=tp, compiled=False)
    assert bw.kernels == kernels
    assert bw.elementwise.nbytes == pytest.approx(2 * D * (joint * (n_img + n_txt) + video * n_img))


def test_cogvideox_counts_in_closed_form():
    """5B (RoPE): 43 + 18 kernels; 2B (no RoPE): 43. Per token 26 D hidden-wide, 10 + 2r over heads, and RoPE's
    56 D per video token."""
    assert _table(4.0, True, 1)[0] == 61 and _table(4.0, False, 1)[0] == 43
    assert elementwise_split(4.0, False, "joint-text") == (26, 18)
    assert _table(4.0, True, 1)[1:] == (26 + 18, 56)
    assert block_kernels(get_dense_model("cogvideox-5b"), 1, False) == 61
    assert block_kernels(get_dense_model("cogvideox-2b"), 1, False) == 43
    # RoPE of the 5B over its video tokens only: turning it off removes 56 D per video token, none per text token
    m = get_dense_model("cogvideox-5b")
    kw = dict(img_tokens=500.0, txt_tokens=226.0, attn_q=726.0, attn_kv=726.0, heads_share=1.0, tp=1, compiled=False)
    diff = block_work(m, "single", **kw).elementwise.nbytes - block_work(replace(m, rope=False), "single",
                                                                           **kw).elementwise.nbytes
    assert diff == pytest.approx(2 * 56 * 500.0 * m.hidden)


def test_compiled_counts_unchanged_for_cogvideox():
    """torch.compile: the shared assumption (4 GEMMs and 4 fused kernels per stream plus the attention)."""
    m = get_dense_model("cogvideox-5b")
    assert block_kernels(m, 1, True) == 9
    assert elementwise_split(4.0, True, "joint-text") == elementwise_split(4.0, True, "single") == (10, 12)


def test_flux_count_is_the_replay_s():
    flux = get_dense_model("flux.1-dev")
    assert block_kernels(flux, 2, False) == 95 and block_kernels(flux, 1, False) == 49
    assert elementwise_passes(4.0, False, "double") == 124 and elementwise_passes(4.0, False, "single") == 117
    # the preset still on the Flux count: Open-Sora 2.0's double and single blocks
    osr = get_dense_model("open-sora-2.0")
    assert block_kernels(osr, 2, False) == 95 and block_kernels(osr, 1, False) == 49
    assert eager_passes(osr, "double") == ((22, 102), (22, 102)) and eager_passes(osr, "single") == ((11, 106), (11, 106))


#: Mochi's double block (diffusers main of 2024-11: MochiTransformerBlock, MochiAttnProcessor2_0): (ops, kernels,
#: passes per token of all the row's ops, in the stream's width (str "ff": per unit of the SwiGLU inner width 8/3),
#: stream "video" / "text" / "both" (one op per stream) / "joint" (over heads, D wide for video and text tokens) /
#: "rope" (video tokens, over heads) / "none" (per sample), split)
RMS = [("fp32 cast", 3), ("square", 4), ("mean", 2), ("+ eps", 0), ("rsqrt", 0), ("x rsqrt", 3), ("cast back", 3)]
MOCHI_OPS = (
    [("norm1 SiLU, linear", 2, 0, "both", "hidden")] + [(f"norm1 {n}", 1, p, "both", "hidden") for n, p in RMS]
    + [("norm1 1 + scale", 1, 0, "both", "none"), ("norm1 x (1 + scale)", 1, 2, "both", "hidden"),
       ("to_q/k/v, add_q/k/v_proj", 3, 0, "both", "heads")]
    # RMSNorm of q and of k (per token: both), in each stream: 4 kernels an op
    + [(f"q/k norm {n}", 4, 2 * p, "joint", "heads") for n, p in RMS + [("x weight", 2)]]
    + [("RoPE fp32 casts", 4, 4 * 1.5, "rope", "heads"), ("RoPE products", 8, 8 * 3, "rope", "heads"),
       ("RoPE difference, sum", 4, 4 * 3, "rope", "heads"), ("RoPE casts back", 4, 4 * 1.5, "rope", "heads"),
       ("RoPE stack", 2, 2 * 2, "rope", "heads"),
       ("concat q, k, v", 3, 3 * 2, "joint", "heads"), ("SDPA", 1, 0, "joint", "heads"),
       ("output layout copy", 1, 2, "joint", "heads"), ("to_out, to_add_out", 1, 0, "both", "hidden")]
    + [(f"norm2 {n}", 1, p, "both", "hidden") for n, p in RMS]
    + [("tanh(gate)", 1, 0, "both", "none"), ("x tanh(gate)", 1, 2, "both", "hidden"),
       ("residual", 1, 3, "both", "hidden")]
    + [(f"norm3 {n}", 1, p, "both", "hidden") for n, p in RMS]
    + [("1 + scale", 1, 0, "both", "none"), ("x (1 + scale)", 1, 2, "both", "hidden"),
       ("ff linear", 1, 0, "both", "heads"), ("SiLU(gate)", 1, "ff2", "both", "heads"),
       ("value x gate", 1, "ff3", "both", "heads"), ("ff linear", 1, 0, "both", "heads")]
    + [(f"norm4 {n}", 1, p, "both", "hidden") for n, p in RMS]
    + [("tanh(gate)", 1, 0, "both", "none"), ("x tanh(gate)", 1, 2, "both", "hidden"),
       ("residual", 1, 3, "both", "hidden")]
)


def _mochi_table(text_width: float, rope: bool, tp: int) -> tuple[int, tuple[float, float], tuple[float, float]]:
    """(kernels, (hidden, split) per video token, (hidden, split) per text token) of the table; the text
    stream's hidden-wide and MLP passes are ``text_width`` (of D) wide, the q/k/v-side passes D wide."""
    inner = 8 / 3
    kernels, video, text = 0, [0.0, 0.0], [0.0, 0.0]
    for _, k, p, where, split in MOCHI_OPS:
        if where == "rope" and not rope:
            continue
        kernels += k * (2 if where == "both" else 1)
        x = {"ff2": 2 * inner, "ff3": 3 * inner}.get(p, p) if isinstance(p, str) else float(p)
        if split == "none":
            continue
        i = 0 if split == "hidden" else 1
        if where == "rope":
            video[i] += x
        elif where == "joint":  # q/k/v side: D wide for both streams
            video[i] += x
            text[i] += x
        else:
            video[i] += x
            text[i] += x * text_width
    return kernels, tuple(video), tuple(text)


@pytest.mark.parametrize("rope", [True, False])
@pytest.mark.parametrize("tp", [1, 2])
def test_eager_mochi_block_is_its_op_table(rope, tp):
    m = replace(get_dense_model("mochi-1-preview"), rope=rope)
    q = m.hidden_text / m.hidden
    kernels, video, text = _mochi_table(q, rope, 1)
    assert block_kernels(m, 2, False) == kernels
    assert eager_passes(m, "double")[0] == pytest.approx(video)
    assert eager_passes(m, "double")[1] == pytest.approx(text)
    n_img, n_txt, D = 3000.0, 256.0, m.hidden
    bw = block_work(m, "double", img_tokens=n_img, txt_tokens=n_txt, attn_q=n_img + n_txt, attn_kv=n_img + n_txt,
                    heads_share=1.0 / tp, tp=tp, compiled=False)
    want = (video[0] + video[1] / tp) * n_img + (text[0] + text[1] / tp) * n_txt
    assert bw.kernels == kernels
    assert bw.elementwise.nbytes == pytest.approx(2 * D * want)


def test_mochi_counts_in_closed_form():
    """155 kernels (133 without RoPE); per video token 74 D hidden-wide and 42 + 5 x 8/3 + 52 over heads; per
    text token (1536 of 3072 wide) 37 and 42 + 5 x 4/3."""
    k, video, text = _mochi_table(0.5, True, 1)
    assert k == 155 and _mochi_table(0.5, False, 1)[0] == 133
    assert video == pytest.approx((74, 42 + 40 / 3 + 52)) and text == pytest.approx((37, 42 + 20 / 3))
    m = get_dense_model("mochi-1-preview")
    assert (m.hidden, m.hidden_text, m.rope) == (3072, 1536, True)
    assert block_kernels(m, 2, True) == 2 * 8 + 1  # compiled: the shared assumption, unchanged


#: HunyuanVideo's own blocks (Tencent/HunyuanVideo hyvideo/modules/models.py): (ops, kernels, passes per token of all
#: the row's ops (str "r": times the MLP ratio), tokens "stream" (one op per stream, each over its own tokens) /
#: "joint" / "video" / "none", split). RMSNorm of q or k: fp32 cast 3, square 4, mean 2, + eps, rsqrt, x 4, type_as 3,
#: x weight 2 = 18 in 8 kernels; RoPE of q or k: float 3, x cos 4, float 3, negate 2, stack 4, x sin 4, sum 6, type_as 3
HY_RMS = 3 + 4 + 2 + 4 + 3 + 2
HY_ROPE = 3 + 4 + 3 + 2 + 4 + 4 + 6 + 3
HY_DOUBLE = [
    ("modulation SiLU, linear", 2, 0, "stream", "hidden"), ("LayerNorm", 1, 2, "stream", "hidden"),
    ("1 + scale", 1, 0, "stream", "none"), ("x (1 + scale)", 1, 2, "stream", "hidden"),
    ("+ shift", 1, 2, "stream", "hidden"), ("qkv linear", 1, 0, "stream", "heads"),
    ("q, k RMSNorm", 16, 2 * HY_RMS, "stream", "heads"), ("RoPE q, k", 16, 2 * HY_ROPE, "video", "heads"),
    ("concat q, k, v", 3, 3 * 2, "joint", "heads"), ("attention", 1, 0, "joint", "heads"),
    ("out projection", 1, 0, "stream", "hidden"), ("x gate", 1, 2, "stream", "hidden"),
    ("residual", 1, 3, "stream", "hidden"), ("LayerNorm", 1, 2, "stream", "hidden"),
    ("1 + scale", 1, 0, "stream", "none"), ("x (1 + scale)", 1, 2, "stream", "hidden"),
    ("+ shift", 1, 2, "stream", "hidden"), ("fc1", 1, 0, "stream", "heads"), ("GELU", 1, "2r", "stream", "heads"),
    ("fc2", 1, 0, "stream", "heads"), ("x gate", 1, 2, "stream", "hidden"), ("residual", 1, 3, "stream", "hidden"),
]
HY_SINGLE = [
    ("modulation SiLU, linear", 2, 0, "none", "hidden"), ("LayerNorm", 1, 2, "joint", "hidden"),
    ("1 + scale", 1, 0, "none", "none"), ("x (1 + scale)", 1, 2, "joint", "hidden"),
    ("+ shift", 1, 2, "joint", "hidden"),
    ("linear1", 1, 0, "joint", "heads"), ("q, k RMSNorm", 16, 2 * HY_RMS, "joint", "heads"),
    ("RoPE q, k", 16, 2 * HY_ROPE, "video", "heads"),
    ("concat rotated video q, k with text's", 2, 2 * 2, "rope-joint", "heads"),
    ("attention", 1, 0, "joint", "heads"), ("GELU", 1, "2r", "joint", "heads"),
    ("concat [attention, MLP]", 1, "2(1+r)", "joint", "heads"), ("linear2", 1, 0, "joint", "hidden"),
    ("x gate", 1, 2, "joint", "hidden"), ("residual", 1, 3, "joint", "hidden"),
]


def _hy_table(rows, streams: int, r: float, rope: bool) -> tuple[int, tuple[float, float], tuple[float, float]]:
    kernels, video, text = 0, [0.0, 0.0], [0.0, 0.0]
    for _, k, p, tokens, split in rows:
        if tokens in ("video", "rope-joint") and not rope:
            continue
        kernels += k * (streams if tokens == "stream" else 1)
        if split == "none":
            continue
        x = {"2r": 2 * r, "2(1+r)": 2 * (1 + r)}.get(p, p) if isinstance(p, str) else float(p)
        i = 0 if split == "hidden" else 1
        video[i] += x
        if tokens != "video":
            text[i] += x
    return kernels, tuple(video), tuple(text)


@pytest.mark.parametrize("rope", [True, False])
def test_eager_hunyuanvideo_blocks_are_their_op_tables(rope):
    m = replace(get_dense_model("hunyuanvideo-t2v"), rope=rope)
    for kind, rows, streams in (("double", HY_DOUBLE, 2), ("single", HY_SINGLE, 1)):
        kernels, video, text = _hy_table(rows, streams, m.mlp_ratio, rope)
        assert block_kernels(m, streams, False) == kernels, kind
        assert eager_passes(m, kind) == (pytest.approx(video), pytest.approx(text)), kind
        n_img, n_txt, tp = 2000.0, 256.0, 2
        bw = block_work(m, kind, img_tokens=n_img, txt_tokens=n_txt, attn_q=n_img + n_txt, attn_kv=n_img + n_txt,
                        heads_share=1.0 / tp, tp=tp, compiled=False)
        want = (video[0] + video[1] / tp) * n_img + (text[0] + text[1] / tp) * n_txt
        assert bw.elementwise.nbytes == pytest.approx(2 * m.hidden * want), kind


def test_hunyuanvideo_counts_in_closed_form():
    """Double: 90 kernels, per video token 22 + (36 + 6 + 8 + 58), per text token 22 + 50; single: 47 kernels,
    per video token 11 + (36 + 4 + 8 + 10 + 58), per text token 11 + 58 (r = 4)."""
    assert _hy_table(HY_DOUBLE, 2, 4.0, True) == (90, (22, 108), (22, 50))
    assert _hy_table(HY_SINGLE, 1, 4.0, True) == (47, (11, 116), (11, 58))
    m = get_dense_model("hunyuanvideo-t2v")
    assert m.block_code == "hunyuanvideo" and get_dense_model("open-sora-2.0").block_code == "flux"
    assert block_kernels(m, 2, True) == 17 and block_kernels(m, 1, True) == 9  # compiled: unchanged


@pytest.mark.parametrize("name", ["cogvideox-5b", "cogvideox-2b"])
def test_replay_on_diffusers_gives_the_cogvideox_counts(name):
    """Where diffusers 0.32.1 is installed (not a dicesim dependency), the replay itself reproduces the counts."""
    diffusers = pytest.importorskip("diffusers")
    if diffusers.__version__ != "0.32.1":
        pytest.skip(f"replay counted on diffusers 0.32.1, found {diffusers.__version__}")
    summarise = load_script("benchmarks/count_diffusers_elementwise.py", register=True).summarise

    tot = summarise(name)
    m = get_dense_model(name)
    (hv, sv), (ht, st) = eager_passes(m, "single")
    assert tot["kernels"] == block_kernels(m, 1, False)
    assert (tot["hidden_video"], tot["hidden_text"]) == pytest.approx((hv, ht))
    assert (tot["heads_video"], tot["heads_text"]) == pytest.approx((sv, st))


def test_replay_on_diffusers_gives_the_flux_counts():
    """Where diffusers 0.32.1 is installed: the Flux blocks' replay gives the model's Flux count, RMSNorm's 2 x 17 D
    included; the single block's output copy (2 D, one kernel) is a view on one GPU and is kept for the runs
    whose Ulysses exchange makes it a copy; the .0625 D per token is the per-row statistics of the norms (2/d)."""
    diffusers = pytest.importorskip("diffusers")
    if diffusers.__version__ != "0.32.1":
        pytest.skip(f"replay counted on diffusers 0.32.1, found {diffusers.__version__}")
    summarise = load_script("benchmarks/count_diffusers_elementwise.py", register=True).summarise

    flux = get_dense_model("flux.1-dev")
    for kind, blocks, kept_copy in (("double", 2, 0), ("single", 1, 2)):
        tot = summarise(f"flux-{kind}")
        (hv, sv), _ = eager_passes(flux, kind)
        assert tot["kernels"] + (kept_copy // 2) == block_kernels(flux, blocks, False)
        assert tot["hidden_video"] == pytest.approx(hv)
        assert tot["heads_video"] + kept_copy == pytest.approx(sv, abs=0.1)


#: SANA's block (diffusers 0.32.1 SanaTransformerBlock, SanaLinearAttnProcessor2_0, AttnProcessor2_0 with the text
#: mask, GLUMBConv; bf16): (op, kernels, passes per image token in D bf16 elements (str "r": times mlp_ratio; "d":
#: a function of the linear head dim), split)
_D = SANA_LINEAR_HEAD_DIM
SANA_OPS = [
    ("modulation: table + timestep", 1, 0, "hidden"),
    ("norm1 LayerNorm", 1, 2, "hidden"), ("norm1 1 + scale", 1, 0, "hidden"), ("norm1 x (1 + scale)", 1, 2, "hidden"),
    ("norm1 + shift", 1, 2, "hidden"), ("to_q, to_k, to_v", 3, 0, "heads"),
    ("ReLU q, k", 2, 2 + 2, "heads"), ("q, k, v .float()", 3, 3 * 3, "heads"),
    ("F.pad fill_ (fp32, d + 1 rows)", 1, 2 * (_D + 1) / _D, "heads"), ("F.pad copy_", 1, 2 + 2, "heads"),
    ("two fp32 matmuls: bytes beyond the core's bf16 4 D", 2, 2 * (2 * (_D + 1) / _D + 2) - 4, "heads"),
    ("+ 1e-15", 1, 4 / _D, "heads"), ("division", 1, 4 + 2 / _D, "heads"), ("cast back", 1, 3, "heads"),
    ("to_out mm", 1, 0, "hidden"), ("to_out bias add", 1, 2, "hidden"),
    ("gate_msa x", 1, 2, "hidden"), ("residual", 1, 3, "hidden"),
    ("mask repeat_interleave", 1, 0, "heads"), ("attn2 to_q, to_k, to_v", 3, 0, "heads"), ("SDPA", 1, 0, "heads"),
    ("attn2 to_out", 1, 0, "hidden"), ("/ rescale_output_factor", 1, 2, "hidden"), ("residual", 1, 3, "hidden"),
    ("norm2 LayerNorm", 1, 2, "hidden"), ("norm2 1 + scale", 1, 0, "hidden"), ("norm2 x (1 + scale)", 1, 2, "hidden"),
    ("norm2 + shift", 1, 2, "hidden"),
    ("conv_inverted", 1, 0, "heads"), ("conv_inverted bias add_", 1, "4r", "heads"), ("SiLU", 1, "4r", "heads"),
    ("conv_depth (depthwise 3x3)", 1, "4r", "heads"), ("conv_depth bias add_", 1, "4r", "heads"),
    ("SiLU(gate)", 1, "2r", "heads"), ("x * SiLU(gate)", 1, "3r", "heads"), ("conv_point", 1, 0, "heads"),
    ("gate_mlp x", 1, 2, "hidden"), ("residual", 1, 3, "hidden"),
]


def _sana_table(r: float) -> tuple[int, float, float]:
    kernels, hidden, heads = 0, 0.0, 0.0
    for _, k, p, split in SANA_OPS:
        kernels += k
        x = float(p[:-1]) * r if isinstance(p, str) else float(p)
        if split == "hidden":
            hidden += x
        else:
            heads += x
    return kernels, hidden, heads


@pytest.mark.parametrize("tp", [1, 2])
def test_eager_sana_block_is_its_op_table(tp):
    m = get_dense_model("sana-1600m")
    assert m.linear_head_dim == SANA_LINEAR_HEAD_DIM
    kernels, hidden, heads = _sana_table(m.mlp_ratio)
    assert block_kernels(m, 1, False) == EAGER_LINEAR_KERNELS == kernels
    assert elementwise_split(m.mlp_ratio, False, "linear") == pytest.approx((hidden, heads))
    n = 4096.0
    bw = block_work(m, "single", img_tokens=n, txt_tokens=300.0, attn_q=n, attn_kv=n, heads_share=1.0 / tp, tp=tp,
                    compiled=False)
    assert bw.kernels == kernels
    assert bw.elementwise.nbytes == pytest.approx(2 * m.hidden * n * (hidden + heads / tp))


def test_sana_counts_in_closed_form():
    """46 kernels; 29 D hidden-wide, 30.375 + 21r D over heads (r = 2.5: 111.875 D; the hand count had 44 kernels and
    25 + 32 + 13r = 89.5 D)."""
    assert _sana_table(2.5) == (46, 29, pytest.approx(30.375 + 21 * 2.5))
    assert elementwise_passes(2.5, False, "linear") == pytest.approx(111.875)
    assert block_kernels(get_dense_model("sana-1600m"), 1, True) == 9  # compiled: the shared assumption, unchanged


def test_replay_on_diffusers_gives_the_sana_counts():
    """Where diffusers 0.32.1 is installed: the replay of SanaTransformerBlock gives the model's SANA count. The
    replay files the cast back of the linear attention's [B, N, D] output as hidden-wide by its shape (the model: over
    heads, 3 D) and the fp32 matmuls as GEMMs (the model: their bytes beyond the core's bf16 4 D among the passes,
    4 + 4/d); the text mask's repeat_interleave is per text token and head (.009 D, not modelled)."""
    diffusers = pytest.importorskip("diffusers")
    if diffusers.__version__ != "0.32.1":
        pytest.skip(f"replay counted on diffusers 0.32.1, found {diffusers.__version__}")
    summarise = load_script("benchmarks/count_diffusers_elementwise.py", register=True).summarise

    m = get_dense_model("sana-1600m")
    tot = summarise("sana-1600m")
    hidden, heads = elementwise_split(m.mlp_ratio, False, "linear")
    assert tot["kernels"] == block_kernels(m, 1, False) and tot["gemm"] == 12 and tot["attention"] == 1
    assert tot["hidden_video"] - 3 == pytest.approx(hidden)
    assert tot["heads_video"] + 3 + (4 + 4 / SANA_LINEAR_HEAD_DIM) == pytest.approx(heads)
    assert tot["heads_text"] < 0.01 and tot["hidden_text"] == 0
    fp16 = summarise("sana-1600m-fp16")  # fp16: the linear attention's clip, one kernel and 2 D more
    assert fp16["kernels"] == tot["kernels"] + 1 and fp16["hidden_video"] == pytest.approx(tot["hidden_video"] + 2)
