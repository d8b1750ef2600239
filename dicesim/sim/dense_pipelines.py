"""What a dense DiT pipeline keeps on the GPU besides the transformer: text encoders, the VAE and
its decode, per model preset, each with the code that says so (docs/step-level.md, "Memory").

Parameter counts are closed forms of the published configs (:data:`ENCODERS`, :func:`vae_params`);
the residency and dtypes are the defaults of the code each figure's method ran (:data:`PIPELINES`).
"""

from __future__ import annotations

from dataclasses import dataclass


def t5_encoder_params(vocab: int, d_model: int, d_ff: int, layers: int, heads: int, d_kv: int) -> int:
    """T5 v1.1 encoder (gated-GELU FFN, no biases, RMSNorm scales, one relative-position table)."""
    attn = 4 * d_model * heads * d_kv
    ffn = 3 * d_model * d_ff
    return vocab * d_model + layers * (attn + ffn + 2 * d_model) + d_model + 32 * heads


def llama_params(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, inter: int) -> int:
    """LlamaModel without the LM head (what ``AutoModel.from_pretrained`` loads)."""
    hd = hidden // heads
    attn = 2 * hidden * hidden + 2 * hidden * kv_heads * hd
    return vocab * hidden + layers * (attn + 3 * hidden * inter + 2 * hidden) + hidden


def clip_text_params(vocab: int, width: int, layers: int, positions: int) -> int:
    """CLIP text transformer (pre-LN, biases, MLP 4x width, final LayerNorm)."""
    layer = 4 * (width * width + width) + (width * 4 * width + 4 * width) + (4 * width * width + width) + 4 * width
    return vocab * width + positions * width + layers * layer + 2 * width


#: text encoders: (parameters, source of the config the count is computed from)
ENCODERS: dict[str, tuple[int, str]] = {
    "t5-v1_1-xxl encoder": (t5_encoder_params(32128, 4096, 10240, 24, 64, 64),
                            "huggingface.co/google/t5-v1_1-xxl config.json: d_model 4096, d_ff 10240, 24 layers, "
                            "64 heads x d_kv 64, vocab 32128 (encoder only: T5EncoderModel)"),
    "clip-vit-l-14 text": (clip_text_params(49408, 768, 12, 77),
                           "huggingface.co/openai/clip-vit-large-patch14 config.json text_config: width 768, "
                           "12 layers, vocab 49408, 77 positions"),
    "llava-llama-3-8b text": (llama_params(128256, 4096, 32, 32, 8, 14336),
                              "Llama-3-8B config (huggingface.co/meta-llama/Meta-Llama-3-8B config.json: hidden "
                              "4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336, vocab 128256); "
                              "HunyuanVideo loads the language model alone with AutoModel "
                              "(Tencent/HunyuanVideo@fa14b00 hyvideo/text_encoder/__init__.py:36)"),
}


def vae_params(channels: tuple[int, ...], layers: int, latent: int, kernel: int) -> int:
    """Conv weights of a KL VAE (encoder + decoder, diffusers' layout): ResNet blocks of two
    ``kernel``-voxel convs (a 1x1 shortcut where channels change), a down/up-sampling conv between
    levels, the mid block's two ResNets and attention (4 c^2), conv in/out; biases and norms left out."""
    res = lambda ci, co: kernel * (ci * co + co * co) + (ci * co if ci != co else 0)  # noqa: E731
    top = channels[-1]
    mid = 2 * res(top, top) + 4 * top * top
    enc, ci = kernel * 3 * channels[0], channels[0]
    for i, co in enumerate(channels):
        enc += res(ci, co) + (layers - 1) * res(co, co) + (kernel * co * co if i < len(channels) - 1 else 0)
        ci = co
    enc += mid + kernel * top * 2 * latent + 4 * latent * latent
    dec, ci = kernel * latent * top + mid + latent * latent, top
    for i, co in enumerate(reversed(channels)):
        dec += res(ci, co) + layers * res(co, co) + (kernel * co * co if i < len(channels) - 1 else 0)
        ci = co
    return enc + dec + kernel * channels[0] * 3


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    """What a model's inference code keeps on one GPU and in which dtype (sources in ``basis``)."""

    dit_dtype_nbytes: int  # activations
    dit_weight_nbytes: int  # weights (1 with FP8 weights)
    guidance_embed: bool
    encoders: tuple[str, ...]  # resident text encoders (keys of ENCODERS)
    encoder_nbytes_each: int
    vae_channels: tuple[int, ...]
    vae_layers: int
    vae_latent: int
    vae_causal3d: bool  # 3x3x3 causal convs (pad copy) vs 2D 3x3
    vae_nbytes_each: int
    tile_px: int | None  # spatial tile side in pixels (None: no spatial tiling)
    tile_frames: int | None  # frames per temporal tile (None: the whole clip)
    counter: str  # what the method's own figure counts
    block_forward: str  # whose single-stream block forward (dense_memory.BLOCK_FORWARDS)
    basis: str

    def encoder_nbytes(self) -> int:
        return sum(ENCODERS[e][0] for e in self.encoders) * self.encoder_nbytes_each

    def vae_weight_nbytes(self) -> int:
        k = 27 if self.vae_causal3d else 9
        return vae_params(self.vae_channels, self.vae_layers, self.vae_latent, k) * self.vae_nbytes_each


def vae_decode_nbytes(pl: Pipeline, height_px: int, width_px: int, frames: int, batch: int) -> int:
    """Peak of the VAE decode: one tile's first ResNet at full resolution (its input, GroupNorm+SiLU
    output, the causal pad copy for 3D convs: ``c_in`` each, and its output ``c_out``, with
    ``c_in``/``c_out`` the two lowest levels' channels) plus the decoded video held three times
    (tiles, blended rows, their concatenation: ``temporal_tiled_decode``,
    ``autoencoder_kl_causal_3d.py:500-530``). The pipeline's post-processing afterwards (``/ 2 + 0.5``
    and ``clamp``, two more copies, then to the CPU: HunyuanVideo
    ``hyvideo/diffusion/pipelines/pipeline_hunyuan_video.py:1090-1092``) holds no more than that."""
    th = min(height_px, pl.tile_px or height_px)
    tw = min(width_px, pl.tile_px or width_px)
    tf = min(frames, pl.tile_frames or frames)
    c_out, c_in = pl.vae_channels[0], pl.vae_channels[1]
    live = (3 if pl.vae_causal3d else 2) * c_in + c_out
    tile = live * tf * th * tw * pl.vae_nbytes_each
    video = batch * 3 * frames * height_px * width_px
    return int(tile + 3 * video * pl.vae_nbytes_each)


_HY = "Tencent/HunyuanVideo@fa14b00"
_OS = "hpcaitech/Open-Sora@7ad6a96"
#: the 884-16c causal 3D VAE (HunyuanVideo's, reused by Open-Sora 2.0): block_out_channels
#: (128, 256, 512, 512), layers_per_block 2, latent 16, tiles of sample_size 256 px and
#: sample_tsize 64 frames (Open-Sora's copy states the defaults:
#: opensora/models/hunyuan_vae/autoencoder_kl_causal_3d.py:70-79; HunyuanVideo reads the same VAE's
#: config.json from its checkpoint)
_VAE884 = dict(vae_channels=(128, 256, 512, 512), vae_layers=2, vae_latent=16, vae_causal3d=True, tile_px=256)

PIPELINES: dict[str, Pipeline] = {
    "hunyuanvideo-t2v": Pipeline(
        dit_dtype_nbytes=2, dit_weight_nbytes=2, guidance_embed=True,
        encoders=("llava-llama-3-8b text", "clip-vit-l-14 text"), encoder_nbytes_each=2, vae_nbytes_each=2,
        tile_frames=65, counter="not stated", block_forward="hunyuanvideo", **_VAE884,
        basis=f"{_HY}: DiT bf16 (hyvideo/config.py:40-43 --precision), text encoders fp16 (config.py:89-92, "
              "146-149), VAE fp16 (config.py:68-71); everything on the GPU unless --use-cpu-offload "
              "(hyvideo/inference.py:202, 212, 252, 263, 443-446; refused in distributed runs: inference.py:161-162); "
              "VAE tiling on by default (config.py:75-79), spatial and temporal "
              "(autoencoder_kl_causal_3d.py:150): temporal tiles of 16 + 1 latent frames = 65 frames"),
    "open-sora-2.0": Pipeline(
        dit_dtype_nbytes=2, dit_weight_nbytes=2, guidance_embed=False,
        encoders=("t5-v1_1-xxl encoder", "clip-vit-l-14 text"), encoder_nbytes_each=2, vae_nbytes_each=2,
        tile_frames=None, counter="torch.cuda.max_memory_allocated in GiB", block_forward="open-sora", **_VAE884,
        basis=f"{_OS}: DiT, VAE, T5 and CLIP all built on the GPU in the config dtype bf16 "
              "(opensora/utils/sampling.py:528-547; configs/diffusion/inference/256px.py dtype, guidance_embed "
              "False); the README's '--offload True' sets a key no code reads at 7ad6a96 (only offload_model, "
              "and only with img_flux: sampling.py:528-530, scripts/diffusion/inference.py:128); spatial tiling "
              "only (256px.py ae: use_spatial_tiling True, use_temporal_tiling False); the figure is "
              "torch.cuda.max_memory_allocated / 1024**3 (opensora/utils/misc.py:40, 56-67)"),
}
