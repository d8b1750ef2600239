"""The simulator's host-staged one-GPU runs: topology, closed-form copy times, same work, interference."""

from __future__ import annotations

import numpy as np
import pytest

from dicesim.models import get_model
from dicesim.placement import make_placement
from dicesim.sim.api import simulate
from dicesim.sim.hoststaged import merged_routing, simulate_host_staged, staged_rows_LT
from dicesim.sim.costs.profile import get_profile
from dicesim.sim.costs.routing import TokenRouting
from dicesim.topology import get_topology, validate_topology
from dicesim.topology.host_staged import HOST_MEM_DDR5, PCIE5_HOST_H100, loopback_route

SMALL = dict(model="tiny", image_size=32, steps=4, topology="1x-h100-host-staged")


def _quiet(**kw):
    """h100-calibrated without host costs (its eager host model included) or interference (closed forms hold exactly)."""
    quiet = dict(host_op_s=0.0, host_collective_s=0.0, interference=0.0, comm_interference=0.0, host=None)
    return get_profile("h100-calibrated").with_updates(**{**quiet, **kw})


@pytest.mark.parametrize("name, gpu", [("1x-h100-host-staged", "h100-sxm"), ("1x-h200-host-staged", "h200")])
def test_presets_are_one_gpu_without_p2p_and_loop_through_host_memory(name, gpu):
    G = get_topology(name)
    validate_topology(G)
    assert G.graph["gpu"] == gpu and G.graph["p2p"] is False
    loop = loopback_route(G)
    nodes = [loop[0][0]] + [v for _, v in loop]
    assert nodes == ["n0.gpu0", "n0.pcie0", "n0.cpu0", "n0.mem0", "n0.cpu0", "n0.pcie0", "n0.gpu0"]
    assert len(set(loop)) == len(loop)  # each direction of each link once: device-to-host, then host-to-device
    assert min(G.edges[e]["bw_Bps"] for e in loop) == PCIE5_HOST_H100.bw_Bps < HOST_MEM_DDR5.bw_Bps


def test_staged_rows_are_the_off_owner_copies():
    rng = np.random.default_rng(0)
    for W, E in [(4, 8), (8, 4), (2, 2)]:
        placement = make_placement(W, E)
        counts = rng.integers(0, 50, size=(3, 2, W, E))
        routing = TokenRouting(placement=placement, tokens_per_rank=int(counts.sum(-1).max()), top_k=1,
                               counts_LTWE=counts)
        groups = placement.groups()
        brute = np.zeros((3, 2), dtype=np.int64)
        for w in range(W):
            for e in range(E):
                if groups[placement.group_of(w)][placement.owner(e)] != w:
                    brute += counts[:, :, w, e]
        assert np.array_equal(staged_rows_LT(routing, False), brute)
        merged = merged_routing(routing)
        assert merged.placement.world_size == 1 and np.array_equal(merged.counts_LTWE[:, :, 0], counts.sum(axis=2))


def test_sync_step_is_compute_plus_closed_form_copies():
    prof = _quiet()
    res = simulate_host_staged(strategy="sync", world_size=4, batch=2, profile=prof, **SMALL)
    G = get_topology("1x-h100-host-staged")
    loop = loopback_route(G)
    route_s = sum(G.edges[e]["latency_s"] for e in loop)
    bw = min(G.edges[e]["bw_Bps"] for e in loop)
    # uniform routing, 4 experts on 4 ranks: 3/4 of every rank's 2 x tokens copies cross
    tokens = 2 * 2 * get_model("tiny").tokens_per_image(32)  # images x CFG x tokens per image, per emulated rank
    rows = 4 * (2 * tokens) * 3 // 4
    per_layer = (prof.collective_base_s["count_exchange"] + route_s
                 + 2 * (prof.collective_base_s["all_to_all"] + route_s + rows * 32 * 2 / bw))
    ps = res.per_step
    assert ps["exposed_comm_s"].to_numpy() == pytest.approx(4 * per_layer, rel=1e-9)
    assert ps["latency_s"].to_numpy() == pytest.approx((ps["compute_busy_s"] + ps["exposed_comm_s"]).to_numpy())
    assert res.meta["host_staged"]["staged_rows_per_step"] == [2 * 4 * rows] * 4


def test_same_work_as_one_rank_with_the_global_batch():
    prof = _quiet()
    staged = simulate_host_staged(strategy="dice", world_size=4, batch=2, profile=prof, **SMALL)
    plain = simulate(model="tiny", image_size=32, steps=4, strategy="dice", world_size=1, batch=8,
                     topology="1x-h100-host-staged", profile=prof)
    assert staged.per_step["compute_busy_s"].to_numpy() == pytest.approx(plain.per_step["compute_busy_s"].to_numpy())
    assert (staged.per_step["comm_busy_s"] > 0).all() and (plain.per_step["comm_busy_s"] == 0).all()


def test_compute_slows_only_while_copies_run_and_counts_queue_behind_them():
    from dicesim.calibrate.overlap.slowdown import compute_slowdown

    def run(strategy, **kw):
        return simulate_host_staged(strategy=strategy, world_size=4, batch=4, profile=_quiet(**kw), record=True,
                                    model="XL/2", image_size=256, steps=4, topology="1x-h100-host-staged")

    sync0, disp0 = run("sync"), run("displaced")
    sync1, disp1 = run("sync", interference=0.2), run("displaced", interference=0.2)
    assert compute_slowdown(disp0.events, sync0.events) == pytest.approx(0.0, abs=1e-12)
    assert compute_slowdown(sync1.events, sync0.events) == pytest.approx(0.0, abs=1e-12)  # nothing overlaps
    assert 0.0 < compute_slowdown(disp1.events, sync1.events) <= 0.2 + 1e-12
    from dicesim.strategy import make_strategy

    # copies slower than a layer's compute: on one communicator each count exchange waits for them
    slow = _quiet(link_bw_eff={"default": 1.0, "pcie5": 0.02})
    count_wait_s = {}
    for cc in ("shared", "separate"):
        ev = simulate_host_staged(strategy=make_strategy("displaced", count_comm=cc), world_size=4, batch=4,
                                  profile=slow, model="XL/2", image_size=256, steps=4, record=True).events
        w = ev[(ev["name"] == "wait_counts") & (ev["step"] >= 1)]
        count_wait_s[cc] = float((w["end_us"] - w["start_us"]).sum()) / 1e6
    assert count_wait_s["shared"] > 100 * count_wait_s["separate"] > 0
