"""The step level: dense presets, the parallel methods' time, and every published figure's prediction.

The committed table (tests/data/step_predictions.csv, written by
tests/data/extract_step_predictions.py) is recomputed from the committed set and compared exactly,
so a change to the simulator that moves a step-level prediction is seen.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dicesim.calibrate.published.step_level import (dense_run, hardware_for, load_step_figures, outcome_rows,
                                                    step_level_rows, step_summaries)
from dicesim.dense_models import DENSE_MODELS, block_work, elementwise_passes, get_dense_model
from dicesim.errors import ConfigError
from dicesim.sim.costs.profile import get_profile
from dicesim.sim.dense import DenseParallel, DenseRun, predict_dense, refusal
from dicesim.sim.microbench.collective_ops import simulate_exchange, simulate_op
from dicesim.sim.network.nccl import builtin_nccl_model
from dicesim.topology.machines import get_machine

CSV = "tests/data/step_predictions.csv"


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    r = step_level_rows()
    assert r is not None
    return r


def test_every_prediction_is_rederived_from_the_committed_set(rows):
    want = pd.read_csv(CSV, dtype={"machine": str, "profile": str}).fillna({"machine": "", "profile": ""})
    got = rows.set_index("id")
    assert list(want["id"]) == list(rows["id"])
    for r in want.itertuples():
        g = got.loc[r.id]
        assert (g["split"], g["machine"], g["profile"]) == (r.split, r.machine, r.profile), r.id
        for col in ("predicted", "predicted_no_interference"):
            a, b = float(g[col]), float(getattr(r, col))
            assert (math.isnan(a) and math.isnan(b)) or a == b, (r.id, col, a, b)


def test_splits_follow_the_set(rows):
    figs, _ = load_step_figures()
    lat = [f for f in figs if f["kind"] == "latency"]
    assert len(rows) == len(lat) == 154
    by = rows.set_index("id")
    for f in lat:
        split = by.loc[f["id"], "split"]
        if f["use"] == "reference":
            assert split == "excluded"
        elif f["parallel"]["pipefusion"] > 1 or f["optimizations"]:
            assert split == "excluded"
        elif by.loc[f["id"], "reason"].startswith("inconsistent"):
            # the recorded setting's dense FLOPs in the published time exceed the GPU's peak
            r = by.loc[f["id"]]
            assert split == "excluded" and "TFLOP/s" in r["reason"], f["id"]
        else:
            assert split == ("baseline" if f["gpus"] == 1 else "held-out"), f["id"]
    held = rows[rows["split"] == "held-out"]
    assert set(held["family"]) == {"nvlink", "pcie"} and len(held) >= 12
    assert held["predicted"].notna().all() and (held["predicted"] > 0).all()
    assert rows.loc[rows["split"] == "excluded", "reason"].str.len().gt(0).all()


def test_summaries_count_held_out_per_family_and_baselines_apart(rows):
    s = step_summaries(rows)
    on, base = s["interference on"], s["one-GPU baselines"]
    held = rows[rows["split"] == "held-out"]
    assert on.figures == len(held) and base.figures == int((rows["split"] == "baseline").sum())
    assert on.per_family["pcie"]["figures"] == int((held["family"] == "pcie").sum())
    assert on.median_abs == pytest.approx(held["error"].abs().median())
    assert set(base.per_family) == {"none"}


def test_tokens_follow_the_schema_formula():
    flux, hv = get_dense_model("flux.1-dev"), get_dense_model("hunyuanvideo-t2v")
    assert flux.image_tokens(1024, 1024, 1) == 64 * 64
    assert hv.image_tokens(720, 1280, 129) == 33 * 45 * 80  # (129-1)//4+1 latent frames, 8x8 VAE, 2x2 patch
    assert get_dense_model("mochi-1-preview").image_tokens(480, 848, 84) == 14 * 30 * 53
    assert get_dense_model("sana-1600m").image_tokens(4096, 4096, 1) == 128 * 128
    with pytest.raises(ConfigError):
        get_dense_model("sd3")
    assert set(DENSE_MODELS) == {"flux.1-dev", "hunyuanvideo-t2v", "open-sora-2.0", "mochi-1-preview",
                                 "cogvideox-5b", "cogvideox-2b", "consisid", "sana-1600m"}


def test_block_work_closed_form():
    m = get_dense_model("flux.1-dev")
    D, n = m.hidden, 1000.0
    single = block_work(m, "single", img_tokens=n, txt_tokens=0, attn_q=n, attn_kv=n, heads_share=1.0, tp=1,
                        compiled=False)
    assert single.linear.flops == pytest.approx(2 * n * (D * 7 * D + 5 * D * D))  # linear1 D->7D, linear2 5D->D
    assert single.attention.flops == pytest.approx(4 * n * n * D)
    half = block_work(m, "single", img_tokens=n, txt_tokens=0, attn_q=n, attn_kv=n, heads_share=0.5, tp=2,
                      compiled=False)
    assert half.linear.flops == pytest.approx(single.linear.flops / 2)
    assert half.attention.flops == pytest.approx(single.attention.flops / 2)
    assert elementwise_passes(4.0, True) < elementwise_passes(4.0, False)
    # eager, counted on diffusers' Flux blocks: 58 + 2r per stream + 58 per joint token; 101 + 4r single
    # (RMSNorm of q and k 2 x 17: cast 3, square 4, mean 2, x rsqrt 3, cast back 3, x weight 2)
    assert elementwise_passes(4.0, False, "double") == 124 and elementwise_passes(4.0, False, "single") == 117


def test_modulation_linears_are_weight_reads_in_every_block():
    from dicesim.dense_models import modulation_weights

    flux, D = get_dense_model("flux.1-dev"), 3072
    # flux layers.py: Modulation(D, double=True) on each stream (D -> 6D), single D -> 3D
    assert modulation_weights(flux, "double") == 12 * D * D and modulation_weights(flux, "single") == 3 * D * D
    mochi = get_dense_model("mochi-1-preview")
    assert modulation_weights(mochi, "double") == 4 * D * D + 4 * 1536 * D
    assert modulation_weights(get_dense_model("cogvideox-5b"), "single") == 2 * 512 * 6 * D
    assert modulation_weights(get_dense_model("sana-1600m"), "single") == 0
    # the weights are read whatever the tokens per rank: same bytes at 10 and 10,000 tokens, under any TP degree
    for n, tp in ((10.0, 1), (1e4, 1), (1e4, 2)):
        bw = block_work(flux, "double", img_tokens=n, txt_tokens=n, attn_q=n, attn_kv=n, heads_share=1.0 / tp,
                        tp=tp, compiled=False)
        assert [op.nbytes for op in bw.linear_ops if op.flops == 0] == [2 * 12 * D * D]


def test_gemms_are_timed_kernel_by_kernel():
    """A narrow GEMM bound by its weight read keeps that time next to compute-bound ones (one roofline over
    the block's summed GEMMs would hide it): the one-GPU block is the sum of per-kernel rooflines."""
    p, m = get_profile("h100-sxm"), get_dense_model("flux.1-dev")
    bw = block_work(m, "double", img_tokens=4096, txt_tokens=8, attn_q=4104, attn_kv=4104, heads_share=1.0, tp=1,
                    compiled=False)
    eff = p.ops["experts"]

    def roof(c):
        return max(c.flops / (p.peak_flops * eff.compute_eff), c.nbytes / (p.mem_bw_Bps * eff.mem_eff))
    per_kernel = sum(roof(op) for op in bw.linear_ops)
    assert per_kernel > roof(bw.linear) * 1.01  # the text stream's and the modulation's weight reads show
    # and predict_dense times a one-GPU forward that way: blocks of per-kernel GEMMs, elementwise, core, gaps
    run = _run(DenseParallel())
    img, txt = 4096, m.text_tokens
    lc, at = p.ops["local_combine"], p.ops["attention"]
    want = 0.0
    for kind, count in (("double", m.double_blocks), ("single", m.single_blocks)):
        b = block_work(m, kind, img_tokens=img, txt_tokens=txt, attn_q=img + txt, attn_kv=img + txt,
                       heads_share=1.0, tp=1, compiled=False)
        want += count * (sum(roof(op) for op in b.linear_ops) + b.elementwise.nbytes / (p.mem_bw_Bps * lc.mem_eff)
                         + sum(max(c.flops / (p.peak_flops * at.compute_eff), c.nbytes / (p.mem_bw_Bps * at.mem_eff))
                               for c in b.attention_ops) + b.kernels * lc.launch_s)
    got = predict_dense(run, p, get_machine("dgx-h100"), builtin_nccl_model()).total_s
    assert got == pytest.approx(want, rel=1e-9)
    # SANA's depthwise conv is not a GEMM: its GEMMs are q/k/v, out, cross q/out/kv and the two 1x1 convs
    s = get_dense_model("sana-1600m")
    n, Ds = 1000.0, 2240
    sb = block_work(s, "single", img_tokens=n, txt_tokens=0, attn_q=n, attn_kv=n, heads_share=1.0, tp=1,
                    compiled=False)
    assert sb.linear.flops == pytest.approx(2 * n * Ds * Ds * (3 + 1 + 1 + 1 + 5 + 2.5)
                                            + 2 * s.text_tokens * Ds * 2 * Ds)


def _run(par: DenseParallel, model="flux.1-dev", **kw) -> DenseRun:
    base = dict(height_px=1024, width_px=1024, frames=1, steps=1, batch=1, cfg_on=False, compiled=False)
    return DenseRun(model=get_dense_model(model), parallel=par, **{**base, **kw})


def test_one_gpu_is_the_roofline_sum():
    p = get_profile("h100-sxm")
    t = predict_dense(_run(DenseParallel()), p, get_machine("dgx-h100"), builtin_nccl_model())
    assert t.comm_s == 0 and t.exposed_comm_s == 0 and t.total_s == t.compute_s > 0
    two = predict_dense(_run(DenseParallel(), steps=2), p, get_machine("dgx-h100"), builtin_nccl_model())
    assert two.total_s == pytest.approx(2 * t.total_s)


def test_ulysses_exposes_four_all_to_alls_per_block():
    G, nccl, p = get_machine("dgx-h100"), builtin_nccl_model(), get_profile("h100-sxm")
    m = get_dense_model("flux.1-dev")
    t = predict_dense(_run(DenseParallel(ulysses=2)), p, G, nccl)
    n_loc = (4096 + 512) / 2
    a2a = simulate_op(G, "all_to_all", nccl, gpus=2, nbytes=n_loc * m.hidden * 2).time_s
    gather = simulate_exchange(G, [[0, 1]], 4096 * 64 * 2 / 2, nccl, pattern="all_to_all")
    blocks = m.double_blocks + m.single_blocks
    assert t.exposed_comm_s == pytest.approx(4 * blocks * a2a + gather, rel=1e-9)


def test_ring_overlaps_and_interference_only_slows():
    G, nccl, p = get_machine("8x-l20-pcie"), builtin_nccl_model(), get_profile("l20")
    on = predict_dense(_run(DenseParallel(ring=4)), p, G, nccl, interference=True)
    off = predict_dense(_run(DenseParallel(ring=4)), p, G, nccl, interference=False)
    assert off.total_s <= on.total_s and on.exposed_comm_s < on.comm_s
    one = predict_dense(_run(DenseParallel()), p, G, nccl)
    assert on.total_s < one.total_s


def test_layout_refusals_follow_the_rules():
    hv = dict(model="hunyuanvideo-t2v", height_px=544, width_px=960, frames=97)
    assert "Cannot split video sequence" in refusal(_run(DenseParallel(ulysses=8), **hv))
    assert refusal(_run(DenseParallel(ulysses=4), **hv)) is None
    assert "heads" in refusal(_run(DenseParallel(ulysses=5)))
    assert "guidance" in refusal(_run(DenseParallel(cfg=2)))
    out = outcome_rows()
    refused = out[out["kind"] == "unsupported"]
    assert len(refused) == 2 and (refused["verdict"] == "agrees").all()


def test_hardware_mapping_and_figure_runs():
    assert hardware_for("H100 or H800 (ambiguous)")[:2] == ("h100-sxm", "dgx-h100")
    assert hardware_for("A800 (80G)")[:2] == ("a100-sxm", "hgx-a800")
    assert hardware_for("L20")[:2] == ("l20", "8x-l20-pcie")
    assert hardware_for("not stated ('8xGPU')") is None
    # "H200" starts with "H20": the H200 must not be read as the export-capped H20
    assert hardware_for("H200")[:2] == ("h200", "hgx-h200")
    assert hardware_for("H20")[:2] == ("h20", "hgx-h20")
    figs, _ = load_step_figures()
    f = next(x for x in figs if x["id"] == "paraattention-mochi-a100x4-cfg2ring2-eager")
    r = dense_run(f)
    assert r.cfg_on and r.parallel.cfg == 2 and r.parallel.ring == 2 and r.parallel.world == f["gpus"]


def test_a_broken_step_file_is_one_line_naming_file_and_figure(tmp_path):
    from dicesim.calibrate.published.step_level import step_level_rows
    from dicesim.errors import TraceError

    from pathlib import Path

    good = (Path(__file__).parents[1] / "traces" / "published" / "steps" / "xdit.toml").read_text()
    head, _, rest = good.partition("[[figure]]")
    first = rest.split("[[figure]]")[0]
    broken = tmp_path / "broken.toml"
    broken.write_text(head + "[[figure]]" + "\n".join(l for l in first.splitlines() if not l.startswith("gpu ")))
    with pytest.raises(ConfigError, match=r"broken\.toml: figure .*missing field 'gpu'"):
        step_level_rows([broken])
    (tmp_path / "bad.toml").write_text("schema = [")
    with pytest.raises(TraceError, match="not a readable TOML"):
        step_level_rows([tmp_path / "bad.toml"])


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('kind = "latency"', 'kind = "latency"\ncolour = "red"', 1), r"\.colour: unknown key"),
    (lambda t: t.replace("\nvalue = ", "\nvalue = 1e308 #", 1), r"\.value: must be a number in \(0, 1e\+06\]"),
    (lambda t: t.replace("\ngpus = ", "\ngpus = true #", 1), r"\.gpus: must be an integer in 1\.\.16384"),
    (lambda t: t.replace('kind = "latency"', 'kind = "speed"', 1), r"\.kind: got 'speed'"),
    (lambda t: t.replace("\ngpus = ", "\ntext_tokens = 0\ngpus = ", 1), r"\.text_tokens: must be an integer in 1\.\.65536"),
])
def test_hostile_step_figures_are_refused_in_one_line(tmp_path, edit, message):
    from pathlib import Path

    from dicesim.calibrate.published.step_level import step_level_rows

    text = (Path(__file__).parents[1] / "traces" / "published" / "steps" / "xdit.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(edit(text))
    assert bad.read_text() != text
    with pytest.raises(ConfigError, match=message):
        step_level_rows([bad])


def test_text_replicated_follows_each_frameworks_rule():
    from dicesim.calibrate.published.step_level import text_replicated_for
    assert text_replicated_for("xDiT", "cogvideox-5b", 226, 2) is False  # 226 = 2 x 113 splits
    assert text_replicated_for("xDiT", "cogvideox-5b", 226, 3) and text_replicated_for("xDiT", "cogvideox-5b", 226, 6)
    assert text_replicated_for("HunyuanVideo official (xDiT USP)", "hunyuanvideo-t2v", 256, 2)
    assert not text_replicated_for("xDiT", "flux.1-dev", 512, 4)
    assert not text_replicated_for("HunyuanVideo official", "hunyuanvideo-t2v", 256, 1)


def test_replicated_text_adds_the_text_tokens_work_on_every_rank():
    import dataclasses
    G, nccl, p = get_machine("dgx-h100"), builtin_nccl_model(), get_profile("h100-sxm")
    hv = dict(model="hunyuanvideo-t2v", height_px=544, width_px=960, frames=97)
    split = _run(DenseParallel(ulysses=4), **hv)
    rep = dataclasses.replace(split, text_replicated=True)
    a, b = predict_dense(split, p, G, nccl), predict_dense(rep, p, G, nccl)
    m = split.model
    # the linear layers of the 3/4 of the text a rank no longer shares out, in every block
    D, r = m.hidden, m.mlp_ratio
    extra_txt = m.text_tokens * 3 / 4
    gemm = 2 * extra_txt * (m.double_blocks * (3 * D * D + D * D + 2 * r * D * D)
                            + m.single_blocks * ((3 + r) * D * D + (1 + r) * D * D))
    img = m.image_tokens(544, 960, 97)
    # attention: queries grow from (img + txt) to img + 4 txt, over the joint keys, 1/4 of the heads
    attn = 4 * (3 * m.text_tokens) * (img + m.text_tokens) * D / 4 * (m.double_blocks + m.single_blocks)
    assert b.flops - a.flops == pytest.approx(gemm + attn, rel=1e-9)
    one = _run(DenseParallel(), **hv)
    assert predict_dense(one, p, G, nccl).total_s == predict_dense(
        dataclasses.replace(one, text_replicated=True), p, G, nccl).total_s


def test_denoise_only_figures_add_no_vae_decode(tmp_path):
    """A denoising-loop time is the loop's prediction alone; the same figure as a whole call adds the decode."""
    from pathlib import Path

    from dicesim.calibrate.published.step_level import step_level_rows
    from dicesim.sim.dense_vae import vae_decode_s

    text = (Path(__file__).parents[1] / "traces" / "published" / "steps" / "sglang.toml").read_text()
    assert text.count("denoise_only = true") == 4
    whole = tmp_path / "whole.toml"
    whole.write_text(text.replace("denoise_only = true", "denoise_only = false"))
    loop = step_level_rows([Path(__file__).parents[1] / "traces" / "published" / "steps" / "sglang.toml"])
    call = step_level_rows([whole])
    figs, _ = load_step_figures([whole])
    for f, a, b in zip(figs, loop.itertuples(), call.itertuples()):
        run = dense_run(f)
        prof = get_profile(hardware_for(f["gpu"])[0])
        assert a.vae_decode_s == 0.0 and a.denoise_only and not b.denoise_only
        assert b.vae_decode_s == vae_decode_s(run, prof) > 0
        assert b.predicted == pytest.approx(a.predicted + b.vae_decode_s, rel=1e-12)
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("denoise_only = true", 'denoise_only = "yes"', 1))
    with pytest.raises(ConfigError, match=r"\.denoise_only: must be true or false"):
        step_level_rows([bad])


def test_sglang_splits_the_latent_frames_not_height_and_width():
    """HunyuanVideo's own code refuses 480x848 on 4 ranks (30 x 53 patches); sglang splits the 20 latent frames."""
    import dataclasses

    from dicesim.calibrate.published.step_level import attention_kernel_for, latent_split_for, text_replicated_for

    hv = dict(model="hunyuanvideo-t2v", height_px=480, width_px=848, frames=77)
    own = _run(DenseParallel(ulysses=4), **hv)
    sgl = dataclasses.replace(own, latent_split="frames")
    assert "Cannot split video sequence" in refusal(own) and refusal(sgl) is None
    from dicesim.sim.dense import not_modelled
    assert not_modelled(sgl) is None
    # 65 frames -> 17 latent frames: sglang pads them to 20 over 4 ranks, which the time model does not model
    padded = dataclasses.replace(sgl, frames=65)
    assert "padded" in not_modelled(padded)
    assert not_modelled(dataclasses.replace(padded, latent_split="height-width")) is None
    with pytest.raises(ValueError, match="latent_split"):
        dataclasses.replace(own, latent_split="rows")
    assert latent_split_for("SGLang diffusion") == "frames" and latent_split_for("xDiT") == "height-width"
    assert attention_kernel_for("SGLang diffusion (#28319: text sharded under SP)")[0] == "fa3"
    before = "SGLang diffusion (main before #28319: text replicated under SP)"
    assert text_replicated_for(before, "hunyuanvideo-t2v", 256, 4)
    assert not text_replicated_for("SGLang diffusion (#28319: text sharded under SP)", "hunyuanvideo-t2v", 256, 4)
    assert not text_replicated_for("SGLang diffusion", "hunyuanvideo-t2v", 256, 4)


def test_user_issue_figures_are_xdit_latent_runs_on_eight_h100s(rows):
    """xDiT issue #416: FLUX.1-dev through xDiT's flux_example.py with output_type 'latent' (no decode), read
    with xDiT's FlashAttention-2, the 256 text tokens split over the 8 ranks and every degree product 8."""
    from pathlib import Path

    from dicesim.calibrate.published.step_level import attention_kernel_for

    path = Path(__file__).parents[1] / "traces" / "published" / "steps" / "user-issues.toml"
    figs, sources = load_step_figures([path])
    assert {f["source"] for f in figs} == {"xdit-issue-416", "xdit-issue-378"}
    assert "issues/416" in sources["xdit-issue-416"]["url"]
    figs = [f for f in figs if f["source"] == "xdit-issue-416"]
    assert len(figs) == 3
    by = rows.set_index("id")
    for f in figs:
        par = f["parallel"]
        assert par["ulysses"] * par["ring"] == f["gpus"] == 8 and f["denoise_only"] and f["steps"] == 25
        assert f"epoch time: {f['value']:.2f} sec" in f["quote"]
        run = dense_run(f)
        assert run.attention_kernel == attention_kernel_for(f["framework"])[0] == "fa2"
        assert run.model.text_tokens == f["text_tokens"] == 256  # the run's max_sequence_length, not the preset's 512
        assert not run.text_replicated  # 256 text tokens over 8 ranks divide
        r = by.loc[f["id"]]
        assert (r["split"], r["machine"], r["vae_decode_s"]) == ("held-out", "dgx-h100", 0.0)
        G, p = get_machine("dgx-h100"), get_profile("h100-sxm")
        from dicesim.calibrate.published.step_level import EAGER_HOST_PER_KERNEL_S
        from dicesim.sim.costs.attention_kernels import builtin_kernel_table
        alone = predict_dense(run, p, G, builtin_nccl_model(), interference=True, kernels=builtin_kernel_table(),
                              host_kernel_s=EAGER_HOST_PER_KERNEL_S)
        assert alone.total_s == r["predicted"]  # the loop alone: no decode added



def test_issue_378_figures_are_xfuser_0_3_4_pil_runs_on_one_to_four_h100s(rows):
    """xDiT issue #378: FLUX.1-dev through xfuser 0.3.4's flux_example.py (28 steps, 256 text tokens, output_type
    'pil': the decode inside the timer). Under SP that version keeps the text whole on every rank and runs
    flash_attn's FA2; on one GPU it hands the call to diffusers' FluxPipeline, torch 2.5.0's SDPA (cuDNN on H100)."""
    import dataclasses
    from pathlib import Path

    from dicesim.calibrate.published.step_level import (EAGER_HOST_PER_KERNEL_S, attention_kernel_for,
                                                        text_replicated_for)
    from dicesim.sim.costs.attention_kernels import builtin_kernel_table
    from dicesim.sim.dense_vae import vae_decode_s

    path = Path(__file__).parents[1] / "traces" / "published" / "steps" / "user-issues.toml"
    figs, sources = load_step_figures([path])
    assert "issues/378" in sources["xdit-issue-378"]["url"] and "35c5497" in sources["xdit-issue-378"]["commit"]
    figs = [f for f in figs if f["source"] == "xdit-issue-378"]
    assert sorted(f["value"] for f in figs) == [2.96, 3.23, 3.7, 5.01, 5.05, 6.27]  # the 'Me PyTorch (Sec)' column
    by = rows.set_index("id")
    G, p, nccl, kernels = get_machine("dgx-h100"), get_profile("h100-sxm"), builtin_nccl_model(), builtin_kernel_table()
    for f in figs:
        par, one = f["parallel"], f["gpus"] == 1
        assert par["ulysses"] * par["ring"] == f["gpus"] and f["steps"] == 28 and not f["compiled"]
        assert not f["denoise_only"] and f" {f['value']:g} | " in f["quote"] and "xfuser==0.3.4" in f["quote"]
        run = dense_run(f)
        assert run.model.text_tokens == 256
        assert run.attention_kernel == ("cudnn" if one else "fa2")
        assert run.text_replicated == (not one)
        r = by.loc[f["id"]]
        assert (r["split"], r["machine"]) == ("baseline" if one else "held-out", "dgx-h100")
        decode = vae_decode_s(run, p)
        assert decode > 0 and r["vae_decode_s"] == decode  # output_type 'pil': the decode is inside the timer
        t = predict_dense(run, p, G, nccl, interference=True, kernels=kernels, host_kernel_s=EAGER_HOST_PER_KERNEL_S)
        assert t.total_s + decode == r["predicted"]
        if not one:  # each rank runs the whole text: more work than the same run with the text split
            split = dataclasses.replace(run, text_replicated=False)
            assert t.total_s > predict_dense(split, p, G, nccl, interference=True, kernels=kernels,
                                             host_kernel_s=EAGER_HOST_PER_KERNEL_S).total_s
    # the rules that map them leave every other framework as it was
    assert attention_kernel_for("xDiT 0.3.4, one GPU (diffusers' FluxPipeline)")[0] == "cudnn"
    assert attention_kernel_for("xDiT 0.3.4 (examples/flux_example.py)")[0] == "fa2"
    assert attention_kernel_for("xDiT")[0] == "fa2" and "assumption" in attention_kernel_for("xDiT")[1]
    assert text_replicated_for("xDiT 0.3.4 (x)", "flux.1-dev", 256, 4)
    assert not text_replicated_for("xDiT 0.3.4 (x)", "flux.1-dev", 256, 1)
    assert not text_replicated_for("xDiT", "flux.1-dev", 512, 4)

def test_a_figure_s_text_tokens_replace_the_preset_s_and_nothing_else():
    """A figure's ``text_tokens`` (the run's max_sequence_length) is the preset with that text length: the same
    prediction as the preset edited by hand, and less work than the preset's 512 for FLUX.1-dev."""
    from dataclasses import replace

    from dicesim.dense_models import get_dense_model

    fig = {"parallel": {"ulysses": 2, "ring": 2}, "framework": "xDiT", "model": "flux.1-dev", "height_px": 1024,
           "width_px": 1024, "frames": 1, "steps": 25, "batch": 1, "cfg": "distilled"}
    preset, short = dense_run(fig), dense_run({**fig, "text_tokens": 256})
    assert preset.model.text_tokens == 512 and short.model == replace(get_dense_model("flux.1-dev"), text_tokens=256)
    assert replace(short, model=preset.model) == preset  # nothing else about the run changes
    G, p = get_machine("dgx-h100"), get_profile("h100-sxm")
    t = {k: predict_dense(r, p, G, builtin_nccl_model(), interference=True).total_s for k, r in
         (("preset", preset), ("short", short))}
    assert t["short"] < t["preset"]


def test_per_source_file_summary_partitions_the_held_out_and_baselines(rows):
    """accuracy.md's per-source table: every held-out and baseline figure in exactly one step file's row, each
    row's statistics those of its own figures."""
    from dicesim.calibrate.published.step_doc import by_source_file

    t = by_source_file(rows).set_index("step file")
    assert t["held-out"].sum() == (rows["split"] == "held-out").sum()
    assert t["baselines"].sum() == (rows["split"] == "baseline").sum()
    for stem, g in rows[rows["split"] == "held-out"].groupby("source_file"):
        r = t.loc[f"`{stem}.toml`"]
        assert r["max abs error"] == g["error"].abs().max() and r["median signed error"] == g["error"].median()
    overall_max = rows.loc[rows["split"] == "held-out", "error"].abs().max()
    assert t["max abs error"].max() == overall_max
