"""Hardware profiles (validation, TOML round trip, built-ins) and the roofline cost model."""

from __future__ import annotations

import math

import pytest

from dicesim.errors import ConfigError
from dicesim.models import OpCost, block_workload, get_model
from dicesim.sim.costs.costmodel import CostModel, embed_cost, final_cost
from dicesim.sim.costs.profile import (
    OP_KINDS,
    HardwareProfile,
    builtin_profile_names,
    get_profile,
    load_profile,
    profile_for_gpu,
    save_profile,
)

BUILTINS = ("rtx4090", "l40s", "a100-sxm", "h100-sxm", "h200")


def test_builtins_load_and_cite_every_headline_number():
    assert set(BUILTINS) <= set(builtin_profile_names())
    for name in BUILTINS:
        p = get_profile(name)
        assert p.name == name and set(p.ops) == set(OP_KINDS)
        for key in ("peak_tflops", "mem_bw_GBps", "collective_base_s", "interference", "host_op_s"):
            assert p.citations.get(key), f"{name}: no citation for {key}"


def test_builtin_figures_match_hardware_table():
    # dense fp16/bf16 tensor rate with fp32 accumulate, from the vendor tables (docs/hardware.md)
    assert get_profile("h100-sxm").peak_tflops == 989.5 and get_profile("h100-sxm").mem_bw_GBps == 3350
    assert get_profile("rtx4090").peak_tflops == 165.2 and get_profile("l40s").peak_tflops == 362.05
    assert get_profile("a100-sxm").peak_tflops == 312 and get_profile("h200").mem_bw_GBps == 4800
    assert get_profile("l40s").mem_bw_GBps == 864 and get_profile("rtx4090").mem_bw_GBps == 1008


def test_round_trip(tmp_path):
    p = get_profile("a100-sxm").with_updates(interference=0.25, source="fit", fitted_range="batch 1-8")
    path = save_profile(p, tmp_path / "sub" / "fit.toml")
    assert load_profile(path) == p
    assert get_profile(str(path)) == p
    assert not list((tmp_path / "sub").glob(".*.tmp"))  # atomic write leaves no temp file


def test_validation_errors(tmp_path):
    good = get_profile("h100-sxm").model_dump()
    with pytest.raises(ConfigError, match="unknown key"):
        get_profile("h100-sxm").with_updates(bogus=1)
    ops = dict(good["ops"])
    ops.pop("gate")
    with pytest.raises(ConfigError, match="missing"):
        get_profile("h100-sxm").with_updates(ops=ops)
    with pytest.raises(ConfigError, match="profile.interference"):
        get_profile("h100-sxm").with_updates(interference=-1)
    with pytest.raises(ConfigError, match="unknown profile"):
        get_profile("tpu-v9")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_profile(tmp_path / "missing.toml")


def test_profile_for_gpu_prefers_the_measured_profile_where_there_is_one():
    # measured op timings exist for the H100 and H200 (traces/gpu): their calibrated profiles are the defaults
    assert profile_for_gpu("8x-rtx4090-pcie").name == "rtx4090"
    assert profile_for_gpu("h100-sxm").name == "h100-calibrated-graph"
    assert profile_for_gpu("hgx-h200").name == "h200-calibrated-graph"
    assert profile_for_gpu("dgx-a100").basis == "datasheet"
    assert profile_for_gpu("h100-sxm").basis == profile_for_gpu("hgx-h200").basis == "measured"
    # a calibration starts from the datasheet
    assert profile_for_gpu("h100-sxm", datasheet=True).name == "h100-sxm"
    assert profile_for_gpu("hgx-h200", datasheet=True).name == "h200"
    with pytest.raises(ConfigError):
        profile_for_gpu("generic")


def _toy_profile() -> HardwareProfile:
    eff = {"compute_eff": 0.5, "mem_eff": 0.25, "launch_s": 1e-6}
    return HardwareProfile(
        name="toy", gpu="toy", source="test", date="2025-01-01", peak_tflops=100.0, mem_bw_GBps=1000.0,
        ops={k: eff for k in OP_KINDS}, collective_base_s={"all_to_all": 0.0, "count_exchange": 0.0},
        link_latency_s={"default": 0.0}, host_op_s=0.0, host_collective_s=0.0, interference=0.0,
    )


def test_roofline_closed_form():
    wl = block_workload(get_model("tiny"), batch=1, image_px=64)
    cm = CostModel(_toy_profile(), wl, experts_on_rank=1)
    # compute-bound: 1e12 flops at 50 TFLOP/s = 20 ms; 1e9 B at 250 GB/s = 4 ms
    assert math.isclose(cm.op_time_s("experts", OpCost(flops=1e12, nbytes=1e9)), 1e-6 + 0.02)
    # memory-bound
    assert math.isclose(cm.op_time_s("gate", OpCost(flops=1e9, nbytes=1e9)), 1e-6 + 0.004)
    att = wl.attention_half()
    expect = 1e-6 + max(att.flops / 50e12, att.nbytes / 250e9)
    assert math.isclose(cm.action_time_s("attention"), expect)
    e = wl.expert_rows(100, 1)
    assert math.isclose(cm.expert_time_s(100), 1e-6 + max(e.flops / 50e12, e.nbytes / 250e9))
    assert cm.expert_times_s([[100, 0], [100, 7]]).tolist()[0] == [cm.expert_time_s(100), cm.expert_time_s(0)]


def test_embed_final_costs_scale_with_tokens():
    m = get_model("XL/2")
    small, big = (block_workload(m, batch=b, image_px=256) for b in (1, 4))
    for fn in (embed_cost, final_cost):
        assert fn(big).flops > 3.5 * fn(small).flops > 0
        assert fn(big).nbytes > fn(small).nbytes > 0
