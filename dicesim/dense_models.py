"""Dense DiT / MMDiT presets behind the published step-level figures, and the work of their blocks.

Every architecture number is the one ``traces/published/steps/models.toml`` records with its
source (a pinned URL and line); :data:`PRESET_SOURCES` names them per preset. The architecture
kinds:

- ``mmdit-double-single`` (FLUX.1-dev, HunyuanVideo, Open-Sora 2.0): double-stream blocks with
  separate text and image weights and one joint attention, then single-stream blocks over the
  concatenated sequence (one fused ``linear1`` D -> 3D + rD, one ``linear2`` D + rD -> D);
- ``mmdit-asymmetric`` (Mochi 1): double-stream blocks whose text stream is narrower
  (``hidden_text``) and projects into the visual attention width;
- ``dit-joint-text`` (CogVideoX-5B and -2B): one stream over text + video tokens (shared weights);
  CogVideoX-2B has no RoPE (``rope`` False: sinusoidal positions added once per forward); ConsisID
  is the CogVideoX-5B transformer plus identity modules (``identity``, :mod:`dicesim.dense_face`);
- ``dit-crossattn-linear`` (SANA 1600M): linear (ReLU-kernel) self-attention, softmax
  cross-attention to the text, a GLU inverted-bottleneck conv MLP.

Tokens per sample follow the schema's formula (docs/step-level.md):
``(frames_latent / patch_t) * (H / vae_h / patch_h) * (W / vae_w / patch_w)`` with
``frames_latent = (frames - 1) // vae_t + 1`` for video VAEs, plus the text tokens for joint
attention. Work is counted per block in FLOPs and HBM bytes (bf16), like :mod:`dicesim.models`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dicesim.dense_face import IdentityModules, extractor_params, face_params
from dicesim.errors import ConfigError
from dicesim.models import OpCost

ARCHITECTURES = ("mmdit-double-single", "mmdit-asymmetric", "dit-joint-text", "dit-crossattn-linear")
_M = "traces/published/steps/models.toml"


@dataclass(frozen=True, kw_only=True)
class DenseModel:
    """Shape of one dense diffusion transformer (immutable); see the module docstring."""

    name: str
    architecture: str
    double_blocks: int
    single_blocks: int
    hidden: int
    heads: int
    mlp_ratio: float
    patch: tuple[int, int, int]
    vae_downsample: tuple[int, int, int]
    latent_channels: int
    text_tokens: int
    joint_text: bool
    hidden_text: int = 0  # asymmetric MMDiT only: width of the text stream
    linear_head_dim: int = 0  # linear self-attention only: its head dim (its heads: hidden // it); ``heads``
    # then counts the softmax cross-attention's heads
    params_B: float = 0.0
    identity: IdentityModules | None = None  # ConsisID's face cross-attention and facial extractor
    rope: bool = True  # rotary embedding of q and k in every block (CogVideoX-2B: none)
    # the eager op sequence of an MMDiT's double and single blocks: "flux" (counted on diffusers' Flux blocks; Open-Sora
    # 2.0 runs the same, an assumption) or "hunyuanvideo" (counted on Tencent/HunyuanVideo's own blocks)
    block_code: str = "flux"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def self_heads(self) -> int:
        """Heads of the self-attention (the linear one's where it has its own head dim)."""
        return self.hidden // self.linear_head_dim if self.linear_head_dim else self.heads

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a causal video VAE (the first frame alone, then ``vae_t`` per latent)."""
        vt = self.vae_downsample[0]
        return 1 if frames == 1 or vt == 1 else (frames - 1) // vt + 1

    def image_tokens(self, height_px: int, width_px: int, frames: int) -> int:
        """Visual tokens of one sample (patches of the latent)."""
        pt, ph, pw = self.patch
        _, vh, vw = self.vae_downsample
        return (self.latent_frames(frames) // pt) * (height_px // vh // ph) * (width_px // vw // pw)

    def latent_hw(self, height_px: int, width_px: int) -> tuple[int, int]:
        """Latent height and width (before patching): the grid sequence parallelism splits."""
        return height_px // self.vae_downsample[1], width_px // self.vae_downsample[2]


def _consisid(cog: DenseModel) -> DenseModel:
    """CogVideoX-5B's transformer plus ConsisID's identity modules at the class defaults; the parameter
    count adds theirs (counted, :mod:`dicesim.dense_face`) to CogVideoX-5B's stated 5.0 B."""
    ident = IdentityModules()
    added = face_params(ident.cross, cog.hidden, cog.single_blocks) + extractor_params(ident.extractor)
    return replace(cog, name="consisid", identity=ident, params_B=cog.params_B + added / 1e9)


def _presets() -> dict[str, DenseModel]:
    presets = {
        "flux.1-dev": DenseModel(name="flux.1-dev", architecture="mmdit-double-single", double_blocks=19,
                                 single_blocks=38, hidden=3072, heads=24, mlp_ratio=4.0, patch=(1, 2, 2),
                                 vae_downsample=(1, 8, 8), latent_channels=16, text_tokens=512, joint_text=True,
                                 params_B=12.0),
        "hunyuanvideo-t2v": DenseModel(name="hunyuanvideo-t2v", architecture="mmdit-double-single", double_blocks=20,
                                       single_blocks=40, hidden=3072, heads=24, mlp_ratio=4.0, patch=(1, 2, 2),
                                       vae_downsample=(4, 8, 8), latent_channels=16, text_tokens=256,
                                       joint_text=True, params_B=13.0, block_code="hunyuanvideo"),
        "open-sora-2.0": DenseModel(name="open-sora-2.0", architecture="mmdit-double-single", double_blocks=19,
                                    single_blocks=38, hidden=3072, heads=24, mlp_ratio=4.0, patch=(1, 2, 2),
                                    vae_downsample=(4, 8, 8), latent_channels=16, text_tokens=512, joint_text=True,
                                    params_B=11.0),
        "mochi-1-preview": DenseModel(name="mochi-1-preview", architecture="mmdit-asymmetric", double_blocks=48,
                                      single_blocks=0, hidden=3072, hidden_text=1536, heads=24, mlp_ratio=4.0,
                                      patch=(1, 2, 2), vae_downsample=(6, 8, 8), latent_channels=12,
                                      text_tokens=256, joint_text=True, params_B=10.0),
        "cogvideox-5b": DenseModel(name="cogvideox-5b", architecture="dit-joint-text", double_blocks=0,
                                   single_blocks=42, hidden=3072, heads=48, mlp_ratio=4.0, patch=(1, 2, 2),
                                   vae_downsample=(4, 8, 8), latent_channels=16, text_tokens=226, joint_text=True,
                                   params_B=5.0),
        "cogvideox-2b": DenseModel(name="cogvideox-2b", architecture="dit-joint-text", double_blocks=0,
                                   single_blocks=30, hidden=1920, heads=30, mlp_ratio=4.0, patch=(1, 2, 2),
                                   vae_downsample=(4, 8, 8), latent_channels=16, text_tokens=226, joint_text=True,
                                   params_B=2.0, rope=False),
        "sana-1600m": DenseModel(name="sana-1600m", architecture="dit-crossattn-linear", double_blocks=0,
                                 single_blocks=20, hidden=2240, heads=20, mlp_ratio=2.5, patch=(1, 1, 1),
                                 vae_downsample=(1, 32, 32), latent_channels=32, text_tokens=300, joint_text=False,
                                 linear_head_dim=32, params_B=1.648),
    }
    presets["consisid"] = _consisid(presets["cogvideox-5b"])
    return presets


#: where each preset's numbers come from (models.toml holds the pinned URL and line of each fact)
PRESET_SOURCES: dict[str, str] = {
    "flux.1-dev": f"{_M} [flux.1-dev]: black-forest-labs/flux@802fb47 src/flux/util.py:299-328,689, sampling.py:41",
    "hunyuanvideo-t2v": f"{_M} [hunyuanvideo-t2v]: Tencent/HunyuanVideo@fa14b00 hyvideo/modules/models.py:452,742-760,"
                        " hyvideo/config.py:26-37,60-65,96-102,340",
    "open-sora-2.0": f"{_M} [open-sora-2.0]: hpcaitech/Open-Sora@7ad6a96 configs/diffusion/inference/256px.py, 768px.py",
    "mochi-1-preview": f"{_M} [mochi-1-preview]: genmoai/mochi@0c86aeb src/genmo/mochi_preview/pipelines.py:185-203,"
                       " README.md:110-121",
    "cogvideox-5b": f"{_M} [cogvideox-5b]: THUDM/CogVideo sat/configs/cogvideox_5b.yaml (layers, width, heads, text "
                    "length); mlp_ratio 4 is diffusers' CogVideoXBlock default (ff_inner_dim None -> FeedForward "
                    "mult=4), huggingface/diffusers@009167a src/diffusers/models/transformers/cogvideox_transformer_3d.py",
    "cogvideox-2b": f"{_M} [cogvideox-2b]: THUDM/CogVideo@e000b43 sat/configs/cogvideox_2b.yaml:25-64 (30 layers, "
                    "width 1920, 30 heads, patch 2, text length 226, Basic3DPositionEmbeddingMixin: no RoPE); "
                    "diffusers runs no RoPE without use_rotary_positional_embeddings (default False), "
                    "huggingface/diffusers@2ee3215 "
                    "src/diffusers/models/transformers/cogvideox_transformer_3d.py:214-256, "
                    "src/diffusers/models/attention_processor.py:1926-1932; mlp_ratio 4 as cogvideox-5b",
    "consisid": f"{_M} [consisid]: the cogvideox-5b preset plus the identity modules of huggingface/diffusers@23b467c "
                "src/diffusers/models/transformers/consisid_transformer_3d.py:183-228, 463-505, 586-624, 713-778 "
                "(class defaults; the released config is on Hugging Face): dicesim/dense_face.py",
    "sana-1600m": f"{_M} [sana-1600m]: NVlabs/Sana diffusion/model/nets/sana_multi_scale.py SanaMS_1600M_P1_D20; "
                  "configs/sana_config/4096ms/Sana_1600M_img4096_bf16.yaml; the linear self-attention's heads are "
                  "hidden // linear_head_dim 32 = 70 (SanaMSBlock: self_num_heads = hidden_size // linear_head_dim), "
                  "the cross-attention's 20 x 112: huggingface/diffusers@a4df8db "
                  "src/diffusers/models/transformers/sana_transformer.py:344-348 (70, 32, 20, 112)",
}

DENSE_MODELS: dict[str, DenseModel] = _presets()


def get_dense_model(name: str) -> DenseModel:
    """A dense preset by its models.toml id."""
    if name not in DENSE_MODELS:
        raise ConfigError("model", f"unknown dense model {name!r}", tuple(DENSE_MODELS))
    return DENSE_MODELS[name]


#: RoPE's share of the eager count, per joint token (q and k, 2 x 26 D); a preset without RoPE
#: (``rope`` False) runs the rest. Compiled, RoPE rides in the norm's fused kernel: nothing to remove.
EAGER_ROPE_PASSES = 2 * 26
#: diffusers' ``RMSNorm.forward`` in fp32 (normalization.py:530-543, the same in every version the runs used), per
#: token in units of its width: cast to fp32 3, square 4, mean 2, x rsqrt into fp32 3 (the bf16 input read again),
#: cast back 3 = 15 (its + eps and rsqrt act on one value per row: not counted); a norm with a weight adds x weight 2
DIFFUSERS_RMSNORM_PASSES = 3 + 4 + 2 + 3 + 3
#: diffusers' RMSNorm of q and of k (with their weights) per token: 2 x 17 D (Flux; the op list at
#: :func:`elementwise_split`)
FLUX_RMSNORM_QK_PASSES = 2 * (DIFFUSERS_RMSNORM_PASSES + 2)


#: CogVideoX's eager block, replayed op by op on CPU in bf16 (``benchmarks/count_diffusers_elementwise.py``,
#: diffusers 0.32.1: ``CogVideoXBlock.forward`` transformers/cogvideox_transformer_3d.py:117-153,
#: ``CogVideoXLayerNormZero.forward`` normalization.py:451-457, ``CogVideoXAttnProcessor2_0.__call__``
#: attention_processor.py:2809-2867, ``apply_rotary_emb`` embeddings.py:1171-1210; the same code as
#: huggingface/diffusers@2ee3215, 2024-09-04, the torchao baselines' diffusers, and as ConsisIDBlock at
#: @23b467c), per token in units of D bf16 elements. Each stream (text and video alike): LayerNorm 2 and
#: modulate (x (1 + scale) 2, + shift 2), gate 2 and residual 3, the same again after attention = 22.
COGVIDEOX_STREAM_PASSES = 2 * ((2 + 2 + 2) + (2 + 3))
#: over the joint tokens, hidden-wide: the [text, video] concat before to_q/k/v (2) and before the MLP (2)
COGVIDEOX_CONCAT_PASSES = 2 + 2
#: over heads (tensor parallelism splits them), per joint token: LayerNorm of q and of k on their transposed
#: [B, H, S, d] views, each a contiguous copy inside the op (2: ATen's ``input.expect_contiguous()``) and the
#: norm (2), and the attention output's layout copy before to_out (2); the MLP adds GELU over the r*D hidden (2r)
COGVIDEOX_HEAD_PASSES = 2 * (2 + 2) + 2
#: RoPE on q and on k over the video tokens only (``query[:, :, text_seq_length:] = apply_rotary_emb(...)``),
#: each: negate 1, stack 2, two fp32 casts 3 + 3, two fp32 products 4 + 4, sum 6, cast back 3, the copy
#: into the slice 2 = 28 (the fp32 cos / sin table, d wide and shared by the heads, is not counted, as for Flux)
COGVIDEOX_ROPE_PASSES = 2 * (1 + 2 + 3 + 3 + 4 + 4 + 6 + 3 + 2)


#: Mochi's eager double block (``mmdit-asymmetric``), replayed the same way on the diffusers its published runs
#: used (main between 3f329a4, 2024-11-05, and 128b96f, 2024-12-17: the block, norms and processor did not change
#: in between; replayed at 5c94937, 2024-11-14: ``MochiTransformerBlock.forward``
#: transformers/transformer_mochi.py:125-162, ``MochiRMSNormZero`` normalization.py:237-261, ``RMSNorm.forward``
#: :530-543, ``MochiAttnProcessor2_0`` attention_processor.py:3513-3598).
#: Every norm is diffusers' RMSNorm in fp32 (:data:`DIFFUSERS_RMSNORM_PASSES`).
MOCHI_RMSNORM_PASSES = DIFFUSERS_RMSNORM_PASSES
#: per token of each stream, in that stream's width: norm1 and x (1 + scale) 2; norm2, x tanh(gate) 2, residual 3;
#: norm3 and x (1 + scale) 2; norm4, x tanh(gate) 2, residual 3 = 74
MOCHI_STREAM_PASSES = 4 * MOCHI_RMSNORM_PASSES + 2 + (2 + 3) + 2 + (2 + 3)
#: over heads, per token (video and text alike, D wide): RMSNorm of q and of k with their weight (x weight 2),
#: the [video, text] concat of q, k and v (3 x 2), the attention output's layout copy (2) = 42
MOCHI_HEAD_PASSES = 2 * (MOCHI_RMSNORM_PASSES + 2) + 3 * 2 + 2
#: the SwiGLU hidden of each stream, in units of its width: ``(4 * dim * 2) // 3`` (8/3: 8192 of 3072, 4096 of 1536)
MOCHI_FF_INNER = 8 / 3
#: SwiGLU over it: SiLU of the gate (2) and value x gate (3), per unit of the inner width
MOCHI_SWIGLU_PASSES = 2 + 3
#: RoPE on q and on k over the video tokens: even and odd halves to fp32 (2 x 1.5), four fp32 products with the
#: per-head fp32 table (4 x 3: the table is d/2 x heads wide, read by each product), difference and sum (3 + 3),
#: casts back (2 x 1.5), stack (2) = 26 each
MOCHI_ROPE_PASSES = 2 * (2 * 1.5 + 4 * 3 + 3 + 3 + 2 * 1.5 + 2)


#: HunyuanVideo's eager blocks, replayed the same way on Tencent/HunyuanVideo's own code (fa14b00, 2025-05-23; the
#: block code is unchanged since 05d41c2, 2024-12-06, before the xDiT H100 / H20 tables of 2024-12-09, which ran it):
#: ``MMDoubleStreamBlock.forward`` hyvideo/modules/models.py:132-252, ``MMSingleStreamBlock.forward`` :326-393,
#: ``RMSNorm`` norm_layers.py:32-59, ``apply_rotary_emb`` / ``rotate_half`` posemb_layers.py:133-171, ``modulate`` /
#: ``apply_gate`` modulate_layers.py:31-68, one-GPU ``attention`` (flash-attn varlen on views, no layout copy)
#: attenion.py:60-155. Its RMSNorm of q or k: x.float() 3, square 4, mean 2, x rsqrt in fp32 4, type_as 3, x weight 2.
HUNYUAN_RMSNORM_PASSES = 3 + 4 + 2 + 4 + 3 + 2
#: its RoPE on q or k (video tokens only): x.float() 3, x cos 4, x.float() again for rotate_half 3, negate 2 and
#: stack 4 in fp32, x sin 4, sum 6, type_as 3 = 29
HUNYUAN_ROPE_PASSES = 2 * (3 + 4 + 3 + 2 + 4 + 4 + 6 + 3)
#: hidden-wide, per token of each stream of the double block: LayerNorm 2 and modulate 4, gate 2, residual 3, twice
HUNYUAN_DOUBLE_STREAM_PASSES = 2 * (2 + 4 + 2 + 3)
#: over heads, per token of the double block: q and k RMSNorm, the [video, text] concat of q, k, v (3 x 2); + GELU 2r
HUNYUAN_DOUBLE_HEAD_PASSES = 2 * HUNYUAN_RMSNORM_PASSES + 3 * 2
#: the single block, hidden-wide per joint token: LayerNorm and modulate 6, gate 2, residual 3
HUNYUAN_SINGLE_HIDDEN_PASSES = 2 + 4 + 2 + 3
#: over heads, per joint token: q and k RMSNorm; + GELU 2r and the [attention, MLP] concat 2(1 + r)
HUNYUAN_SINGLE_HEAD_PASSES = 2 * HUNYUAN_RMSNORM_PASSES
#: the single block's re-concat of the rotated video q and k with the text's (2 x 2, joint tokens): only with RoPE
HUNYUAN_SINGLE_ROPE_CONCAT_PASSES = 2 * 2


#: SANA's eager block (``dit-crossattn-linear``), replayed op by op on CPU in bf16 on diffusers 0.32.1
#: (``benchmarks/count_diffusers_elementwise.py`` "sana-1600m"; was a hand count, wave 4: 25 + 32 + 13r D, 44 kernels):
#: ``SanaTransformerBlock.forward`` transformers/sana_transformer.py:138-181 and ``GLUMBConv.forward`` :62-82,
#: ``SanaLinearAttnProcessor2_0`` attention_processor.py:5874-5913 (self), ``AttnProcessor2_0`` :3227-3306 (cross,
#: with the text mask as the bias ``SanaTransformer2DModel.forward`` makes, :404-407), cuDNN's convolution as torch
#: runs it (the conv, then ``output.add_(bias)``; channels-last throughout: the block's ``permute(0, 3, 1, 2)`` of the
#: [B, H, W, D] tokens is a channels-last view and cuDNN keeps that format), ``F.pad`` as ``fill_`` + ``copy_``
#: (PadNd.cpp). Per token in units of D bf16 elements. Hidden-wide: norm1 LayerNorm 2, x (1 + scale) 2, + shift 2;
#: to_out's bias 2 (to_out is ``mm`` on the transposed attention output, then ``add``: no layout copy); gate 2,
#: residual 3; the cross-attention's ``/ rescale_output_factor`` (1.0, still a kernel) 2, residual 3; norm2 and modulate
#: 6; gate 2, residual 3 = 29.
SANA_HIDDEN_PASSES = (2 + 2 + 2) + 2 + (2 + 3) + 2 + 3 + (2 + 2 + 2) + (2 + 3)
#: the linear attention's head dim, which its fp32 padding row (V gets a row of ones: d + 1 rows) scales by
SANA_LINEAR_HEAD_DIM = 32
_D1 = (SANA_LINEAR_HEAD_DIM + 1) / SANA_LINEAR_HEAD_DIM
#: over heads, the linear attention in fp32: ReLU of q and k 2 + 2, q, k, v ``.float()`` 3 x 3, ``F.pad``'s fill of the
#: padded V 2 (d + 1) / d and copy 2 + 2, the two matmuls' fp32 bytes beyond the bf16 4 D the core counts
#: ((2 (d + 1) / d + 2) x 2 - 4), the + 1e-15 of the last row 4 / d, the division 4 + 2 / d, the cast back of the
#: [B, N, D] output 3 (over heads: before the out projection) = 30.375 at d = 32; the cross-attention's SDPA output
#: is laid out like its query, so its transpose-reshape is a view (no copy)
SANA_LINEAR_ATTN_PASSES = ((2 + 2) + 3 * 3 + (2 * _D1 + 4) + (2 * (2 * _D1 + 2) - 4) + 4 / SANA_LINEAR_HEAD_DIM
                           + (4 + 2 / SANA_LINEAR_HEAD_DIM) + 3)
#: GLUMBConv per unit of mlp_ratio r (its inverted output is 2 r D wide, the gated half r D): conv_inverted's bias 4,
#: SiLU 4, the depthwise 3x3 conv 4 (input read, output written: costed as a memory pass) and its bias 4, SiLU of
#: the gate 2, value x gate 3 = 21 (the hand count had 13: no bias adds)
SANA_GLUMBCONV_PASSES = 4 + 4 + 4 + 4 + 2 + 3
#: the depthwise conv's share of it (read and write the 2 r D channels)
SANA_DEPTHWISE_PASSES = 4


#: elementwise passes over the activations per token and block, in units of D bf16 elements read or
#: written (an fp32 element counts 2). Eager, counted on diffusers' Flux blocks op by op
#: (huggingface/diffusers@004f1e8 transformer_flux.py; RMSNorm and apply_rotary_emb as diffusers
#: writes them, in fp32): per stream adaLN LayerNorm and modulate (2 + 2 + 2), RMSNorm of q and of k
#: (2 x 17: cast to fp32 3, square 4, mean 2, x rsqrt into fp32 3, cast back 3, x weight 2; wave 6's replay,
#: benchmarks/count_diffusers_elementwise.py, found the cast and the square as two passes where wave 5 had counted
#: one of 3), the attention output layout copy (2), gate and residual (2 + 3), second LayerNorm and modulate (6),
#: GELU over the r*D hidden (2r), gate and residual (5): 58 + 2r; per joint token RoPE on q and k (2 x 26: negate 1,
#: stack 2, two fp32 casts 3 + 3, two products 4 + 4, sum 6, cast back 3) and the q/k/v concat (6): 58.
#: The single block: adaLN 6, GELU 2r, RMSNorm 34, RoPE 52, output copy 2 (a view on one GPU, a copy after a
#: Ulysses exchange: kept), the [attention, MLP] concat 2(1 + r), gate 2, residual 3: 101 + 4r. CogVideoX
#: (``kind`` "joint-text", the ``dit-joint-text``
#: presets: CogVideoX-5B, -2B, ConsisID's base), replayed on diffusers 0.32.1's CogVideoXBlock and
#: CogVideoXAttnProcessor2_0 (:data:`COGVIDEOX_STREAM_PASSES` and below; without RoPE here, which runs on the
#: video tokens only: :data:`COGVIDEOX_ROPE_PASSES`, added per video token by :func:`eager_passes`). Mochi: its own
#: per-video- and per-text-token count (:data:`MOCHI_STREAM_PASSES` and below, :func:`eager_passes`); HunyuanVideo
#: its own blocks' (:data:`HUNYUAN_RMSNORM_PASSES` and below). Open-Sora 2.0 uses the Flux count (an assumption:
#: same op sequence). SANA (``kind`` "linear"): replayed on diffusers 0.32.1 (:data:`SANA_HIDDEN_PASSES` and below):
#: 29 D hidden-wide, 30.375 + 21r D over heads or the MLP hidden (the wave-4 hand count had 25 and 32 + 13r).
#: With torch.compile (an assumption, not measured: Inductor fuses each elementwise chain between two
#: GEMMs into one kernel that reads its inputs once and writes once): norm+modulate (2), norm+RoPE
#: (4), gate+residual (3), norm+modulate (2), GELU (2r), gate+residual (3).
def elementwise_split(mlp_ratio: float, compiled: bool, kind: str | None = None) -> tuple[float, float]:
    """(hidden-wide passes, passes over heads or the MLP hidden): tensor parallelism splits the second
    (q/k norm, RoPE, the q/k/v concat and output copy, GELU), each rank still runs the first (adaLN,
    LayerNorm, gate, residual) over the whole hidden. Eager ``"joint-text"`` (CogVideoX) leaves out its
    RoPE, which runs on the video tokens only (:data:`COGVIDEOX_ROPE_PASSES`, added by :func:`eager_passes`)."""
    mlp = 2 * mlp_ratio
    if compiled:
        return 2 + 3 + 2 + 3, 4 + mlp
    if kind == "double":
        return 6 + 5 + 6 + 5, (FLUX_RMSNORM_QK_PASSES + 2 + mlp) + EAGER_ROPE_PASSES + 6
    if kind == "single":
        return 6 + 2 + 3, mlp + FLUX_RMSNORM_QK_PASSES + EAGER_ROPE_PASSES + 2 + (2 + mlp)
    if kind == "linear":
        return SANA_HIDDEN_PASSES, SANA_LINEAR_ATTN_PASSES + SANA_GLUMBCONV_PASSES * mlp_ratio
    if kind == "joint-text":
        return COGVIDEOX_STREAM_PASSES + COGVIDEOX_CONCAT_PASSES, COGVIDEOX_HEAD_PASSES + mlp
    return 4 + 4 + 4 + 6 + 8 + 3 + 4 + mlp + 3, 0.0


def elementwise_passes(mlp_ratio: float, compiled: bool, kind: str | None = None) -> float:
    """All passes of one block per token (tensor parallel degree 1)."""
    return sum(elementwise_split(mlp_ratio, compiled, kind))


def eager_passes(m: DenseModel, kind: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Eager elementwise passes of one ``kind`` block of ``m``, per video token and per text token of the block's
    streams: each (hidden-wide, over heads or the MLP hidden), in units of D bf16 elements (see
    :func:`elementwise_split`). Flux's and SANA's count is the same for every token; CogVideoX's and HunyuanVideo's
    RoPE runs on the video tokens only; Mochi's text stream is ``hidden_text`` wide."""
    r = m.mlp_ratio
    if m.architecture == "dit-crossattn-linear":
        both = elementwise_split(r, False, "linear")
        return both, both
    if m.architecture == "dit-joint-text":
        hidden, split = elementwise_split(r, False, "joint-text")
        return (hidden, split + (COGVIDEOX_ROPE_PASSES if m.rope else 0.0)), (hidden, split)
    if m.architecture == "mmdit-asymmetric":
        q = (m.hidden_text or m.hidden) / m.hidden  # the text stream's width, in units of D
        ff = MOCHI_SWIGLU_PASSES * MOCHI_FF_INNER
        video = (MOCHI_STREAM_PASSES, MOCHI_HEAD_PASSES + ff + (MOCHI_ROPE_PASSES if m.rope else 0.0))
        return video, (MOCHI_STREAM_PASSES * q, MOCHI_HEAD_PASSES + ff * q)
    if m.block_code == "hunyuanvideo":
        rope = HUNYUAN_ROPE_PASSES if m.rope else 0.0
        if kind == "double":
            hidden, split = HUNYUAN_DOUBLE_STREAM_PASSES, HUNYUAN_DOUBLE_HEAD_PASSES + 2 * r
        else:
            hidden = HUNYUAN_SINGLE_HIDDEN_PASSES
            split = HUNYUAN_SINGLE_HEAD_PASSES + 2 * r + 2 * (1 + r)
            split += HUNYUAN_SINGLE_ROPE_CONCAT_PASSES if m.rope else 0.0
        return (hidden, split + rope), (hidden, split)
    hidden, split = elementwise_split(r, False, kind)
    if not m.rope:
        split -= EAGER_ROPE_PASSES
    return (hidden, split), (hidden, split)


@dataclass(frozen=True)
class BlockWork:
    """Work of one block on one rank, split by the op kind that times it."""

    linear_ops: tuple[OpCost, ...]  # GEMMs, one per kernel (weights read once, activations in and out)
    attention_ops: tuple[OpCost, ...]  # the attention cores, one per kernel (softmax; SANA: linear and cross)
    elementwise: OpCost  # memory-bound passes
    kernels: int  # kernel launches of the block (gaps between kernels)

    @property
    def linear(self) -> OpCost:
        """All GEMMs of the block together (their FLOPs and bytes; time them per kernel, :attr:`linear_ops`)."""
        return _total(self.linear_ops)

    @property
    def attention(self) -> OpCost:
        """All attention cores of the block together (timed per kernel, :attr:`attention_ops`)."""
        return _total(self.attention_ops)


def _total(ops: tuple[OpCost, ...]) -> OpCost:
    total = OpCost(flops=0.0, nbytes=0.0)
    for op in ops:
        total = total + op
    return total


#: width of CogVideoX's timestep embedding, the input of its per-block modulation linears: diffusers'
#: default ``time_embed_dim=512`` (huggingface/diffusers@a4df8db cogvideox_transformer_3d.py:229)
COGVIDEOX_TIME_EMBED_DIM = 512


def modulation_weights(m: DenseModel, kind: str) -> float:
    """Weight elements of one block's adaptive-norm modulation linears (conditioning -> shift, scale,
    gate). They run on the one conditioning vector per sample, so their time is the read of their
    weights; every rank reads all of them every forward (sequence parallelism splits tokens, not these).
    Counted from the code each preset runs:

    - double-stream MMDiT: image and text ``Modulation(D, double=True)``, D -> 6D each
      (black-forest-labs/flux@802fb47 src/flux/modules/layers.py:113-118, 136, 147;
      Tencent/HunyuanVideo@fa14b00 hyvideo/modules/models.py:48-51, 87-90 ``ModulateDiT(factor=6)``);
      single-stream: D -> 3D (layers.py:225; models.py:312-315 ``factor=3``). Open-Sora 2.0 runs the
      Flux blocks (an assumption, as for its other counts);
    - Mochi: ``MochiRMSNormZero(D, 4D)`` on the image and ``(D, 4 D_text)`` on the text
      (huggingface/diffusers@a4df8db transformer_mochi.py:157-160; the last block's text norm,
      D -> 2 D_text, is counted as the others: an approximation of 1/48 of one linear);
    - CogVideoX: two ``CogVideoXLayerNormZero`` per block, 512 -> 6D each (cogvideox_transformer_3d.py:93,
      107; normalization.py:461);
    - SANA: none per block: its blocks add a shared ``scale_shift_table`` to one timestep projection
      made once per forward (sana_transformer.py:257-261); that one projection is not counted.
    """
    D = m.hidden
    if m.architecture == "mmdit-double-single":
        return 2 * 6.0 * D * D if kind == "double" else 3.0 * D * D
    if m.architecture == "mmdit-asymmetric":
        return 4.0 * D * D + 4.0 * (m.hidden_text or D) * D
    if m.architecture == "dit-joint-text":
        return 2 * COGVIDEOX_TIME_EMBED_DIM * 6.0 * D
    return 0.0


def block_work(m: DenseModel, kind: str, *, img_tokens: float, txt_tokens: float, attn_q: float, attn_kv: float,
               heads_share: float, tp: int, compiled: bool, dtype_nbytes: int = 2) -> BlockWork:
    """One ``kind`` block ('double' or 'single') on one rank.

    ``img_tokens``/``txt_tokens``: tokens this rank runs the linear layers on; ``attn_q`` x
    ``attn_kv``: query and key tokens of its attention, over ``heads_share`` of the heads.
    """
    D, r, w = m.hidden, m.mlp_ratio, dtype_nbytes
    lin: list[OpCost] = []  # one entry per GEMM kernel: the roofline applies kernel by kernel
    streams = [(img_tokens, D)]
    if kind == "double":
        streams.append((txt_tokens, m.hidden_text or D))
    else:  # one stream over the joint sequence (text tokens ride along when attention is joint)
        streams = [(img_tokens + (txt_tokens if m.joint_text else 0), D)]
    for n, d in streams:
        if m.architecture == "mmdit-double-single" and kind == "single":
            lin += [OpCost.linear(n, D, (3 + r) * D, w, tp), OpCost.linear(n, (1 + r) * D, D, w, tp)]
        else:  # q, k, v into the visual width (one entry for three kernels of a third: the same roofline
            # but for the input read), out projection, two MLP layers of the stream's width
            lin += [OpCost.linear(n, d, 3 * D, w, tp), OpCost.linear(n, D, d, w, tp)]
            if m.architecture != "dit-crossattn-linear":  # SANA's MLP is the conv GLU below
                lin += [OpCost.linear(n, d, r * d, w, tp), OpCost.linear(n, r * d, d, w, tp)]
    hd = D * heads_share
    if m.architecture == "dit-crossattn-linear":
        # linear attention: V (padded with a row of ones) K^T, (d + 1) x d per head, then that times Q, both
        # over the rank's tokens, at the linear attention's own head dim
        dl = m.linear_head_dim or m.head_dim
        # (fp32 in diffusers and xDiT: memory-bound even at the fp32 rate, its own roofline; the fp32 bytes beyond
        # these bf16 ones are among the elementwise passes)
        core = [OpCost(flops=4.0 * attn_q * hd * (dl + 1), nbytes=float(w * 4 * attn_q * hd))]
        # cross-attention: q and out projections on the image tokens, k/v on the text, softmax core
        lin += [OpCost.linear(img_tokens, D, D, w, tp), OpCost.linear(img_tokens, D, D, w, tp),
                OpCost.linear(m.text_tokens, D, 2 * D, w, tp)]
        core.append(OpCost(flops=4.0 * attn_q * m.text_tokens * hd, nbytes=float(w * 2 * attn_q * hd)))
        # GLUMBConv: 1x1 D -> 2rD (GLU) and 1x1 rD -> D are GEMMs (diffusers sana_transformer.py:38-82); the
        # depthwise 3x3 between them (18 FLOP per element read) is memory-bound and is costed with the
        # elementwise passes by its bytes (:func:`elementwise_split`, 4r), not at the GEMM rate
        lin += [OpCost.linear(img_tokens, D, 2 * r * D, w, tp), OpCost.linear(img_tokens, r * D, D, w, tp)]
    else:
        core = [OpCost(flops=4.0 * attn_q * attn_kv * hd, nbytes=float(w * (2 * attn_q + 2 * attn_kv) * hd))]
    # the modulation linears: a GEMV per sample, timed by its weight read (flops negligible, not counted)
    mod_w = modulation_weights(m, kind)
    if mod_w:
        lin.append(OpCost(flops=0.0, nbytes=float(w * mod_w)))
    tok = sum(n for n, _ in streams)
    if compiled:
        hidden_wide, split = elementwise_split(r, True)
        passes = (hidden_wide + split / tp) * tok
    else:  # the block's text tokens (a single-stream block carries them when attention is joint)
        (hv, sv), (ht, st) = eager_passes(m, kind)
        passes = (hv + sv / tp) * img_tokens + (ht + st / tp) * (tok - img_tokens)
    elem = OpCost(flops=0.0, nbytes=float(w * passes * D))
    return BlockWork(linear_ops=tuple(lin), attention_ops=tuple(core), elementwise=elem,
                     kernels=block_kernels(m, len(streams), compiled))


#: eager kernels of one block, counted on diffusers' FluxTransformerBlock / FluxSingleTransformerBlock
#: and FluxAttnProcessor2_0 (huggingface/diffusers@004f1e8 src/diffusers/models/transformers/transformer_flux.py):
#: per stream adaLN-Zero 6 (SiLU, linear, LayerNorm, 1 + scale, x scale, + shift), q/k/v linears 3,
#: RMSNorm of q and k 2 x 8 (float cast, square, mean, + eps, rsqrt, x, cast back to the weight's bf16, x weight:
#: src/diffusers/models/normalization.py RMSNorm.forward, the same at huggingface/diffusers@069186f :530-543),
#: out projection 1, gate and residual 2, LayerNorm and modulate 4, feed-forward 3 (linear, GELU, linear), gate
#: and residual 2; once per block: q/k/v concat 3, RoPE on q and k 2 x 8 (negation, stack of the rotated
#: halves, two float casts, two products, the sum, the cast back: apply_rotary_emb, src/diffusers/models/
#: embeddings.py, @069186f :799-818), attention 1, output layout copy 1. The single block: adaLN 6, MLP in +
#: GELU 2, q/k/v 3, RMSNorm 16, RoPE 16, attention + layout 2, concat 1, gate 1, out projection 1, residual 1.
#: (Wave 5 recount, from a CPU TorchDispatchMode replay of these blocks: the cast back in RMSNorm and two
#: kernels of RoPE were missing, 87 / 43 -> 95 / 49; the single block's layout copy is a view when no Ulysses
#: exchange precedes it, one kernel fewer, not modelled.) CogVideoX, Mochi and HunyuanVideo have their own counts
#: (below); Open-Sora 2.0 runs a like op sequence (adaLN, q/k/v, QK norm, RoPE, attention, gate, MLP): the Flux
#: count is used for it (an assumption).
EAGER_STREAM_KERNELS = 37
EAGER_JOINT_KERNELS = 21
EAGER_SINGLE_KERNELS = 49
#: RoPE's kernels among them (q and k, 2 x 8); a preset without RoPE does not launch them
EAGER_ROPE_KERNELS = 2 * 8
#: SANA's block, replayed on the diffusers code of :data:`SANA_HIDDEN_PASSES`: modulation (table + timestep) 1,
#: LayerNorm and modulate 4, q/k/v 3, ReLU 2, fp32 casts 3, pad (fill, copy) 2, two matmuls 2, eps add and division
#: 2, cast back 1, out projection (mm, bias add) 2, gate and residual 2; the text mask's repeat_interleave 1,
#: cross-attention q/k/v 3, SDPA 1, out 1, / rescale_output_factor 1, residual 1; LayerNorm and modulate 4;
#: GLUMBConv inverted conv and its bias 2, SiLU 1, depthwise conv and its bias 2, SiLU 1, product 1, point conv 1;
#: gate and residual 2 = 46 (the hand count had 44: pad as one kernel, two layout copies that are views, no bias add
#: after to_out, no rescale division, no mask). In fp16 the linear attention's output is clipped: one more (not
#: modelled: the presets' SANA runs are bf16, the paper's fp16 rows run NVlabs' own code).
EAGER_LINEAR_KERNELS = ((1 + 4 + 3 + 2 + 3 + 2 + 2 + 2 + 1 + 2 + 2) + (1 + 3 + 1 + 1 + 1 + 1) + 4
                        + (2 + 1 + 2 + 1 + 1 + 1) + 2)
#: CogVideoX's block (``dit-joint-text``), replayed on the diffusers code of :data:`COGVIDEOX_STREAM_PASSES`:
#: norm1 SiLU and linear 2, per stream LayerNorm, 1 + scale, x, + shift 2 x 4; [text, video] concat 1, q/k/v 3,
#: LayerNorm of q and of k each with its contiguous copy 4, attention 1, output layout copy 1, out projection 1,
#: gate and residual 2 x 2; norm2 as norm1 10; concat 1, feed-forward 3 (linear, GELU, linear), gate and
#: residual 2 x 2 = 43 without RoPE
COGVIDEOX_EAGER_KERNELS = 2 + 2 * 4 + 1 + 3 + 2 * 2 + 1 + 1 + 1 + 2 * 2 + (2 + 2 * 4) + 1 + 3 + 2 * 2
#: RoPE on q and k over the video tokens: 2 x (negate, stack, two casts, two products, sum, cast back, slice copy)
COGVIDEOX_ROPE_KERNELS = 2 * 9
#: Mochi's double block, replayed on the diffusers of :data:`MOCHI_RMSNORM_PASSES` (its RMSNorm is 7 kernels: fp32
#: cast, square, mean, + eps, rsqrt, x, cast back; 8 with the q/k norms' weight): per stream norm1 (SiLU, linear,
#: RMSNorm, 1 + scale, x) 2 x 11, q/k/v 2 x 3, q/k norms 4 x 8, [video, text] concat of q, k, v 3, attention 1,
#: layout copy 1, out projections 2; per stream after attention: norm2, tanh, x, + (10), norm3, 1 + scale, x (9),
#: SwiGLU feed-forward (linear, SiLU, x, linear: 4), norm4, tanh, x, + (10) = 2 x 33: 133 without RoPE
MOCHI_EAGER_KERNELS = 2 * 11 + 2 * 3 + 4 * 8 + 3 + 1 + 1 + 2 + 2 * ((7 + 3) + (7 + 2) + 4 + (7 + 3))
#: its RoPE on q and k: 2 x (two fp32 casts, four products, difference, sum, two casts back, stack)
MOCHI_ROPE_KERNELS = 2 * 11
#: HunyuanVideo's double block, replayed on the code of :data:`HUNYUAN_RMSNORM_PASSES` (RMSNorm 8 kernels: fp32 cast,
#: square, mean, + eps, rsqrt, x, type_as, x weight): per stream modulation (SiLU, linear) 2, LayerNorm, 1 + scale,
#: x, + shift 4, fused q/k/v linear 1, q/k RMSNorm 16; concat of q, k, v 3, attention 1; per stream out
#: projection, gate, residual 3, LayerNorm and modulate 4, MLP (linear, GELU, linear) 3, gate, residual 2 = 74
#: without RoPE
HUNYUAN_DOUBLE_KERNELS = 2 * (2 + 4 + 1 + 16) + 3 + 1 + 2 * (3 + 4 + 3 + 2)
#: the single block: modulation 2, LayerNorm and modulate 4, linear1 1, q/k RMSNorm 16, attention 1, GELU 1,
#: [attention, MLP] concat 1, linear2 1, gate, residual 2 = 29 without RoPE
HUNYUAN_SINGLE_KERNELS = 2 + 4 + 1 + 16 + 1 + 1 + 1 + 1 + 2
#: its RoPE on q and k: 2 x (x.float(), x cos, x.float(), negate, stack, x sin, sum, type_as); the single block also
#: re-concatenates the rotated video q and k with the text's (2)
HUNYUAN_ROPE_KERNELS = 2 * 8


def block_kernels(m: DenseModel, streams: int, compiled: bool) -> int:
    """Kernel launches of one block: counted eager ops (above), or with torch.compile 4 GEMMs and 4
    fused elementwise kernels per stream plus the attention (Inductor fuses each elementwise chain
    between two GEMMs: an assumption, not measured). SANA's linear-attention block: its counted
    eager ops (:data:`EAGER_LINEAR_KERNELS`); CogVideoX's: :data:`COGVIDEOX_EAGER_KERNELS` plus RoPE's; Mochi's:
    :data:`MOCHI_EAGER_KERNELS` plus RoPE's; HunyuanVideo's: its own blocks' (:data:`HUNYUAN_DOUBLE_KERNELS`)."""
    if compiled:
        return streams * 8 + 1
    if m.architecture == "dit-crossattn-linear":
        return EAGER_LINEAR_KERNELS
    if m.architecture == "dit-joint-text":
        return COGVIDEOX_EAGER_KERNELS + (COGVIDEOX_ROPE_KERNELS if m.rope else 0)
    if m.architecture == "mmdit-asymmetric":
        return MOCHI_EAGER_KERNELS + (MOCHI_ROPE_KERNELS if m.rope else 0)
    if m.block_code == "hunyuanvideo":
        if streams == 2:
            return HUNYUAN_DOUBLE_KERNELS + (HUNYUAN_ROPE_KERNELS if m.rope else 0)
        return HUNYUAN_SINGLE_KERNELS + (HUNYUAN_ROPE_KERNELS + 2 if m.rope else 0)
    no_rope = 0 if m.rope else EAGER_ROPE_KERNELS
    if streams == 1 and m.architecture == "mmdit-double-single":
        return EAGER_SINGLE_KERNELS - no_rope
    return streams * EAGER_STREAM_KERNELS + EAGER_JOINT_KERNELS - no_rope
