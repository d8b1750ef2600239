"""Folding equivalent expert-parallel groups is exact, and never happens where groups share links."""

from __future__ import annotations

import dataclasses
from functools import partial

import pandas as pd
import pytest
from sim_equal import assert_same_run, sorted_events

from dicesim.sim.api import prepare, simulate
from dicesim.sim.engine.engine import run_engine
from dicesim.sim.fold import plan_fold
from dicesim.sim.costs.profile import get_profile
from dicesim.topology import add_device, add_gpu, add_link, multi_node, new_topology, nvswitch_server
from dicesim.topology import hardware as hw
from dicesim.topology.graph import LinkSpec

TINY2 = dict(model="tiny", num_experts=2, batch=1, image_size=64, strategy="dice", steps=5, profile="h100-sxm")


def _servers(n, gpus=2, nics=None, nic_bw_Bps=hw.IB_NDR.bw_Bps):
    """``n`` servers of ``gpus`` H100 on NVSwitch behind one IB switch; ``nics`` per server (default one per GPU)."""
    node = partial(nvswitch_server, hw.NVLINK4_H100, gpus=gpus, gpu="h100-sxm", name=f"{gpus}-h100")
    return multi_node(n, node, nic_bw_Bps, hw.IB_NDR.latency_s, nic_link=hw.IB_NDR.link,
                      nic_source=hw.IB_NDR.source, nics_per_server=nics, name=f"{n}x{gpus}")


@pytest.mark.parametrize("placement", ["contiguous", "strided"])
@pytest.mark.parametrize("servers", [2, 4])
def test_fold_equals_full_run_bit_for_bit(placement, servers):
    kw = dict(TINY2, world_size=2 * servers, graph=_servers(servers), placement=placement, record=True)
    full = simulate(**kw, fold=False)
    folded = simulate(**kw)
    assert folded.meta["fold"] == {"applied": True, "groups": servers, "simulated_groups": 1, "reason": None,
                                    "shared_links": False}
    assert_same_run(full, folded, rtol=0.0, atol=0.0)
    pd.testing.assert_frame_equal(sorted_events(full.events), sorted_events(folded.events))
    assert full.summary()["collectives"] == folded.summary()["collectives"]


def test_fold_is_exact_with_nccl_terms_and_reference_ops():
    """Across NICs the NCCL model adds its network share and latencies; with periodic sync the plan
    discards, keeps rows for a re-run and drains. Folded groups still match the full run bit for bit."""
    from dicesim.strategy import make_strategy

    kw = dict(TINY2, num_experts=8, world_size=16, topology="2x-dgx-h100-ib", placement="strided", steps=8,
              strategy=make_strategy("dice", sync_every=3))
    full = simulate(**kw, fold=False, reuse=False)
    folded = simulate(**kw, reuse=False)
    assert folded.meta["fold"]["applied"] and folded.meta["fold"]["simulated_groups"] == 1
    assert_same_run(full, folded, rtol=0.0, atol=0.0)


def test_fold_and_reuse_together_equal_the_plain_engine():
    kw = dict(TINY2, world_size=8, graph=_servers(4), steps=8,
              profile=get_profile("h100-sxm").with_updates(interference=0.3, host_op_s=4e-6))
    plain = simulate(**kw, fold=False, reuse=False)
    fast = simulate(**kw)
    assert fast.meta["fold"]["applied"] and fast.meta["reuse"]["applied"]
    assert_same_run(plain, fast)


def test_strided_groups_sharing_a_nic_are_simulated_together():
    """One NIC per server: two strided groups cross each NIC. The groups on GPU 0 and those on GPU 1
    form two kinds; one of each is simulated, together (they share the NICs), and the run equals the
    full one. Simulating one group alone would give it the NIC to itself and predict a faster step."""
    kw = dict(TINY2, world_size=8, graph=_servers(4, nics=1, nic_bw_Bps=1e8), placement="strided", steps=4)
    res = simulate(**kw)
    assert res.meta["fold"] == {"applied": True, "groups": 4, "simulated_groups": 2, "reason": None,
                                "shared_links": False}
    assert res.meta["reuse"]["reason"] == "its links are shared with another group"
    assert_same_run(simulate(**kw, fold=False), res, rtol=0.0, atol=0.0)
    prep = prepare(**{k: v for k, v in kw.items()})
    alone = run_engine(dataclasses.replace(prep.spec, groups=(0,)))
    assert alone.total_s < 0.95 * res.summary()["total_latency_s"]
    # contiguous groups stay inside a server: no shared link, so they fold
    assert simulate(**{**kw, "placement": "contiguous"}).meta["fold"]["applied"]


def _two_pairs_sharing_a_trunk():
    """8 GPUs, strided groups {0,4} {1,5} {2,6} {3,7}: the first two share the trunk sA-sB,
    the last two have direct links of their own (equivalent, isolated)."""
    G = new_topology(name="trunk", p2p=True, gpu="h100-sxm", gpus_per_node=8, sources={"generic": "test graph"})
    g = [add_gpu(G, f"n0.gpu{i}", rank=i, server=0) for i in range(8)]
    a, b = add_device(G, "n0.sA", "net_switch"), add_device(G, "n0.sB", "net_switch")
    link = LinkSpec(bw_Bps=1e8, latency_s=1e-6, link="generic", source="generic")
    slow = LinkSpec(bw_Bps=1e8, latency_s=5e-6, link="generic", source="generic")
    for i in (0, 1, 2, 3):
        add_link(G, g[i], a, link if i < 2 else slow)
    for i in (4, 5, 6, 7):
        add_link(G, b, g[i], link if i < 6 else slow)
    add_link(G, a, b, link)
    add_link(G, g[2], g[6], link)
    add_link(G, g[3], g[7], link)
    return G


def test_groups_sharing_a_trunk_in_lock_step_fold_and_isolated_ones_fold():
    """Groups {0,4} and {1,5} are alike and cross the trunk sA-sB in the same role: one of them is
    simulated with its trunk flows counted twice, bit for bit the full run (trace included)."""
    kw = dict(TINY2, world_size=8, graph=_two_pairs_sharing_a_trunk(), placement="strided", steps=4)
    prep = prepare(**kw)
    fold = plan_fold(prep.spec)
    assert fold.rep == (0, 0, 2, 2) and fold.simulated == (0, 2) and set(fold.shares) == {0, 2}
    full, folded = simulate(**kw, fold=False, reuse=False, record=True), simulate(**kw, reuse=False, record=True)
    assert folded.meta["fold"]["simulated_groups"] == 2 and folded.meta["fold"]["shared_links"]
    assert_same_run(full, folded, rtol=0.0, atol=0.0)
    pd.testing.assert_frame_equal(sorted_events(full.events), sorted_events(folded.events))
    assert_same_run(full, simulate(**kw))


def _rail(servers: int, per_leaf: int, gpus: int = 2, uplinks: int = 1):
    """``servers`` servers of ``gpus`` H100 on a rail fabric with ``per_leaf`` servers per leaf (so
    several units share the spine at test size) and ``uplinks`` NDR uplinks per leaf."""
    from dicesim.topology import rail_fabric

    node = partial(nvswitch_server, hw.NVLINK4_H100, gpus=gpus, gpu="h100-sxm", name=f"{gpus}-h100")
    return rail_fabric(servers, node, hw.IB_NDR, attach=hw.PCIE5_NIC, uplink=hw.IB_NDR_UPLINK,
                       servers_per_leaf=per_leaf, uplinks_per_leaf=uplinks, name=f"{servers}x{gpus}-rail")


@pytest.mark.parametrize("strategy", ["sync", "displaced", "dice"])
@pytest.mark.parametrize("servers, per_leaf, experts", [(4, 2, 2), (8, 2, 4), (8, 4, 2), (6, 4, 2)])
def test_strided_groups_sharing_leaf_uplinks_equal_the_full_run(strategy, servers, per_leaf, experts):
    """Strided groups over several rail units share their leaves' uplinks (one uplink per leaf, so
    the uplinks are the bottleneck). Alike groups are simulated once with their uplink flows counted
    once per group; unequal units (6 servers, 4 per leaf) give several kinds of group that share
    uplinks with each other and are simulated together. Every case equals the full run."""
    G = _rail(servers, per_leaf)
    kw = dict(TINY2, num_experts=experts, world_size=2 * servers, graph=G, topology="2x-dgx-h100-ib",
              placement="strided", steps=6,
              strategy=strategy, profile=get_profile("h100-sxm").with_updates(interference=0.2, host_op_s=2e-6))
    full = simulate(**kw, fold=False, reuse=False)
    fast = simulate(**kw)
    assert fast.meta["fold"]["applied"] and fast.meta["fold"]["simulated_groups"] < fast.meta["fold"]["groups"]
    assert_same_run(full, fast)
    assert (fast.links["nbytes"] > 0).sum() == (full.links["nbytes"] > 0).sum()


def test_lock_step_needs_the_same_company_on_every_link():
    """Uplinks of unit 0 carry the groups of both kinds, the unit-1 uplink only one kind: a kind's
    role meets different company on different links, so nothing that shares folds; the run still
    equals the full one."""
    G = _rail(3, 2)
    kw = dict(TINY2, num_experts=2, world_size=6, graph=G, placement="strided", steps=4)
    full, fast = simulate(**kw, fold=False, reuse=False), simulate(**kw)
    assert_same_run(full, fast)


def test_multinomial_strided_groups_share_links_and_are_all_simulated():
    kw = dict(TINY2, num_experts=2, world_size=8, graph=_rail(4, 2), placement="strided", steps=3,
              sampling="multinomial")
    fast = simulate(**kw)
    assert not fast.meta["fold"]["applied"]
    assert_same_run(simulate(**kw, fold=False), fast, rtol=0.0, atol=0.0)


def test_groups_with_different_loads_do_not_fold():
    kw = dict(TINY2, world_size=8, graph=_servers(4), sampling="multinomial", steps=3)
    res = simulate(**kw)
    assert not res.meta["fold"]["applied"] and "same load" in res.meta["fold"]["reason"]
    assert_same_run(simulate(**kw, fold=False), res, rtol=0.0, atol=0.0)


def test_fold_reports_when_off_or_pointless():
    one = simulate(**TINY2, world_size=2, graph=_servers(1))
    assert one.meta["fold"] == {"applied": False, "groups": 1, "simulated_groups": 1,
                                "reason": "one expert-parallel group", "shared_links": False}
    off = simulate(**TINY2, world_size=4, graph=_servers(2), fold=False)
    assert off.meta["fold"]["reason"] == "turned off" and off.meta["fold"]["simulated_groups"] == 2
