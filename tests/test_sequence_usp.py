"""USP (unified sequence parallelism: Ulysses inside, ring across) as a sequence-parallel strategy: config,
plan and simulator.

Rule (feifeibear/long-context-attention@56118e0 yunchang/hybrid/attn_layer.py:111-158, globals.py:22-57):
the W ranks form W/u Ulysses groups of u consecutive ranks and u ring groups of the ranks u apart; per
attention layer Q, K and V are all-to-all'd inside the Ulysses group (scatter the heads, gather the group's
tokens), ring attention runs over the ring group on those heads, and the output is all-to-all'd back.
Closed forms on a fully connected graph (every flow crosses one direct link of bandwidth bw): an all-to-all
takes the link latency + the profile's all-to-all base + (tpr x row / u) / bw; a ring pass the link latency
+ the same base + (one K/V block, 2 x tpr x row) / bw; bytes per rank per layer 4 (u-1)/u x tpr x row + 2 (r-1)
x tpr x row (tpr x row = N x D x b: this rank's tokens times the row bytes); exposed per layer 4 all-to-alls +
(r-1) max(0, pass - block).
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
    ATTN_OUT, HEADS_IN, HEADS_OUT, LOWERING, MOE, QKV, RING_ATTEND, USP_ATTEND, USP_LAST,
)
from dicesim.plan.vocabulary import CollectiveKind, Compute, Issue, Wait
from dicesim.scenario import make_scenario, strategy_refusal
from dicesim.sim.api import prepare, simulate
from dicesim.sim.costs.profile import get_profile
from dicesim.strategy import make_strategy, parse_strategy
from dicesim.strategy.registry import strategy_names
from dicesim.topology import fully_connected
from sequence_cases import quiet_profile, scenario_kw

LAT = 1e-6
MiB = 2 ** 20


def usp(u: int):
    return make_strategy("usp", ulysses_degree=u)


# ------------------------------------------------------------------ config
def test_preset_field_and_registry():
    s = make_strategy("usp")
    assert s.kv_exchange == "usp" and s.usp and s.ulysses_degree == 2 and not s.ring and not s.ulysses
    assert parse_strategy(s.model_dump()) == s and "usp" in strategy_names()
    assert "USP" in s.describe() and s.head_split(8) == 2 and s.ring_degree(8) == 4


def test_bad_fields_are_one_line_errors_naming_the_allowed_values():
    for bad, words in ((dict(kv_async=True), ("kv_async", "allgather")), (dict(ulysses_degree=0), ("ulysses_degree",))):
        with pytest.raises(ConfigError) as e:
            make_strategy("usp", **bad)
        assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        make_strategy("ring", ulysses_degree=2)
    assert "needs kv_exchange = usp" in str(e.value) and "\n" not in str(e.value)


def test_world_heads_and_tokens_must_split():
    s = usp(2)
    s.check_split(4, 16, heads=4)
    with pytest.raises(ConfigError, match="multiples of 2") as e:
        s.check_split(3, 18, heads=4)  # 3 ranks do not form Ulysses groups of 2
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="divisors of 2: 1, 2") as e:
        usp(4).check_split(4, 16, heads=2)  # tiny's 2 heads do not split over 4
    assert "ulysses_degree" in str(e.value)
    with pytest.raises(ConfigError, match="tokens per image"):
        s.check_split(4, 18, heads=4)
    # the default scenario's refusal names the rule in one line (the preset at 1 GPU: 1 rank, groups of 2)
    sc = make_scenario(model="XL/2", topology="dgx-h100", world_size=8, batch=1, strategy="sp")
    assert strategy_refusal(sc, make_strategy("usp")) == ""
    one = make_scenario(model="XL/2", topology="dgx-h100", world_size=1, batch=1, strategy="sp")
    why = strategy_refusal(one, make_strategy("usp"))
    assert "ulysses_degree = 2" in why and "\n" not in why


# ------------------------------------------------------------------ plan
@pytest.mark.parametrize("layers", [1, 4])
def test_every_layer_exchanges_heads_then_passes_kv(layers):
    T = 2
    plan = build_plan(usp(2), layers, T)
    for t in range(T):
        c = Counter(a.kind for a in plan.steps[t])
        assert c[QKV] == c[HEADS_IN] == c[USP_ATTEND] == c[USP_LAST] == c[HEADS_OUT] == c[ATTN_OUT] == layers
        assert c[RING_ATTEND] == 0
        per_layer = [a.kind for a in plan.steps[t] if a.layer == 0]
        assert per_layer == [QKV, HEADS_IN, USP_ATTEND, USP_LAST, HEADS_OUT, ATTN_OUT, MOE]
    assert (plan.lags.kept == 0).all() and plan.held == ((),) * T
    assert {CollectiveKind.HEAD_A2A, CollectiveKind.KV_RING} <= plan.issued_kinds
    kr = CollectiveKind.KV_RING
    assert LOWERING[USP_ATTEND] == (Issue(kr), Compute("usp_blocks"), Wait(kr))
    assert LOWERING[USP_LAST] == (Compute("usp_block"),)


def test_layout_groups_follow_yunchang():
    """use_ulysses_low=True (globals.py:39-57): Ulysses groups of consecutive ranks, rings of ranks u apart."""
    lay = layout_for(usp(2), 8, 8)
    assert lay.ulysses_groups() == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert lay.ring_groups() == ((0, 2, 4, 6), (1, 3, 5, 7))
    assert lay.head_split == 2 and lay.ring_passes == 3 and lay.ring_size == 4 and lay.empty_kinds == frozenset()
    assert layout_for(usp(8), 8, 8).empty_kinds == {CollectiveKind.KV_RING}
    assert layout_for(usp(1), 8, 8).empty_kinds == {CollectiveKind.HEAD_A2A}


def test_attention_flops_per_rank_equal_sp():
    for W, u in ((4, 2), (8, 2), (8, 4)):
        wl = rank_workload(usp(u), block_workload(get_model("XL/2"), batch=1, image_px=256), W)
        # W/u blocks of (u S tokens x H/u heads) and the projection are sp's attention core
        assert (W // u) * wl.attention_block().flops + wl.attention_out().flops == wl.attention_core().flops


def test_memory_and_connections():
    model, W = get_model("XL/2"), 8
    s = usp(2)
    layout = layout_for(s, W, model.num_experts)
    wl = rank_workload(s, block_workload(model, batch=1, image_px=256), W)
    parts = activation_parts(model, rank_work(wl, layout, None, image_tokens=256))
    # the ring's working set up to its float32 output (9 N D) and the all-to-all's received q, k, v (3 N D)
    assert (parts["attention"] == 12 * wl.tokens * model.hidden).all()
    for u, ref, n in ((W, "ulysses", 10), (1, "ring", 11)):  # the reductions keep their variant's working set
        lay = layout_for(usp(u), W, model.num_experts)
        w = rank_workload(usp(u), block_workload(model, batch=1, image_px=256), W)
        assert (activation_parts(model, rank_work(w, lay, None, image_tokens=256))["attention"]
                == n * w.tokens * model.hidden).all(), ref
    plan = build_plan(s, model.depth, 2)
    # one Ulysses peer (u-1) and two ring neighbours, point to point, and the ring buffers of the scatter/gathers
    assert runtime_nbytes(plan, layout)["nccl"] == (1 + 2) * 384 * MiB + 656 * MiB


@pytest.mark.parametrize("W", [2, 4, 8])
def test_every_variant_holds_the_ring_buffers_of_its_scatter_and_gathers(W):
    # every sequence variant runs the scatter, the broadcast and the final token all-gather on its one
    # communicator (ring collectives: ring_per_comm_nbytes once), whatever point-to-point its attention adds
    model = get_model("XL/2")
    p2p, ring = 384 * MiB, 656 * MiB
    expect = {"sp": ring, "ring": min(W - 1, 2) * p2p + ring, "ulysses": (W - 1) * p2p + ring,
              "usp": (2 - 1 + min(W // 2 - 1, 2)) * p2p + ring}
    for name, nbytes in expect.items():
        s = make_strategy(name)
        plan = build_plan(s, model.depth, 2)
        assert runtime_nbytes(plan, layout_for(s, W, model.num_experts))["nccl"] == nbytes, name


# ------------------------------------------------------------------ simulator
@pytest.mark.parametrize("W, u, bw", [(4, 2, 1e8), (4, 2, 1e13), (8, 2, 1e8), (8, 4, 1e8)])
def test_all_to_alls_passes_and_exposed_comm_in_closed_form(W, u, bw):
    T, L, r = 2, 6, W // u
    prof, graph = quiet_profile(), fully_connected(W, bw, LAT)
    kw = scenario_kw(W, T, "small")  # 4 heads, 6 layers
    strat = usp(u)
    prep = prepare(**kw, strategy=strat, profile=prof, graph=graph)
    res = simulate(**kw, strategy=strat, profile=prof, graph=graph, record=True)
    tpr, row, cm = prep.routing.tokens_per_rank, prep.spec.row_nbytes, prep.spec.cost
    base = LAT + prof.collective_base_s["all_to_all"]
    a2a_s = base + tpr * row / u / bw  # 1/u of a q-sized tensor to each Ulysses peer
    pass_s = base + 2 * tpr * row / bw  # one K/V block (u S tokens x H/u heads = S x D) to the ring's next rank
    blk_s = cm.action_time_s("usp_block")
    assert cm.action_time_s("usp_blocks") == pytest.approx((r - 1) * blk_s, rel=1e-12)
    coll = res.events[res.events.kind == "collective"]
    heads, ring = coll[coll.name == "head_a2a"], coll[coll.name == "kv_ring"]
    assert len(heads) == W * 4 * L * T and len(ring) == W * L * T
    assert np.allclose((heads.end_us - heads.start_us) * 1e-6, a2a_s, rtol=1e-9)
    assert np.allclose((ring.end_us - ring.start_us) * 1e-6, (r - 1) * pass_s, rtol=1e-9)
    assert set(heads.rows) == {tpr * (u - 1) // u} and set(ring.rows) == {2 * tpr * (r - 1)}
    other = coll[(coll["rank"] == 0) & ~coll.name.isin(["head_a2a", "kv_ring"])]
    other_s = float((other.end_us - other.start_us).sum()) * 1e-6
    exposed_layer_s = 4 * a2a_s + (r - 1) * max(0.0, pass_s - blk_s)
    assert res.totals["exposed_comm_s"] == pytest.approx(T * L * exposed_layer_s + other_s, rel=1e-9)
    layer_s = (sum(cm.action_time_s(k) for k in ("sp_qkv", "usp_block", "uly_proj", "gate", "local_moe",
                                                 "shared_expert", "local_combine"))
               + 4 * a2a_s + (r - 1) * max(pass_s, blk_s))
    step_s = cm.action_time_s("embed") + cm.action_time_s("final") + L * layer_s + other_s / T
    assert res.totals["total_latency_s"] == pytest.approx(T * step_s, rel=1e-9)
    # bytes: per rank per layer 4 (u-1)/u x tpr x row (Ulysses) + 2 (r-1) x tpr x row (ring)
    images = cm.workload.images
    other_b = ((W - 1) * tpr + (W - 1) * images + W * (W - 1) * tpr) * row
    per_rank_layer = 4 * (u - 1) / u * tpr * row + 2 * (r - 1) * tpr * row
    assert res.links["nbytes"].sum() == pytest.approx(T * (L * W * per_rank_layer + other_b))


def test_traffic_stays_inside_the_groups():
    """8 ranks, u = 2, on a fully connected graph, link by link: head all-to-alls only between 2i and 2i+1
    (1/u of q, k, v and the output each), ring passes only from m to m+2 (mod 8), besides rank 0's scatter and
    broadcast and the final ring all-gather (m to m+1)."""
    W, u, T, L = 8, 2, 1, 6
    r = W // u
    graph = fully_connected(W, 1e8, LAT)
    kw = scenario_kw(W, T, "small")
    prep = prepare(**kw, strategy=usp(u), profile=quiet_profile(), graph=graph)
    res = simulate(**kw, strategy=usp(u), profile=quiet_profile(), graph=graph)
    tpr, row, images = prep.routing.tokens_per_rank, prep.spec.row_nbytes, prep.spec.cost.workload.images
    want = np.zeros((W, W))
    want[0, 1:] += (tpr + images) * row  # scatter, broadcast
    for m in range(W):
        want[m, (m + 1) % W] += (W - 1) * tpr * row  # the final all-gather's ring
        want[m, m ^ 1] += L * 4 * tpr * row / u  # Ulysses partner (groups {2i, 2i+1})
        want[m, (m + u) % W] += L * (r - 1) * 2 * tpr * row  # ring: to the member u on
    got = np.zeros((W, W))
    for (src, dst), b in res.links.set_index(["src", "dst"])["nbytes"].items():
        got[int(src.split("gpu")[1]), int(dst.split("gpu")[1])] += b
    assert np.allclose(got, T * want, rtol=1e-12)


@pytest.mark.parametrize("W", [2, 4])
@pytest.mark.parametrize("profile", ["quiet", "h100-sxm"])
def test_the_two_reductions_time_identically(W, profile):
    """ulysses_degree = world is Ulysses, ulysses_degree = 1 ring attention: identical simulated timings
    (with the host's launch costs too: a one-rank subgroup launches nothing)."""
    prof = quiet_profile() if profile == "quiet" else get_profile("h100-sxm")
    graph = fully_connected(W, 1e8, LAT)
    kw = scenario_kw(W, 3, "small")
    run = {name: simulate(**kw, strategy=s, profile=prof, graph=graph)
           for name, s in (("ulysses", "ulysses"), ("ring", "ring"), ("uW", usp(W)), ("u1", usp(1)))}
    for a, b in (("uW", "ulysses"), ("u1", "ring")):
        for key in ("total_latency_s", "exposed_comm_s", "collectives"):
            assert run[a].totals[key] == run[b].totals[key], (a, key)
        assert run[a].links["nbytes"].sum() == run[b].links["nbytes"].sum()
    model = get_model("small")
    for u, ref in ((W, "ulysses"), (1, "ring")):
        lay, ref_lay = layout_for(usp(u), W, model.num_experts), layout_for(make_strategy(ref), W, model.num_experts)
        plan, ref_plan = build_plan(usp(u), model.depth, 2), build_plan(make_strategy(ref), model.depth, 2)
        assert runtime_nbytes(plan, lay) == runtime_nbytes(ref_plan, ref_lay)


def test_default_model_figures():
    """XL/2 on 8 H100s (dgx-h100): USP u=2 moves fewer bytes than ring and more than Ulysses."""
    kw = dict(model="XL/2", topology="dgx-h100", world_size=8, batch=1, steps=4)
    r = {s: simulate(**kw, strategy=s) for s in ("ulysses", "ring", "usp")}
    b = {s: r[s].links["nbytes"].sum() for s in r}
    assert b["ulysses"] < b["usp"] < b["ring"]
    assert r["usp"].totals["max_lag"] == 0 and r["usp"].totals["peak_buffer_bytes"] == 0


def test_run_facts_name_both_exchanges_and_their_bytes():
    from dicesim.topology import get_topology
    from dicesim.trust.facts import USP_COLLECTIVES, run_facts

    sc = make_scenario(model="XL/2", topology="dgx-h100", world_size=8, batch=1, strategy="usp")
    facts = run_facts(sc, get_topology("dgx-h100"))
    N, row = 2 * 8 * 256 // 8, 1152 * 2
    assert facts.collective == USP_COLLECTIVES and facts.rows_per_rank == N
    assert facts.a2a_nbytes_per_rank == 4 * N * row * 1 / 2 + 2 * N * row * 3
    assert "Ulysses group" in " ".join(facts.sentences())


def test_a_scenario_file_reads_the_fields(tmp_path):
    from dicesim.scenario import load_scenario

    f = tmp_path / "u.toml"
    f.write_text('[model]\nname = "XL/2"\n[topology]\nname = "dgx-h100"\n[strategy]\npreset = "usp"\n'
                 'ulysses_degree = 4\n')
    sc = load_scenario(f)
    assert sc.strategy.usp and sc.strategy.ulysses_degree == 4


def test_a_shared_plan_cache_compiles_each_world_size_s_subgroups():
    """One plan serves every world size (it does not know W); a study's shared PlanCache must not reuse the
    program compiled where the ring had one rank (u = W = 2: no kv_ring) at W = 4, where it has two."""
    from dicesim.plan import PlanCache

    plans = PlanCache()
    prof = quiet_profile()  # no host model: the compiled program is priced from the shared skeleton
    got = {}
    for W in (4, 2, 4):
        kw = scenario_kw(W, 3, "small")
        shared = simulate(**kw, strategy="usp", profile=prof, graph=fully_connected(W, 1e8, LAT), plans=plans)
        fresh = simulate(**kw, strategy="usp", profile=prof, graph=fully_connected(W, 1e8, LAT))
        assert shared.totals["total_latency_s"] == fresh.totals["total_latency_s"], W
        assert shared.totals["collectives"] == fresh.totals["collectives"], W
        got[W] = fresh.totals["collectives"]
    assert got[4] > got[2]


@pytest.mark.parametrize("profile", ["h100-sxm", "h100-calibrated"])
def test_one_gpu_issues_no_empty_collective_in_any_variant(profile):
    # on one GPU nothing is sent: the executor's head all-to-all returns at a one-rank group (kvcomm._a2a) and
    # ring attention makes no pass (ring_flash_attn.py: no send_recv when step + 1 == world), as USP's one-rank
    # subgroups; the simulator must then issue no head_a2a / kv_ring and launch no empty ring_blocks op
    runs = {n: simulate(model="XL/2", topology="dgx-h100", world_size=1, batch=1, steps=2, strategy=n,
                        profile=profile, record=True) for n in ("ring", "ulysses")}
    for name, run in runs.items():
        names = set(run.events["name"])
        assert not names & {"head_a2a", "wait_head_a2a", "kv_ring", "wait_kv_ring", "ring_blocks"}, name
