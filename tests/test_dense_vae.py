"""The VAE decode of the step level: closed-form FLOP counts, tiling as the cited loops step, the rate."""

from __future__ import annotations

import pytest

from dicesim.calibrate.published.step_level import dense_run, load_step_figures
from dicesim.sim.costs.profile import get_profile
from dicesim.sim.dense_vae import (DECODERS, RATE_REFERENCE, RATE_REFERENCE_3D, MochiDecoder, VaeDecoder, _extents,
                                   achieved_fraction, decode_flops, decoder_flops, mochi_decoder_flops,
                                   run_decode_flops, vae_decode_s)


def test_a_two_level_decoder_by_hand():
    d = VaeDecoder(name="t", channels=(4, 8), layers=0, latent=2, taps=9, up_taps=9, mid_attention=False)
    h = w = 3
    v0, v1 = h * w, 4 * h * w
    conv = lambda a, b, v: 2 * 9 * a * b * v  # noqa: E731
    want = conv(2, 8, v0) + 2 * 2 * conv(8, 8, v0)  # conv_in, mid: two ResNets of two convs
    want += 2 * conv(8, 8, v0) + conv(8, 8, v1)  # up block 0 (one ResNet 8 -> 8), its upsampler at 2x
    want += conv(8, 4, v1) + conv(4, 4, v1) + 2 * 8 * 4 * v1  # up block 1: 8 -> 4 with the 1x1 shortcut
    want += conv(4, 3, v1)  # conv_out
    assert decoder_flops(d, 1, h, w) == want


def test_causal_time_upsampling_keeps_the_first_frame():
    # a 3D decoder with one time-doubling upsampler: 5 latent frames -> 9 at the output (1 + 2 x 4)
    d = VaeDecoder(name="t", channels=(4, 4), layers=0, latent=4, taps=27, up_taps=27, time_up=(0,),
                   mid_attention=False)
    flat = VaeDecoder(name="t", channels=(4, 4), layers=0, latent=4, taps=27, up_taps=27, mid_attention=False)
    extra = decoder_flops(d, 5, 2, 2) - decoder_flops(flat, 5, 2, 2)
    per_voxel_after = 2 * 27 * 4 * 4 * 3 + 2 * 27 * 4 * 3  # upsampler, two convs of the ResNet, conv_out
    assert extra == pytest.approx(per_voxel_after * (9 - 5) * 4 * 4)


def test_tiles_step_like_the_cited_loops():
    # HunyuanVideo's spatial loop: range(0, 90, 24) with tiles of 32 -> 32, 32, 32, 18
    assert _extents(90, 32, 24) == [32, 32, 32, 18]
    # its temporal loop: range(0, 33, 12) with slices of 16 + 1 -> 17, 17, 9
    assert _extents(33, 17, 12) == [17, 17, 9]
    hy = DECODERS["hunyuanvideo-t2v"]
    assert decode_flops(hy, 9, 30, 30) == decoder_flops(hy, 9, 30, 30)  # under one tile: untiled
    # without the attention (quadratic in a tile) the FLOPs scale with the latent voxels decoded
    conv = VaeDecoder(**{**hy.__dict__, "mid_attention": False})
    tiled_voxels = sum(_extents(33, 17, 12)) * sum(_extents(90, 32, 24)) * sum(_extents(160, 32, 24))
    assert decode_flops(conv, 33, 90, 160) == pytest.approx(
        sum(decoder_flops(conv, a, b, c) for a in (17, 17, 9) for b in (32, 32, 32, 18) for c in [32] * 6 + [16]))
    assert tiled_voxels / (33 * 90 * 160) == pytest.approx(2.146, abs=1e-3)


def test_the_reference_reproduces_its_measurement_and_flux_keeps_the_pixel_scaling():
    ref = RATE_REFERENCE
    t_s, (_, h, w), p = ref.seconds, ref.latent_thw, get_profile(ref.profile)
    assert ref.decoder is DECODERS["sdxl"]
    rate = achieved_fraction() * p.peak_flops * p.ops["experts"].compute_eff
    assert decoder_flops(DECODERS["sdxl"], 1, h, w) / rate == pytest.approx(t_s)
    assert 0.05 < achieved_fraction() < 1.0
    figs, _ = load_step_figures()
    flux = dense_run(next(f for f in figs if f["model"] == "flux.1-dev" and f["kind"] == "latency"))
    # FLUX.1's decoder is SDXL's with 16 latent channels at conv_in: within 0.5% of the reference per pixel
    px = flux.height_px * flux.width_px / (8 * h * 8 * w)
    assert vae_decode_s(flux, p) == pytest.approx(t_s * px, rel=5e-3)
    h100 = get_profile("h100-sxm")
    assert vae_decode_s(flux, h100) == pytest.approx(
        vae_decode_s(flux, p) * p.peak_flops * p.ops["experts"].compute_eff / (h100.peak_flops * 0.8))


def test_the_3d_rate_is_its_tiled_hunyuan_decode_on_an_h200():
    # sglang's sequential tiled decode of 848x480x77 (latent 20 x 60 x 106) in 5.713 s on an H200:
    # temporal tiles of 4 + 1 latent frames every 3 (range(0, 20, 3)), each cut into 32 x 32 tiles every 24
    ref = RATE_REFERENCE_3D
    assert (ref.seconds, ref.latent_thw, ref.profile) == (5.713, (20, 60, 106), "h200")
    hy = DECODERS["hunyuanvideo-t2v"]
    untiled = VaeDecoder(**{**hy.__dict__, "tile": 0, "tile_t": 0})
    assert ref.decoder == VaeDecoder(**{**hy.__dict__, "name": ref.decoder.name, "tile_t": 4,
                                                  "source": ref.decoder.source})
    ts, hs, ws = [5] * 6 + [2], [32, 32, 12], [32] * 4 + [10]
    flops = sum(decoder_flops(untiled, a, b, c) for a in ts for b in hs for c in ws)
    assert decode_flops(ref.decoder, 20, 60, 106) == pytest.approx(flops)
    h200 = get_profile("h200")
    assert h200.peak_flops == 989.5e12 and h200.ops["experts"].compute_eff == 0.8
    assert achieved_fraction(27) == pytest.approx(flops / 5.713 / (989.5e12 * 0.8))
    assert 0.05 < achieved_fraction(27) < 1.0 and achieved_fraction(27) != achieved_fraction(9)


def test_3d_decoders_take_the_3d_fraction_and_2d_ones_sdxls():
    figs, _ = load_step_figures()
    h100 = get_profile("h100-sxm")
    gemm = h100.peak_flops * h100.ops["experts"].compute_eff
    for model, taps in (("flux.1-dev", 9), ("consisid", 27), ("hunyuanvideo-t2v", 27), ("mochi-1-preview", 27)):
        run = dense_run(next(f for f in figs if f["model"] == model and f["kind"] == "latency"))
        want = run_decode_flops(run) / (achieved_fraction(taps) * gemm)
        assert want > 0 and vae_decode_s(run, h100) == pytest.approx(want), model
    assert DECODERS["flux.1-dev"].taps == 9 and DECODERS["cogvideox-5b"].taps == 27


def test_a_mochi_decoder_by_hand():
    # one up block (8 -> 4, time x3, space x2); block_in 3 ResNets, the up block 2, block_out 1
    d = MochiDecoder(name="t", channels=(4, 8), layers=(1, 2, 3), temporal=(3,), spatial=(2,), latent=2, out=3)
    v0, v1 = 2 * 3 * 3, 6 * 6 * 6  # 2 latent frames x 3 x 3, then every frame x3 (not 1 + 3 x 1) and 6 x 6
    conv = lambda a, b, v: 2 * 27 * a * b * v  # noqa: E731
    want = 2 * 2 * 8 * v0 + 3 * 2 * conv(8, 8, v0)  # conv_in 1x1x1, block_in: ResNets of two convs, no shortcut
    want += 2 * 2 * conv(8, 8, v0) + 2 * 8 * (4 * 3 * 2 * 2) * v0  # up block: ResNets, proj to 4 x 3 x 2 x 2
    want += 2 * conv(4, 4, v1) + 2 * 4 * 3 * v1  # block_out, proj_out
    assert mochi_decoder_flops(d, 2, 3, 3) == want


def test_mochi_decode_as_the_pipeline_tiles_it():
    d = DECODERS["mochi-1-preview"]
    # the released decoder per latent voxel: 768 -> 512 (x3 time) -> 256 (x2) -> 128, space x2 each
    r = lambda c, n: n * 2 * 2 * 27 * c * c  # noqa: E731  n ResNets of two 3x3x3 convs at width c
    per_voxel = (2 * 12 * 768 + r(768, 3) + r(768, 6) + 2 * 768 * 512 * 3 * 4
                 + 12 * (r(512, 4) + 2 * 512 * 256 * 2 * 4) + 96 * (r(256, 3) + 2 * 256 * 128 * 1 * 4)
                 + 384 * (r(128, 3) + 2 * 128 * 3))
    assert mochi_decoder_flops(d, 1, 1, 1) == per_voxel
    # 480x848x84 -> 14 x 60 x 106 latent: tiles of 32 every 24 -> rows 32, 32, 12 and columns 32 x 4, 10,
    # all 14 frames in each tile (frame-wise decoding is off)
    assert (_extents(60, 32, 24), _extents(106, 32, 24)) == ([32, 32, 12], [32, 32, 32, 32, 10])
    assert decode_flops(d, 14, 60, 106) == pytest.approx(per_voxel * 14 * (32 + 32 + 12) * (4 * 32 + 10))
    # diffusers' threshold compares the width with the stride (24), the height with the tile (32)
    assert decode_flops(d, 2, 32, 24) == mochi_decoder_flops(d, 2, 32, 24)
    assert decode_flops(d, 2, 10, 30) == pytest.approx(
        mochi_decoder_flops(d, 2, 10, 30) + mochi_decoder_flops(d, 2, 10, 6))


def test_mochi_figures_add_the_whole_decode_on_every_gpu_count():
    figs, _ = load_step_figures()
    a100 = get_profile("a100-sxm")
    mochi = [dense_run(f) for f in figs if f["model"] == "mochi-1-preview" and f["kind"] == "latency"]
    assert len(mochi) == 10 and {r.parallel.world for r in mochi} == {1, 2, 4}
    want = decode_flops(DECODERS["mochi-1-preview"], 14, 60, 106) / (
        achieved_fraction(27) * a100.peak_flops * a100.ops["experts"].compute_eff)
    assert want > 5.0
    for r in mochi:  # 480x848x84, one sample, not divided among the GPUs
        assert vae_decode_s(r, a100) == pytest.approx(want)


def test_presets_without_a_cited_decoder_add_nothing():
    figs, _ = load_step_figures()
    h100 = get_profile("h100-sxm")
    f = next(f for f in figs if f["model"] == "sana-1600m" and f["kind"] == "latency")
    assert vae_decode_s(dense_run(f), h100) == 0.0
    cog = next(f for f in figs if f["model"] == "consisid" and f["kind"] == "latency")  # CogVideoX's VAE
    assert vae_decode_s(dense_run(cog), h100) > 0.0


def test_sana_linear_attention_heads_and_counted_passes():
    from dicesim.dense_models import EAGER_LINEAR_KERNELS, block_work, elementwise_passes, get_dense_model
    from dicesim.sim.dense import DenseParallel, DenseRun, refusal

    m = get_dense_model("sana-1600m")
    assert (m.self_heads, m.hidden // m.self_heads, m.heads) == (70, 32, 20)
    assert elementwise_passes(2.5, False, "linear") == pytest.approx(29 + 30.375 + 21 * 2.5)  # replayed (wave 7)
    n = 1000.0
    bw = block_work(m, "single", img_tokens=n, txt_tokens=0, attn_q=n, attn_kv=n, heads_share=1.0, tp=1,
                    compiled=False)
    core_linear = 4 * n * m.hidden * 33  # V padded to d + 1 = 33 rows, times K^T, then times Q
    core_cross = 4 * n * m.text_tokens * m.hidden
    assert bw.attention.flops == pytest.approx(core_linear + core_cross)
    assert bw.kernels == EAGER_LINEAR_KERNELS == 46

    def run(u):
        return DenseRun(model=m, height_px=4096, width_px=4096, frames=1, steps=20, batch=1, cfg_on=True,
                        compiled=False, parallel=DenseParallel(ulysses=u))
    # xDiT: "the maximum parallelism supported by Ulysses is 2" (70 linear heads, 20 cross heads)
    assert refusal(run(2)) is None
    assert "70 heads" in refusal(run(4))
