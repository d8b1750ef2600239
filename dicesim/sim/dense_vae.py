"""The VAE decode a whole pipeline call adds once: counted FLOPs at a measured rate.

A pipeline call (``pipe(...)``, which the published step figures that time the whole call include)
ends with the VAE decode of the final latent. The decode runs once per call and, in the frameworks behind the step set, whole
on every GPU (it is not divided among them; each preset's :data:`DECODERS` entry cites the code).

Seconds = the decoder's FLOPs / an achieved rate:

- **FLOPs**, counted in closed form from each decoder's cited config (:class:`VaeDecoder`; Mochi 1's
  decoder, which is not of that KL structure, :class:`MochiDecoder`): every
  convolution ``2 x taps x c_in x c_out`` per output voxel, the mid-block attention ``4 N^2 c`` plus
  its four 1x1 projections, the shortcut 1x1 convolutions, per-voxel linear projections
  ``2 x c_in x c_out``; GroupNorm, SiLU and the interpolations are
  memory passes and are not counted (an assumption: they ride on the rate below, which was measured
  with them). A tiled decode decodes each overlapping tile in full: the tiles are enumerated the way
  the cited loop steps over the latent.
- **Rate**: a fraction of the GPU's dense GEMM rate (peak x the profile's ``experts`` efficiency), one
  per kind of decoder, each from one independent measurement of a decode alone divided into the same
  closed-form count of the decoder that run ran (:class:`RateReference`):

  - 2D decoders (3x3 convolutions; SDXL, FLUX.1): :data:`RATE_REFERENCE`, the SDXL VAE decode of a
    1024x1024 image in 0.256 s on an RTX 4090 (huggingface/diffusers
    docs/source/en/hybrid_inference/vae_decode.md, SDXL table), 10.5 TFLOP: 0.330.
  - 3D decoders (3x3x3 causal convolutions; HunyuanVideo, Open-Sora 2.0, CogVideoX, Mochi 1):
    :data:`RATE_REFERENCE_3D`, the HunyuanVideo VAE's sequential tiled decode of 848x480x77 in 5.713 s
    (mean) on an H200 (sgl-project/sglang pull request #36012), 1.26 PFLOP over its tiles: 0.280.

  On another GPU a decoder runs at its kind's fraction of that GPU's GEMM rate (an assumption: the
  convolutions are implicit GEMMs that scale with the GEMM rate). The 3D fraction is measured on the
  HunyuanVideo decoder only; that CogVideoX's (2 latent frames at a time) and Mochi's decoders reach
  it too is an assumption.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicesim.sim.costs.profile import HardwareProfile, get_profile
from dicesim.sim.dense import DenseRun


@dataclass(frozen=True, kw_only=True)
class VaeDecoder:
    """A KL decoder: conv_in, a mid block (two ResNets, optional attention), up blocks of
    ``layers + 1`` ResNets each with an upsampler after all but the last, conv_out."""

    name: str
    channels: tuple[int, ...]  # block_out_channels in the encoder's order (the decoder runs them reversed)
    layers: int  # layers_per_block
    latent: int  # latent channels
    taps: int  # 9: 3x3 convolutions; 27: 3x3x3 (causal) convolutions
    up_taps: int  # taps of the upsampler's convolution
    time_up: tuple[int, ...] = ()  # up blocks (decoder order) whose upsampler doubles time (first frame kept)
    mid_attention: bool = True
    tile: int = 0  # spatial tile edge in latent pixels (0: untiled)
    tile_t: int = 0  # temporal tile in latent frames, decoded with one more (0: untiled)
    overlap: float = 0.25  # tile overlap factor: tiles start every int(tile x (1 - overlap))
    source: str = ""


def _conv(c_in: int, c_out: int, taps: int, voxels: float) -> float:
    return 2.0 * taps * c_in * c_out * voxels


def _resnet(c_in: int, c_out: int, taps: int, voxels: float) -> float:
    short = 2.0 * c_in * c_out * voxels if c_in != c_out else 0.0  # 1x1 shortcut when the width changes
    return _conv(c_in, c_out, taps, voxels) + _conv(c_out, c_out, taps, voxels) + short


def decoder_flops(d: VaeDecoder, t: int, h: int, w: int) -> float:
    """FLOPs of one untiled decode of a latent of ``t`` frames x ``h`` x ``w`` (one sample)."""
    ch = list(reversed(d.channels))
    v = float(t * h * w)
    f = _conv(d.latent, ch[0], d.taps, v) + 2 * _resnet(ch[0], ch[0], d.taps, v)
    if d.mid_attention:  # one head over every latent voxel: q, k, v, out projections and the core
        f += 4 * 2.0 * v * ch[0] ** 2 + 4.0 * v * v * ch[0]
    prev = ch[0]
    for i, c in enumerate(ch):
        v = float(t * h * w)
        f += _resnet(prev, c, d.taps, v) + d.layers * _resnet(c, c, d.taps, v)
        prev = c
        if i < len(ch) - 1:
            if i in d.time_up and t > 1:
                t = 1 + 2 * (t - 1)
            h, w = 2 * h, 2 * w
            f += _conv(c, c, d.up_taps, float(t * h * w))
    return f + _conv(ch[-1], 3, d.taps, float(t * h * w))


@dataclass(frozen=True, kw_only=True)
class MochiDecoder:
    """Mochi 1's decoder (diffusers ``MochiDecoder3D``): a 1x1x1 ``conv_in``, ``block_in`` (ResNets at the
    widest width), up blocks of ResNets each ending in a linear projection to ``c_out x t_exp x s_exp^2``
    channels unpacked depth-to-space (every frame times ``t_exp``), ``block_out`` (ResNets at the narrowest
    width), a linear ``proj_out``; no attention. ResNets keep their width (two causal 3x3x3 convolutions,
    no shortcut convolution)."""

    name: str
    channels: tuple[int, ...]  # decoder_block_out_channels, narrowest first (the decoder runs them reversed)
    layers: tuple[int, ...]  # layers_per_block: [0] block_out, [-1] block_in, [-i - 2] up block i
    temporal: tuple[int, ...]  # temporal_expansions: up block i expands by [-i - 1]
    spatial: tuple[int, ...]  # spatial_expansions: likewise
    latent: int  # latent channels
    out: int = 3  # output channels
    taps: int = 27  # the ResNets' causal 3x3x3 convolutions
    tile: int = 0  # spatial tile edge in latent pixels (0: untiled)
    stride: int = 0  # latent pixels between tile starts
    source: str = ""


def mochi_decoder_flops(d: MochiDecoder, t: int, h: int, w: int) -> float:
    """FLOPs of one untiled Mochi decode of a latent of ``t`` frames x ``h`` x ``w`` (one sample)."""
    ch = d.channels
    v = float(t * h * w)
    f = 2.0 * d.latent * ch[-1] * v + d.layers[-1] * _resnet(ch[-1], ch[-1], d.taps, v)  # conv_in, block_in
    for i in range(len(ch) - 1):
        c_in, c_out, te, se = ch[-i - 1], ch[-i - 2], d.temporal[-i - 1], d.spatial[-i - 1]
        f += d.layers[-i - 2] * _resnet(c_in, c_in, d.taps, v) + 2.0 * c_in * c_out * te * se * se * v  # proj
        t, h, w = t * te, h * se, w * se
        v = float(t * h * w)
    return f + d.layers[0] * _resnet(ch[0], ch[0], d.taps, v) + 2.0 * ch[0] * d.out * v  # block_out, proj_out


def _extents(n: int, tile: int, stride: int) -> list[int]:
    return [min(tile, n - i) for i in range(0, n, stride)]


def _mochi_decode_flops(d: MochiDecoder, t: int, h: int, w: int) -> float:
    """Spatial tiles of every frame at once (diffusers' ``_decode`` tiles when ``h`` exceeds the tile or
    ``w`` the stride, as its threshold reads; frame-wise decoding is off by default)."""
    if not d.tile or (h <= d.tile and w <= d.stride):
        return mochi_decoder_flops(d, t, h, w)
    hs, ws = _extents(h, d.tile, d.stride), _extents(w, d.tile, d.stride)
    return sum(mochi_decoder_flops(d, t, b, c) for b in hs for c in ws)


def decode_flops(d: VaeDecoder | MochiDecoder, t: int, h: int, w: int) -> float:
    """FLOPs of the decode as the pipeline runs it: tile by tile where it tiles (each tile whole)."""
    if isinstance(d, MochiDecoder):
        return _mochi_decode_flops(d, t, h, w)
    ts = [t]
    if d.tile_t and t > d.tile_t:
        ts = _extents(t, d.tile_t + 1, int(d.tile_t * (1 - d.overlap)))
    hs, ws = [h], [w]
    if d.tile and (h > d.tile or w > d.tile):
        stride = int(d.tile * (1 - d.overlap))
        hs, ws = _extents(h, d.tile, stride), _extents(w, d.tile, stride)
    return sum(decoder_flops(d, a, b, c) for a in ts for b in hs for c in ws)


_KL2D = dict(channels=(128, 256, 512, 512), layers=2, taps=9, up_taps=9)
#: the 884-16c causal 3D VAE: (128, 256, 512, 512), 2 layers, 3x3x3 causal convolutions, the upsamplers
#: (CausalConv3d, 3x3x3) of decoder blocks 1 and 2 double time as well (hyvideo/vae/vae.py:180-206:
#: add_time_upsample = i >= len - 1 - log2(4) and not final), mid-block attention on
_VAE884 = dict(channels=(128, 256, 512, 512), layers=2, latent=16, taps=27, up_taps=27, time_up=(1, 2))

#: the decoder each preset's published pipeline runs, as that pipeline runs it
DECODERS: dict[str, VaeDecoder | MochiDecoder] = {
    "sdxl": VaeDecoder(name="sdxl", latent=4, **_KL2D,
                       source="diffusers AutoencoderKL (SDXL VAE config: block_out_channels 128/256/512/512, "
                              "layers_per_block 2, latent 4); Decoder: huggingface/diffusers@58eb52c "
                              "src/diffusers/models/autoencoders/vae.py:180-258"),
    "flux.1-dev": VaeDecoder(name="flux.1-dev", latent=16, **_KL2D,
                             source="black-forest-labs/flux@802fb47 src/flux/util.py ae_params (ch 128, ch_mult "
                                    "1/2/4/4, num_res_blocks 2, z_channels 16); untiled (FluxPipeline default)"),
    "hunyuanvideo-t2v": VaeDecoder(
        name="hunyuanvideo-t2v", **_VAE884, tile=32, tile_t=16,
        source="Tencent/HunyuanVideo@fa14b00 hyvideo/vae/vae.py:147-206; tiling on by default "
               "(hyvideo/config.py:75-79); tiles of 256 px = 32 latent and 64 frames = 16 latent (+1), overlap 0.25 "
               "(hyvideo/vae/autoencoder_kl_causal_3d.py:120-132, 431-435, 500-510). The L20 rows ran diffusers' "
               "port: the same tiling is assumed"),
    "open-sora-2.0": VaeDecoder(
        name="open-sora-2.0", **_VAE884, tile=32,
        source="hpcaitech/Open-Sora@7ad6a96 configs/diffusion/inference/256px.py ae (use_spatial_tiling True, "
               "use_temporal_tiling False); opensora/models/hunyuan_vae/autoencoder_kl_causal_3d.py:74-79, 143-146 "
               "(sample_size 256, overlap 0.25)"),
    "cogvideox-5b": VaeDecoder(
        name="cogvideox-5b", channels=(128, 256, 256, 512), layers=3, latent=16, taps=27, up_taps=9,
        time_up=(0, 1), mid_attention=False,
        source="huggingface/diffusers@58eb52c src/diffusers/models/autoencoders/autoencoder_kl_cogvideox.py:796-880 "
               "(CogVideoXDecoder3D: 128/256/256/512, layers_per_block 3 + 1, compress_time = i < 2, no mid "
               "attention), src/diffusers/models/upsampling.py:357-410 (the upsampler is a 3x3 Conv2d per frame). "
               "ConsisID under xDiT: no tiling (examples/run_consisid.sh leaves --enable_tiling commented), no "
               "parallel VAE (examples/consisid_example.py:29), the decode on every rank "
               "(xfuser/model_executor/pipelines/pipeline_consisid.py:427-429), xdit-project/xDiT@970d5ce"),
    "mochi-1-preview": MochiDecoder(
        name="mochi-1-preview", channels=(128, 256, 512, 768), layers=(3, 3, 4, 6, 3), temporal=(1, 2, 3),
        spatial=(2, 2, 2), latent=12, tile=256 // 8, stride=192 // 8,
        source="huggingface/diffusers@3f329a4 src/diffusers/models/autoencoders/autoencoder_kl_mochi.py:70-125 "
               "(MochiResnetBlock3D), 253-341 (MochiMidBlock3D), 344-427 (MochiUpBlock3D), 596-687 "
               "(MochiDecoder3D: add_attention=False), 717-728 (defaults), 786-819 (tiles of 256 px every 192, "
               "frame-wise decoding off), 943-970, 1071-1147 (the tiled loop); autoencoder_kl_cogvideox.py:99-107, "
               "125-126 (the causal conv pads replicate: frames kept); the same through 128b96f. The released VAE "
               "is the class defaults (scripts/convert_mochi_to_diffusers.py:434, loaded strict), as "
               "genmoai/mochi@0c86aeb src/genmo/mochi_preview/pipelines.py:258-271. ParaAttention's runs call "
               "pipe.enable_vae_tiling() and time the whole pipe(...) on every rank, output_type 'pil', the "
               "VAE not parallelized (chengzeyi/ParaAttention@cf7ec43 tests/context_parallel/"
               "test_diffusers_adapters.py:61-65, 101-116; src/para_attn/context_parallel/diffusers_adapters/"
               "mochi.py:119-144; README.md:33, 129)"),
}

#: presets whose pipeline runs another preset's decoder: ConsisID's is CogVideoX's VAE
#: (huggingface/diffusers@23b467c src/diffusers/pipelines/consisid/pipeline_consisid.py:28, 278);
#: CogVideoX-2B's VAE is the same class with the same decoder config as 5B's (THUDM/CogVideo@e000b43
#: sat/configs/cogvideox_2b.yaml:109-122 and cogvideox_5b.yaml:108-121: ch 128, ch_mult 1/2/2/4, num_res_blocks 3,
#: z_channels 16; only scale_factor differs, 1.15258426 vs 0.7) and CogVideoXPipeline loads it as
#: AutoencoderKLCogVideoX for either (huggingface/diffusers@2ee3215 pipelines/cogvideo/pipeline_cogvideox.py:24, 175)
SAME_DECODER: dict[str, str] = {"consisid": "cogvideox-5b", "cogvideox-2b": "cogvideox-5b"}

@dataclass(frozen=True, kw_only=True)
class RateReference:
    """One published decode measured alone: its seconds, the decoder as that run ran it (tiles included),
    the latent it decoded (frames x height x width) and the profile of its GPU."""

    seconds: float
    decoder: VaeDecoder | MochiDecoder
    latent_thw: tuple[int, int, int]
    profile: str
    source: str


#: the measurement that sets the rate of the 2D (3x3) decoders
RATE_REFERENCE = RateReference(
    seconds=0.256, decoder=DECODERS["sdxl"], latent_thw=(1, 128, 128), profile="rtx4090",
    source="SDXL VAE decode 1024x1024 on an RTX 4090: 0.256 s (huggingface/diffusers "
           "docs/source/en/hybrid_inference/vae_decode.md, SDXL table)")

#: the measurement that sets the rate of the 3D (3x3x3 causal) decoders: sglang's HunyuanVideo VAE, the
#: sequential tiled decode (ParallelTiledVAE.tiled_decode): temporal tiles of 16 // 4 + 1 = 5 latent
#: frames every 12 // 4 = 3, each cut into spatial tiles of 256 // 8 = 32 latent pixels every 192 // 8 = 24
#: (VAEConfig defaults, python/sglang/multimodal_gen/configs/models/vaes/base.py @03fb2e1, not overridden by
#: HunyuanVAEConfig, configs/models/vaes/hunyuanvae.py @008b79d; tiled_decode,
#: spatial_tiled_decode in runtime/models/vaes/common.py @033f5f8), fp16 (HunyuanConfig vae_precision,
#: configs/pipeline_configs/hunyuan.py @046b5f9). 848x480x77 is a latent of 20 x 60 x 106.
RATE_REFERENCE_3D = RateReference(
    seconds=5.713,
    decoder=VaeDecoder(name="hunyuanvideo-sglang-tiled", **_VAE884, tile=32, tile_t=4,
                       source="sglang's HunyuanVideo VAE (the 884 decoder above), ParallelTiledVAE.tiled_decode with "
                              "the VAEConfig tiles: 5 latent frames every 3, 32 x 32 latent pixels every 24"),
    latent_thw=(20, 60, 106), profile="h200",
    source="sgl-project/sglang pull request #36012 (BBuf, 2026-08-22, merged), 'H200 performance': 'Native "
           "backend, 4x H200, Ulysses degree 4, 848x480x77, 30 steps, seed 42, eager, no compile. Each row is a "
           "main/PR/PR/main ABBA mean' ... 'At a slightly smaller 848x480x77 shape, `auto` rejects spatial "
           "sharding and falls back to sequential tiled decode' ... 'Lossless decode falls from a 5.713 s mean "
           "to 1.654 s.' The 5.713 s is main's sequential tiled decode; H200 form factor not stated (SXM "
           "assumed); warm or cold not stated")


def _gemm_rate(p: HardwareProfile) -> float:
    return p.peak_flops * p.ops["experts"].compute_eff


def reference_fraction(ref: RateReference) -> float:
    """The reference decode's FLOPs over its time, as a fraction of its GPU's dense GEMM rate."""
    return decode_flops(ref.decoder, *ref.latent_thw) / ref.seconds / _gemm_rate(get_profile(ref.profile))


def achieved_fraction(taps: int = 9) -> float:
    """The fraction of the GEMM rate a decoder whose convolutions have ``taps`` taps reaches: 27 (3x3x3)
    from :data:`RATE_REFERENCE_3D`, otherwise (3x3) from :data:`RATE_REFERENCE`."""
    return reference_fraction(RATE_REFERENCE_3D if taps == 27 else RATE_REFERENCE)


def _decoder_for(run: DenseRun) -> VaeDecoder | MochiDecoder | None:
    return DECODERS.get(SAME_DECODER.get(run.model.name, run.model.name))


def run_decode_flops(run: DenseRun) -> float:
    """FLOPs of the decode of ``run``'s batch (0 where the preset's decoder is not modelled)."""
    d = _decoder_for(run)
    if d is None:
        return 0.0
    m = run.model
    lh, lw = m.latent_hw(run.height_px, run.width_px)
    return run.batch * decode_flops(d, m.latent_frames(run.frames), lh, lw)


def vae_decode_s(run: DenseRun, profile: HardwareProfile) -> float:
    """Seconds of the VAE decode of one call on ``profile``'s GPU (0 where not modelled), at the fraction
    of the GEMM rate its kind of decoder reaches (:func:`achieved_fraction`)."""
    d = _decoder_for(run)
    f = run_decode_flops(run)
    return f / (achieved_fraction(d.taps) * _gemm_rate(profile)) if d is not None and f else 0.0
