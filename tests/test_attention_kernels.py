"""The attention-kernel curves: what a broken reading of them would get wrong."""

from __future__ import annotations

import math

import pytest

from dicesim.calibrate.published.step_level import _row, attention_kernel_for, load_step_figures, step_level_rows
from dicesim.cli import main
from dicesim.errors import ConfigError
from dicesim.sim.costs.attention_kernels import ARCHS, attention_efficiency, builtin_kernel_table
from dicesim.sim.costs.profile import builtin_profile_names, get_profile, load_profile, profile_from_dict, save_profile
from dicesim.dense_models import get_dense_model
from dicesim.sim.dense import DenseParallel, DenseRun, attention_compute_eff
from dicesim.sim.network.nccl import builtin_nccl_model

T = builtin_kernel_table()


def eff(kernel, prof, hd, seq, peak, gemm=0.8, gpu=None):
    p = get_profile(prof)
    return attention_efficiency(T, kernel, p.arch, p.sms, hd, seq, peak_tflops=peak, gemm_eff=gemm,
                                gpu=p.gpu if gpu is None else gpu)


def test_measured_points_come_back_on_the_measuring_gpu():
    # FA3 paper, FA2 head dim 128 on H100 SXM5 (132 SMs): 362 TFLOP/s at 2k, 370 at 16k
    assert eff("fa2", "h100-sxm", 128, 2048, 989.5) == pytest.approx(362 / 989.5)
    assert eff("fa2", "h100-sxm", 128, 16384, 989.5) == pytest.approx(370 / 989.5)
    assert eff("fa3", "h100-sxm", 64, 4096, 989.5) == pytest.approx(476 / 989.5)
    # FA2 paper Figure 5(a), A100 80GB SXM4, head dim 64: 178 TFLOP/s at 512, 193 at 2k, 192 at 16k (one source)
    assert eff("fa2", "a100-sxm", 64, 512, 312.0) == pytest.approx(178 / 312.0)
    assert eff("fa2", "a100-sxm", 64, 2048, 312.0) == pytest.approx(193 / 312.0)
    assert eff("fa2", "a100-sxm", 64, 16384, 312.0) == pytest.approx(192 / 312.0)
    # head dim 128 on the A100: the FA2 paper's Figure 5(b) alone, 222 at 4k and 223 at 16k (liangan1/GPU_travel's
    # 185.64 is not used: its form factor is not stated and its clock fell under a power limit)
    assert eff("fa2", "a100-sxm", 128, 4096, 312.0) == pytest.approx(222 / 312.0)
    assert eff("fa2", "a100-sxm", 128, 16384, 312.0) == pytest.approx(223 / 312.0)


def test_log_linear_between_lengths_ends_held_and_head_dims_interpolated():
    mid = math.sqrt(2048 * 4096)  # halfway in log between two measured lengths
    assert eff("fa2", "h100-sxm", 128, mid, 989.5) == pytest.approx((362 + 368) / 2 / 989.5)
    assert eff("fa2", "h100-sxm", 128, 100, 989.5) == pytest.approx(309 / 989.5)
    assert eff("fa2", "h100-sxm", 128, 120_000, 989.5) == pytest.approx(370 / 989.5)
    assert eff("fa2", "h100-sxm", 96, 2048, 989.5) == pytest.approx((318 + 362) / 2 / 989.5)
    assert eff("fa2", "h100-sxm", 256, 2048, 989.5) == pytest.approx(362 / 989.5)  # nearest measured


def test_a_measured_gpu_reads_its_own_curves_unscaled():
    # SageAttention's bars on the H20 (89 TFLOP/s at 16k) and the L20 (111), not the H100 or RTX 4090 scaled by
    # SMs (219 and 122 TFLOP/s): a broken device match would give those, or the H20's 0.8 GEMM cap
    assert eff("fa2", "h20", 128, 16384, 148.0) == pytest.approx(89 / 148.0)
    assert eff("fa2", "h20", 64, 1024, 148.0) == pytest.approx(79 / 148.0)
    assert eff("fa2", "l20", 128, 16384, 234.6) == pytest.approx(111 / 234.6)
    # two sources on one GPU are averaged: apache/tvm 169.28 and SageAttention 151 at 2k on the RTX 4090
    assert eff("fa2", "rtx4090", 128, 2048, 165.2, gemm=1.1) == pytest.approx((169.28 + 151) / 2 / 165.2)
    assert eff("fa2", "rtx4090", 128, 2048, 165.2, gemm=0.75) == pytest.approx(0.75)  # the GEMM cap


def test_the_a100_head_dim_64_curve_is_its_own_not_the_head_dim_128_rate():
    """Head-dim-64 models (CogVideoX, ConsisID: 64-wide heads) on the A100 read the FA2 paper's head-dim-64
    curve, not the head-dim-128 sources held at the nearest measured head dim."""
    a100 = [c for c in T.curves if c.kernel == "fa2" and c.device == "NVIDIA A100-SXM4"]
    assert sorted(c.head_dim for c in a100) == [64, 128]  # the paper's two panels
    assert all(c.arch == "ampere" and c.sms == 108 and c.scalable for c in a100)
    for gpu in ("NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB"):  # both SXM4 parts are the measured device
        assert all(c.measured_on(gpu) for c in a100)
    assert not any(c.measured_on("NVIDIA A100-PCIE-40GB") or c.measured_on("NVIDIA A800-SXM4-80GB") for c in a100)
    hd64 = next(c for c in a100 if c.head_dim == 64)
    assert hd64.seq == (512, 1024, 2048, 4096, 8192, 16384) and hd64.tflops == (178, 191, 193, 192, 192, 192)
    # a head dim between the two measured ones: linear between the two curves (at 4k)
    at72 = 192 + (72 - 64) / (128 - 64) * (222 - 192)
    assert eff("fa2", "a100-sxm", 72, 4096, 312.0) == pytest.approx(at72 / 312.0)
    # the dense model: a CogVideoX-5B block (48 heads of 64) on an A100 over 17,776 keys runs at the hd64 rate,
    # the curve's 16k end held (192 TFLOP/s), where before this curve it got the hd128 rate (185.64)
    cogx = get_dense_model("cogvideox-5b")
    assert cogx.head_dim == 64
    run = DenseRun(model=cogx, height_px=480, width_px=720, frames=49, steps=50, batch=1, cfg_on=True,
                   compiled=False, parallel=DenseParallel(), attention_kernel="fa2")
    assert attention_compute_eff(run, get_profile("a100-sxm"), T, 17_776) == pytest.approx(192 / 312.0)


def test_device_names_match_whole_words():
    h20 = next(c for c in T.curves if c.device == "NVIDIA H20")
    assert h20.measured_on("NVIDIA H20 96GB (HGX)") and h20.measured_on("NVIDIA H20")
    assert not h20.measured_on("NVIDIA H200") and not h20.measured_on("NVIDIA H200 NVL") and not h20.measured_on(None)
    # every built-in profile of a measured GPU finds its curves by its own name (memory size, form-factor note)
    for prof, device in (("h20", "NVIDIA H20"), ("l20", "NVIDIA L20"), ("a100-sxm", "NVIDIA A100-SXM4"),
                         ("h100-sxm", "NVIDIA H100 80GB HBM3"), ("rtx4090", "NVIDIA GeForce RTX 4090")):
        assert {c.device for c in T.curves if c.measured_on(get_profile(prof).gpu)} == {device}
    # a further word names another product: the RTX 4090 D has 114 SMs, not the 4090's 128, and scales by them
    rtx = next(c for c in T.curves if c.device == "NVIDIA GeForce RTX 4090")
    assert rtx.measured_on("NVIDIA GeForce RTX 4090 (24GB)") and not rtx.measured_on("NVIDIA GeForce RTX 4090 D")
    d = attention_efficiency(T, "fa2", "ada", 114, 128, 2048, peak_tflops=1000.0, gemm_eff=1.0,
                             gpu="NVIDIA GeForce RTX 4090 D")
    assert d == pytest.approx((169.28 + 151) / 2 * 114 / 128 / 1000.0)


def test_sm_scaling_for_an_unmeasured_gpu_uses_only_scalable_curves():
    # the H200 has no curve of its own: the H100's per SM (132 of 132), never averaged with the capped H20
    assert eff("fa2", "h200", 128, 16384, 989.5) == pytest.approx(370 / 989.5)
    # half the SMs of an H100 under an unknown name: half its rate (per SM); the GEMM cap binds when reached
    assert eff("fa2", "h100-sxm", 128, 16384, 989.5, gpu="my hopper") == pytest.approx(370 / 989.5)
    p = get_profile("h100-sxm")
    half = attention_efficiency(T, "fa2", "hopper", 66, 128, 16384, peak_tflops=1000.0, gemm_eff=0.8, gpu="x")
    assert half == pytest.approx(370 / 2 / 1000.0) and p.sms == 132
    assert attention_efficiency(T, "fa2", "hopper", 66, 128, 16384, peak_tflops=148.0, gemm_eff=0.8, gpu="x") == 0.8
    # the L40S (142 SMs): the mean per SM of the two RTX 4090 sources, not the L20 (not scalable)
    assert eff("fa2", "l40s", 128, 2048, 1000.0, gemm=1.0) == pytest.approx((169.28 + 151) / 2 / 128 * 142 / 1000.0)


def test_no_curve_means_the_profile_applies():
    assert eff("fa3", "a100-sxm", 128, 4096, 312.0) is None  # FA3 is Hopper-only
    assert attention_efficiency(T, "fa2", None, None, 128, 4096, peak_tflops=312.0, gemm_eff=0.8) is None
    assert attention_kernel_for("ParaAttention (diffusers)")[0] == "fa2"
    assert attention_kernel_for("something else") is None


def test_curves_are_cited_and_fractions_physical():
    for c in T.curves:
        assert c.source and c.sms > 0 and len(c.seq) == len(c.tflops)
    assert {c.arch for c in T.curves} == set(ARCHS)  # every architecture a profile may name has curves
    for name in builtin_profile_names():  # every built-in GPU profile states and cites both
        p = get_profile(name)
        assert p.arch in ARCHS and p.sms > 0, name
        assert [k for k in p.citations if k.endswith("arch") or k.endswith("sms")], name


def _user_profile(tmp_path, **fields):
    """A user's own profile file: a GPU dicesim does not ship, written from scratch."""
    p = get_profile("a100-sxm").model_dump(exclude_none=True)
    p.pop("arch"), p.pop("sms")
    p.update(name="my-a800", gpu="NVIDIA A800-SXM4-80GB", citations={}, **fields)
    path = tmp_path / "my-a800.toml"
    save_profile(profile_from_dict(p), path)
    return path


def test_a_user_profile_with_arch_and_sms_gets_the_measured_curve(tmp_path):
    run = DenseRun(model=get_dense_model("flux.1-dev"), height_px=1024, width_px=1024, frames=1, steps=28, batch=1,
                   cfg_on=False, compiled=False, parallel=DenseParallel(), attention_kernel="fa2")
    bare = load_profile(_user_profile(tmp_path))
    assert bare.arch is None and attention_compute_eff(run, bare, T, 4096) is None  # the profile's number
    mine = load_profile(_user_profile(tmp_path, arch="ampere", sms=108))
    assert (mine.arch, mine.sms) == ("ampere", 108)
    # the A100's measured head-dim-128 point at 4k on 108 SMs (222 TFLOP/s, the FA2 paper) comes back, per SM,
    # for a 108-SM Ampere that is not an A100-SXM4 by name
    assert attention_compute_eff(run, mine, T, 4096) == pytest.approx(222 / 312.0)
    half = load_profile(_user_profile(tmp_path, arch="ampere", sms=54))
    assert attention_compute_eff(run, half, T, 4096) == pytest.approx(222 / 2 / 312.0)  # per SM


def test_a_bad_arch_is_one_clear_error(tmp_path, capsys):
    path = _user_profile(tmp_path, arch="hopper", sms=132)
    path.write_text(path.read_text().replace('arch = "hopper"', 'arch = "volta"'))
    with pytest.raises(ConfigError) as bad:
        load_profile(path)
    line = bad.value.one_line()
    assert line.startswith("profile.arch: 'volta'") and str(path) in line
    assert all(a in line for a in ARCHS) and "\n" not in str(bad.value)
    assert main(["check", str(path)]) == 2  # the CLI: exit 2, that one line, no traceback
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: {line}"] and "Traceback" not in err
    with pytest.raises(ConfigError, match="arch and sms go together"):
        get_profile("a100-sxm").with_updates(sms=None)


def test_inconsistent_figures_need_more_than_the_peak():
    """A figure whose recorded setting needs more than the GPU's dense peak is set aside. The committed set
    has none since the Mochi rows' steps were corrected (64 -> 28, the diffusers default when they ran);
    the rule is checked on the Mochi baseline at the setting recorded before (64 steps)."""
    rows = step_level_rows()
    assert not rows["reason"].str.startswith("inconsistent").any()
    figs, sources = load_step_figures()
    f = next(x for x in figs if x["id"] == "paraattention-mochi-a100x1-eager")
    assert f["steps"] == 28
    row = _row({**f, "steps": 64}, sources, builtin_nccl_model(), {}, builtin_kernel_table())
    assert row["split"] == "excluded" and row["reason"].startswith("inconsistent")
    need = float(row["reason"].split(" is ")[1].split(" TFLOP/s")[0])
    peak = float(row["reason"].split("GPU's ")[1].split(" TFLOP/s")[0])
    assert need > peak
    ok = _row(f, sources, builtin_nccl_model(), {}, builtin_kernel_table())
    assert ok["split"] == "baseline"

