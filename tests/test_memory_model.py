"""The per-GPU memory model (dicesim/plan/memory.py, footprint.py; docs/memory.md).

Closed forms: the weights a rank holds equal the torch model's parameters and buffers, byte for
byte, for every small preset and every slice of experts; the large presets have the parameter
counts DiT-MoE publishes. Held buffers follow the reference's own definitions (rules.md §3, the
harness's measured bytes). The working set and the runtime allowance are checked against their
formulas; the holders a family names are summed whatever they are called; the G/2 data-parallel
run on RTX 4090s is reported as not fitting. The measured check (live tensors on gloo ranks
against the prediction) is in tests/test_memory_measured.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import toy_family as toy
from dicesim.models import block_workload, get_model
from dicesim.placement import make_placement
from dicesim.plan import build_plan, layout_for
from dicesim.plan.footprint import RUNTIME, activation_parts, rank_work, runtime_nbytes, weight_nbytes
from dicesim.plan.memory import estimate_memory
from dicesim.plan.expert.buffers import buffer_rows
from dicesim.scenario import RoutingConfig
from dicesim.sim.api import prepare
from dicesim.sim.costs.routing import build_routing
from dicesim.strategy import make_strategy
from validate.executor.memprobe import module_nbytes
from validate.model.model import DiTMoE

GiB = 2**30


@pytest.mark.parametrize("name, image_px", [("tiny", 32), ("small", 64), ("digits", 8)])
@pytest.mark.parametrize("experts", [None, (1,), (0, 2)])
def test_weights_equal_the_torch_models_bytes(name, image_px, experts):
    preset = get_model(name)
    model = DiTMoE.for_image(preset, image_px, expert_ids=experts)
    held = len(experts) if experts else preset.num_experts
    parts = weight_nbytes(preset, tokens_per_image=preset.tokens_per_image(image_px), experts_per_rank=held,
                          dtype_nbytes=4)
    assert sum(parts.values()) == sum(module_nbytes(model).values())
    expert_params = sum(p.numel() for n, p in model.named_parameters() if ".moe.experts." in n)
    assert parts["experts"] == expert_params * 4


@pytest.mark.parametrize("name, params", [("XL/2", 4.1e9), ("G/2", 16.5e9)])
def test_large_presets_have_the_published_parameter_counts(name, params):
    """DiT-MoE's README: DiT-MoE-XL/2-8E2A 4.1 B, DiT-MoE-G/2-16E2A 16.5 B parameters (every expert)."""
    preset = get_model(name)
    parts = weight_nbytes(preset, tokens_per_image=256, experts_per_rank=preset.num_experts, dtype_nbytes=1)
    assert sum(parts.values()) == pytest.approx(params, rel=0.02)
    # expert parallelism over 8 ranks keeps 1/8 of the routed experts and every dense weight
    ep = weight_nbytes(preset, tokens_per_image=256, experts_per_rank=preset.num_experts // 8, dtype_nbytes=1)
    assert ep["experts"] * 8 == parts["experts"] and ep["blocks"] == parts["blocks"]


def _held_by_kind(case: dict) -> list[dict[str, int]]:
    """dicesim's held bytes per rank and kind at the case's step, with balanced routing."""
    W, L, E, D = case["world_size"], case["layers"], case["experts"], case["hidden"]
    b = 2 if case["dtype"] == "float16" else 4
    strategy = make_strategy(case["dicesim"]["strategy"], buffer_policy=case["dicesim"]["buffer_policy"])
    plan = build_plan(strategy, L, case["steps"])
    assert sorted(plan.async_layers) == case["async_layers"]
    routing = build_routing(RoutingConfig(), make_placement(W, E), num_layers=L, num_steps=case["steps"],
                            tokens_per_rank=case["tokens_per_forward"], top_k=2, seed=0)
    recv = routing.recv_rows_LTW(False)
    out = [dict.fromkeys(case["bytes_by_rank"][0], 0) for _ in range(W)]
    for hb in plan.held[case["step"]]:
        for r in range(W):
            rows = buffer_rows(hb, local_tokens=case["tokens_per_forward"], top_k=2,
                               recv_rows=int(recv[hb.layer, hb.tok_step, r]) if hb.tok_step >= 0 else 0)
            out[r][str(hb.what)] += rows * D * b
    return out


@pytest.mark.parametrize("name", ["displaced", "interweaved", "interweaved_deep"])
def test_held_buffers_follow_the_references_definitions(name):
    """rules.md §3: per asynchronous layer, the dispatch send and the combine receive buffer hold
    U = 2 N D b each (this rank's own copies: exact), the dispatch receive and combine send buffer
    the rows this rank's experts got (routing: the reference's random router spreads them
    unevenly, dicesim's balanced one evenly, so per rank within 10 % and equal in sum)."""
    case = json.loads(Path(__file__).with_name("data").joinpath("reference_ep_buffers.json").read_text())["cases"][name]
    predicted, measured = _held_by_kind(case), case["bytes_by_rank"]
    U = 2 * case["tokens_per_forward"] * case["hidden"] * 2
    for pred, meas in zip(predicted, measured):
        assert pred["dispatch_send"] == meas["dispatch_send"] == U * len(case["async_layers"])
        assert pred["combine_recv"] == meas["combine_recv"] == U * len(case["async_layers"])
        assert pred["skip_cache"] == meas["skip_cache"] == 0
        for kind in ("dispatch_recv", "combine_send"):
            assert pred[kind] == pytest.approx(meas[kind], rel=0.10)
    for kind in ("dispatch_recv", "combine_send"):
        assert sum(p[kind] for p in predicted) == sum(m[kind] for m in measured)


def test_working_set_of_one_block_by_its_formula():
    """Balanced routing, sync on 2 ranks of the small preset: each phase is its sum of tensors."""
    preset = get_model("small")
    wl = block_workload(preset, batch=4, image_px=64, dtype="fp32")
    layout = layout_for(make_strategy("sync"), 2, preset.num_experts)
    work = rank_work(wl, layout, None, image_tokens=preset.tokens_per_image(64))
    N, D, H, S, R = wl.tokens, preset.hidden, preset.expert_hidden, preset.shared_hidden, 2 * wl.tokens
    assert work.exchange and (work.recv_rows_W == R).all() and (work.expert_rows_W == 2 * R // 8).all()
    parts = activation_parts(preset, work)
    G = 2 * R // 8
    assert parts["attention"][0] == 6 * N * D
    assert parts["moe"][0] == N * D + 2 * R * D + 2 * R * D + max(G * (D + 3 * H), 2 * R * D)
    assert parts["shared"][0] == N * D + R * D + 3 * N * S
    local = rank_work(wl, layout_for(make_strategy("data_parallel"), 2, 8), None, image_tokens=64)
    assert not local.exchange and activation_parts(preset, local)["moe"][0] == \
        N * D + 2 * R * D + max(R // 8 * (D + 3 * H), R * D + N * D)


def test_runtime_allowance_counts_the_communicators_a_layout_uses():
    preset = get_model("XL/2")
    one_rank = runtime_nbytes(build_plan(make_strategy("data_parallel"), preset.depth, 4),
                              layout_for(make_strategy("data_parallel"), 8, 8))
    assert one_rank == {"context": RUNTIME.context_nbytes, "nccl": 0}  # no rank exchanges with another
    ep = runtime_nbytes(build_plan(make_strategy("dice"), preset.depth, 4), layout_for(make_strategy("dice"), 8, 8))
    assert ep["nccl"] == 7 * RUNTIME.p2p_per_peer_nbytes  # all-to-alls: every peer of the group of 8
    sep = make_strategy("dice", count_comm="separate")
    two = runtime_nbytes(build_plan(sep, preset.depth, 4), layout_for(sep, 8, 8))
    assert two["nccl"] == 2 * 7 * RUNTIME.p2p_per_peer_nbytes  # the count exchanges' own communicator
    sync = make_strategy("sync")
    groups = runtime_nbytes(build_plan(sync, preset.depth, 4), layout_for(sync, 16, 8))
    assert groups["nccl"] == 7 * RUNTIME.p2p_per_peer_nbytes  # 16 GPUs, groups of 8


def test_g2_data_parallel_does_not_fit_a_4090_and_expert_parallel_does():
    kw = dict(model="G/2", topology="8x-rtx4090-pcie", world_size=8, batch=32, steps=50)
    dp = prepare(**kw, strategy="data_parallel").memory()
    assert dp.capacity_bytes == 24564 * 2**20 and dp.fits is False and dp.margin_bytes < -8 * GiB
    assert dp.by_holder["weights"] == pytest.approx(16.5e9 * 2, rel=0.02)  # every expert, fp16/bf16
    assert dp.verdict().startswith("does not fit in GPU memory: needs 32.2 GiB per GPU of 24.0 GiB")
    assert "weights 30.7 GiB" in dp.verdict()
    ep = prepare(**kw, strategy="dice").memory()
    assert ep.fits is True and ep.by_holder["weights"] < dp.by_holder["weights"] / 4
    assert ep.by_holder["stale_buffers"] > 0 and ep.total_bytes == pytest.approx(sum(ep.by_holder.values()))


def test_a_familys_holders_count_whatever_their_name(monkeypatch):
    """The totals sum every holder a family's memory_TW names (the sequence family's K/V buffers
    count with no change to the memory model)."""
    with toy.registered():
        kw = dict(model="tiny", world_size=4, batch=1, image_size=64, steps=3, topology="tiny-ring4",
                  profile="h100-sxm")
        base = prepare(**kw, strategy=make_strategy("toy-gather-stale")).memory()
        assert base.by_holder["stale_buffers"] > 0
        renamed = lambda plan, routing, row_nbytes: {  # noqa: E731
            "kv_buffers": toy.RULES.buffer_nbytes_TW(plan, routing, row_nbytes),
            "other": np.full((plan.num_steps, 4), 1000.0)}
        monkeypatch.setattr(toy.RULES, "memory_TW", renamed)
        est = prepare(**kw, strategy=make_strategy("toy-gather-stale")).memory()
        assert "stale_buffers" not in est.by_holder
        assert est.by_holder["kv_buffers"] == base.by_holder["stale_buffers"] and est.by_holder["other"] == 1000
        slack = RUNTIME.slack_frac * 1000
        assert est.total_bytes == pytest.approx(base.total_bytes + 1000 + slack)
        assert est.by_holder["runtime"] == RUNTIME.context_nbytes + RUNTIME.ring_per_comm_nbytes  # one all-gather


def test_unknown_capacity_is_unknown_fit():
    est = prepare(model="tiny", world_size=2, batch=1, image_size=32, steps=2, topology="tiny-ring4",
                  strategy="sync", profile="traces/side-by-side/cpu-gloo-w2.toml").memory()
    assert est.capacity_bytes is None and est.fits is None and est.margin_bytes is None
    assert est.verdict().startswith("fit unknown")
