"""Ulysses (DeepSpeed-Ulysses) as a sequence-parallel strategy: config, plan and simulator.

Per attention layer every rank all-to-alls Q, K and V (three calls) from (its token slice, every head)
to (every token, H/W heads), attends over the whole sequence with those heads, and all-to-alls the
output back (microsoft/DeepSpeed@38327e0 deepspeed/sequence/layer.py:386-416). Closed forms on a fully
connected graph (every flow crosses one direct link): each all-to-all takes the link latency + the
profile's all-to-all base + (1/W of a q-sized tensor) / bandwidth; with nothing overlapped, a step's
exposed communication is 4 L of them plus the scatter, broadcast and final gather; the attention FLOPs
per rank equal ``sp``'s.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dicesim.errors import ConfigError
from dicesim.models import block_workload, get_model
from dicesim.plan import build_plan, layout_for, rank_workload
from dicesim.plan.footprint import activation_parts, rank_work, runtime_nbytes
from dicesim.plan.sequence.kinds import (
    ATTEND, ATTEND_HEADS, ATTN_OUT, HEADS_IN, HEADS_OUT, KV_SYNC, LOWERING, MOE, QKV,
)
from dicesim.plan.vocabulary import CollectiveKind, Issue, Wait
from dicesim.scenario import make_scenario
from dicesim.sim.api import prepare, simulate
from dicesim.strategy import make_strategy, parse_strategy
from dicesim.strategy.registry import COMPARE_DEFAULT, strategy_names
from dicesim.topology import fully_connected
from sequence_cases import quiet_profile, scenario_kw

BW, LAT = 1e8, 1e-6
L = 4  # the tiny model's depth (hidden 32, 2 heads)




# ------------------------------------------------------------------ config
def test_preset_field_and_registry():
    u = make_strategy("ulysses")
    assert u.kv_exchange == "ulysses" and u.ulysses and not u.is_async
    assert parse_strategy(u.model_dump()) == u and make_strategy("sp").kv_exchange == "allgather"
    assert "ulysses" in strategy_names() and "ulysses" in COMPARE_DEFAULT
    assert "Ulysses" in u.describe()


def test_bad_fields_are_one_line_errors_naming_the_allowed_values():
    with pytest.raises(ConfigError) as e:
        make_strategy("ulysses", kv_async=True)
    assert "kv_async" in str(e.value) and "allgather" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        make_strategy("sp", kv_exchange="bogus")
    assert "allgather" in str(e.value) and "ulysses" in str(e.value) and "\n" not in str(e.value)


def test_heads_must_split_over_the_ranks():
    u = make_strategy("ulysses")
    u.check_split(2, 16, heads=2)
    with pytest.raises(ConfigError) as e:
        u.check_split(4, 16, heads=2)
    msg = str(e.value)
    assert "2 heads do not split over 4 ranks" in msg and "divisors of 2: 1, 2" in msg and "\n" not in msg
    make_strategy("sp").check_split(4, 16, heads=2)  # the all-gather does not split heads
    with pytest.raises(ConfigError, match="heads"):  # the scenario checks it before anything runs
        make_scenario(model="tiny", strategy="ulysses", world_size=4, image_size=64, topology="tiny-ring4")
    with pytest.raises(ConfigError, match="tokens per image"):  # and the token split still applies
        u.check_split(3, 16, heads=6)


# ------------------------------------------------------------------ plan
@pytest.mark.parametrize("layers", [1, 4, 7])
def test_every_layer_exchanges_heads_and_nothing_is_stale_or_held(layers):
    T = 3
    plan = build_plan(make_strategy("ulysses"), layers, T)
    for t in range(T):
        c = Counter(a.kind for a in plan.steps[t])
        assert c[QKV] == c[HEADS_IN] == c[ATTEND_HEADS] == c[HEADS_OUT] == c[ATTN_OUT] == c[MOE] == layers
        assert c[KV_SYNC] == c[ATTEND] == 0
        per_layer = [a.kind for a in plan.steps[t] if a.layer == 1 % layers]
        assert per_layer == [QKV, HEADS_IN, ATTEND_HEADS, HEADS_OUT, ATTN_OUT, MOE]
    assert (plan.lags.kept == 0).all() and plan.lags.max_lag == 0
    assert plan.held == ((),) * T and plan.async_layers == () and plan.gc_frees == {}
    assert CollectiveKind.HEAD_A2A in plan.issued_kinds and CollectiveKind.KV_GATHER not in plan.issued_kinds


def test_lowering_is_three_blocking_all_to_alls_in_and_one_out():
    a2a = (Issue(CollectiveKind.HEAD_A2A), Wait(CollectiveKind.HEAD_A2A))
    assert LOWERING[HEADS_IN] == a2a * 3 and LOWERING[HEADS_OUT] == a2a
    assert CollectiveKind.HEAD_A2A.label == "head_a2a"


def test_attention_flops_per_rank_equal_sp():
    for W, model in ((2, "tiny"), (8, "XL/2")):
        wl = rank_workload(make_strategy("ulysses"), block_workload(get_model(model), batch=1, image_px=256), W)
        core = wl.attention_core()
        assert wl.attention_heads().flops + wl.attention_out().flops == core.flops
        n_all = wl.tokens_per_image * W  # every token, D/W of the width: the same QK^T and AV work
        assert wl.attention_heads().flops == 4 * wl.images * n_all * n_all * wl.model.hidden // W


def test_memory_counts_the_all_to_all_buffers_not_the_gathered_kv():
    model = get_model("XL/2")
    W = 8
    parts = {}
    for name in ("sp", "ulysses"):
        s = make_strategy(name)
        layout = layout_for(s, W, model.num_experts)
        wl = rank_workload(s, block_workload(model, batch=1, image_px=256), W)
        parts[name] = activation_parts(model, rank_work(wl, layout, None, image_tokens=256))
        N, D = wl.tokens, model.hidden
        if name == "ulysses":
            assert layout.head_split == W and (parts[name]["attention"] == 10 * N * D).all()
            # the head all-to-all opens point-to-point connections to every peer; the scatter, broadcast and
            # token all-gather on the same communicator hold its ring buffers too (as under ring attention)
            plan = build_plan(s, model.depth, 2)
            assert runtime_nbytes(plan, layout)["nccl"] == (W - 1) * 384 * 2 ** 20 + 656 * 2 ** 20
        else:
            assert (parts[name]["attention"] == 6 * N * D + 2 * wl.images * 256 * D).all()


# ------------------------------------------------------------------ simulator
@pytest.mark.parametrize("model, W, L", [("tiny", 2, 4), ("small", 4, 6)])  # 2 and 4 heads
def test_each_all_to_all_and_the_exposed_comm_in_closed_form(model, W, L):
    T = 2
    prof, graph = quiet_profile(), fully_connected(W, BW, LAT)
    kw = scenario_kw(W, T, model)
    prep = prepare(**kw, strategy="ulysses", profile=prof, graph=graph)
    res = simulate(**kw, strategy="ulysses", profile=prof, graph=graph, record=True)
    tpr, row = prep.routing.tokens_per_rank, prep.spec.row_nbytes
    assert tpr == 2 * W * 16 // W  # CFG halves of every rank's image, a 1/W slice of each
    a2a_s = LAT + prof.collective_base_s["all_to_all"] + tpr * row / W / BW  # 1/W of a q-sized tensor per peer
    coll = res.events[res.events.kind == "collective"]
    heads = coll[coll.name == "head_a2a"]
    assert len(heads) == W * 4 * L * T and set(heads.stream) == {"comm"}
    assert np.allclose((heads.end_us - heads.start_us) * 1e-6, a2a_s, rtol=1e-9)
    assert set(heads.rows) == {tpr * (W - 1) // W}
    # nothing overlaps: exposed = every collective's time; the scatter, broadcast and final gather are sp's
    other = coll[(coll["rank"] == 0) & (coll.name != "head_a2a")]
    other_s = float((other.end_us - other.start_us).sum()) * 1e-6
    assert res.totals["exposed_comm_s"] == pytest.approx(T * 4 * L * a2a_s + other_s, rel=1e-9)
    # the step is its parts in a row
    cm = prep.spec.cost
    layer_s = sum(cm.action_time_s(k) for k in ("sp_qkv", "uly_attend", "uly_proj", "gate", "local_moe",
                                                "shared_expert", "local_combine")) + 4 * a2a_s
    step_s = cm.action_time_s("embed") + cm.action_time_s("final") + L * layer_s + other_s / T
    assert res.totals["total_latency_s"] == pytest.approx(T * step_s, rel=1e-9)
    assert res.totals["collectives"] == T * (3 + 4 * L) and res.totals["max_lag"] == 0
    assert res.totals["peak_buffer_bytes"] == 0
    assert {"uly_attend", "uly_proj"} <= set(res.events[res.events.kind == "compute"].name)


def test_link_bytes_in_closed_form_against_sp():
    W, T = 2, 3
    prof, graph = quiet_profile(), fully_connected(W, BW, LAT)
    kw = scenario_kw(W, T)
    prep = prepare(**kw, strategy="ulysses", profile=prof, graph=graph)
    tpr, row, images = prep.routing.tokens_per_rank, prep.spec.row_nbytes, prep.spec.cost.workload.images
    uly = simulate(**kw, strategy="ulysses", profile=prof, graph=graph)
    sp = simulate(**kw, strategy="sp", profile=prof, graph=graph)
    other = ((W - 1) * tpr + (W - 1) * images + W * (W - 1) * tpr) * row  # scatter, broadcast, final gather
    # per layer every rank sends (W-1)/W of q, k, v and of the output: 4 x tpr x row x (W-1)/W
    assert uly.links["nbytes"].sum() == pytest.approx(T * (L * 4 * tpr * row * (W - 1) + other))
    assert sp.links["nbytes"].sum() == pytest.approx(T * (L * 2 * W * (W - 1) * tpr * row + other))


def test_default_model_compares_with_sp_and_distrifusion():
    """XL/2 (16 heads) on 8 GPUs: Ulysses moves 4 x 7/8 of a q-sized tensor per layer, sp's all-gather
    2 x 7 of it, so Ulysses exposes less communication than sp; DistriFusion hides most of its own."""
    kw = dict(model="XL/2", topology="dgx-h100", world_size=8, batch=1, steps=4)
    r = {s: simulate(**kw, strategy=s) for s in ("sp", "ulysses", "distrifusion")}
    assert r["ulysses"].totals["exposed_comm_s"] < r["sp"].totals["exposed_comm_s"]
    assert r["ulysses"].links["nbytes"].sum() < r["sp"].links["nbytes"].sum()
    assert r["distrifusion"].totals["exposed_comm_s"] < r["ulysses"].totals["exposed_comm_s"]
    assert r["ulysses"].totals["max_lag"] == 0 and r["ulysses"].totals["peak_buffer_bytes"] == 0


def test_one_gpu_moves_nothing_and_single_img_shares_rank_0s_batch():
    one = simulate(model="XL/2", topology="dgx-h100", world_size=1, batch=1, steps=2, strategy="ulysses")
    assert one.links["nbytes"].sum() == 0 and one.totals["exposed_comm_s"] >= 0
    s = make_strategy("ulysses", single_img=True)
    assert s.ulysses and s.images_in_batch(batch=2, world_size=4) == 2
    prep = prepare(model="small", world_size=4, batch=2, image_size=64, steps=2, strategy=s, topology="tiny-ring4",
                   profile="h100-sxm")
    assert prep.spec.cost.workload.images == 2 * 2  # rank 0's batch with its CFG halves, 1/4 of each image


def test_a_scenario_file_reads_the_field(tmp_path):
    from dicesim.scenario import load_scenario

    f = tmp_path / "u.toml"
    f.write_text('[model]\nname = "XL/2"\n[topology]\nname = "dgx-h100"\n[strategy]\npreset = "sp"\n'
                 'kv_exchange = "ulysses"\n')
    sc = load_scenario(f)
    assert sc.strategy.ulysses and sc.strategy.kv_exchange == "ulysses"
    f.write_text('[strategy]\npreset = "sp"\nkv_exchange = "bogus"\n')
    with pytest.raises(ConfigError) as e:
        load_scenario(f)
    assert "allowed: allgather, ulysses, ring, usp" in str(e.value) and "\n" not in str(e.value)


def test_run_facts_name_the_head_all_to_all_and_its_bytes():
    from dicesim.topology import get_topology
    from dicesim.trust.facts import HEAD_A2A, run_facts

    sc = make_scenario(model="XL/2", topology="dgx-h100", world_size=8, batch=1, strategy="ulysses")
    facts = run_facts(sc, get_topology("dgx-h100"))
    N, row = 2 * 8 * 256 // 8, 1152 * 2  # every rank's image with its CFG half, 1/8 of its 256 tokens; bf16
    assert facts.collective == HEAD_A2A and facts.rows_per_rank == N
    assert facts.a2a_nbytes_per_rank == 4 * N * row * 7 / 8
    assert "four all-to-alls: 1/8 of each to each of 7 ranks" in " ".join(facts.sentences())
