"""Micro-benchmark of the flow-level network: microseconds per transfer.

Run: ``python benchmarks/bench_network.py [--n 4000]``. Cases: sequential uniform all-to-alls
on an 8-GPU single switch and on a two-level PCIe tree (compiled group, raw flow list, memo
off), an all-to-all plus a small count exchange in lock-step, two staggered groups (disjoint:
independent plans; sharing uplinks: periodic re-plans, memo on/off), 64 GPUs as EP over 64 or 8
lock-step groups of 8 on 8 NVSwitch servers behind one network switch, and all-to-alls whose
pair volumes differ every round (no memo hits; every flow ends at its own instant, so each one
costs a max-min recomputation; these cases run n/10 or n/40 rounds). Times are process CPU time (robust on a
shared machine) and include simpy and the driver processes.
"""

from __future__ import annotations

import argparse
import random
import time

import networkx as nx
import simpy

from dicesim.sim.network.network import FlowNetwork

MiB = 1 << 20


def _link(G, u, v, bw_Bps, latency_s, cls):
    G.add_edge(u, v, bw_Bps=bw_Bps, latency_s=latency_s, link=cls)
    G.add_edge(v, u, bw_Bps=bw_Bps, latency_s=latency_s, link=cls)


def single_switch(n=8, bw_Bps=370e9):
    G = nx.DiGraph()
    for i in range(n):
        _link(G, f"g{i}", "sw", bw_Bps, 1e-6, "nvlink")
    return G, lambda i, j: ((f"g{i}", "sw"), ("sw", f"g{j}"))


def pcie_tree(n=8, per_switch=4, bw_Bps=25e9, up_Bps=25e9):
    G = nx.DiGraph()
    sw = lambda i: f"sw{i // per_switch}"
    for i in range(n):
        _link(G, f"g{i}", sw(i), bw_Bps, 1e-6, "pcie")
    for s in range(n // per_switch):
        _link(G, f"sw{s}", "cpu", up_Bps, 2e-6, "pcie_up")

    def route(i, j):
        if sw(i) == sw(j):
            return ((f"g{i}", sw(i)), (sw(i), f"g{j}"))
        return ((f"g{i}", sw(i)), (sw(i), "cpu"), ("cpu", sw(j)), (sw(j), f"g{j}"))

    return G, route


def multi_node(nodes=8, per_node=8):
    G = nx.DiGraph()
    for n in range(nodes):
        for k in range(per_node):
            _link(G, f"n{n}g{k}", f"n{n}nvs", 370e9, 1e-6, "nvlink")
        _link(G, f"n{n}nvs", f"n{n}nic", 50e9, 2e-6, "nic")
        _link(G, f"n{n}nic", "ib", 50e9, 5e-6, "ib")
    gpu = lambda r: (r // per_node, r % per_node)

    def route(i, j):
        (a, x), (b, y) = gpu(i), gpu(j)
        if a == b:
            return ((f"n{a}g{x}", f"n{a}nvs"), (f"n{a}nvs", f"n{a}g{y}"))
        return ((f"n{a}g{x}", f"n{a}nvs"), (f"n{a}nvs", f"n{a}nic"), (f"n{a}nic", "ib"),
                ("ib", f"n{b}nic"), (f"n{b}nic", f"n{b}nvs"), (f"n{b}nvs", f"n{b}g{y}"))

    return G, route


def a2a(route, ranks, nbytes):
    return [(route(i, j), nbytes) for i in ranks for j in ranks if i != j]


def run(G, streams, rounds, *, compiled=True, memo_size=4096):
    """``streams``: [(flows, offset_s)]. Each round, stream k issues its transfer ``offset_s``
    after the round starts; the round ends when all are done (like one MoE layer). ``flows`` may
    also be a list with one flow list per round (distinct volumes every round)."""
    env = simpy.Environment()
    net = FlowNetwork(env, G, memo_size=memo_size)

    def prep(f):
        return net.compile(f, 5e-6) if compiled else f

    groups = [(PerRound(prep(x) for x in f) if isinstance(f, PerRound) else prep(f), off) for f, off in streams]

    def one(flows, off):
        if off:
            yield env.timeout(off)
        yield net.transfer(flows, extra_latency_s=5e-6)

    def driver():
        for k in range(rounds):
            yield env.all_of([env.process(one(f[k % len(f)] if isinstance(f, PerRound) else f, off))
                              for f, off in groups])
            yield env.timeout(20e-6)  # compute between layers

    env.process(driver())
    t = time.process_time()
    env.run()
    wall = time.process_time() - t
    return wall / (rounds * len(streams)) * 1e6, env.now / rounds * 1e6, net


class PerRound(list):
    """One flow list (or compiled group) per round."""


def noisy(flows, rounds, seed=0):
    """One flow list per round: every pair's bytes drawn +-3% around the nominal (all distinct)."""
    rng = random.Random(seed)
    return PerRound([(r, float(round(b * rng.uniform(0.97, 1.03)))) for r, b in flows] for _ in range(rounds))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000, help="rounds (transfers per stream)")
    n = ap.parse_args().n
    sw, sw_route = single_switch()
    tree, tree_route = pcie_tree()
    mn, mn_route = multi_node()
    r8 = range(8)
    shared = [(a2a(tree_route, (0, 1, 4, 5), MiB), 0.0), (a2a(tree_route, (2, 3, 6, 7), MiB), 13e-6)]
    cases = [
        ("switch8 a2a, compiled", sw, [(a2a(sw_route, r8, MiB), 0.0)], {}),
        ("switch8 a2a, raw flow list", sw, [(a2a(sw_route, r8, MiB), 0.0)], {"compiled": False}),
        ("pcie-tree8 a2a, compiled", tree, [(a2a(tree_route, r8, MiB), 0.0)], {}),
        ("pcie-tree8 a2a, memo off", tree, [(a2a(tree_route, r8, MiB), 0.0)], {"memo_size": 0}),
        ("pcie-tree8 a2a + count xchg, lock-step", tree,
         [(a2a(tree_route, r8, MiB), 0.0), (a2a(tree_route, r8, 64), 0.0)], {}),
        ("pcie-tree8 2 disjoint groups staggered 13us", tree,
         [(a2a(tree_route, range(4), MiB), 0.0), (a2a(tree_route, range(4, 8), MiB), 13e-6)], {}),
        ("pcie-tree8 2 groups sharing uplinks, staggered", tree, shared, {}),
        ("pcie-tree8 2 groups sharing uplinks, memo off", tree, shared, {"memo_size": 0}),
        ("64 GPUs: 8 groups of 8 in lock-step", mn,
         [(a2a(mn_route, range(8 * k, 8 * k + 8), MiB), 0.0) for k in range(8)], {}),
        ("64 GPUs: 8 groups of 8 spread over nodes", mn,
         [(a2a(mn_route, range(k, 64, 8), MiB // 8), 0.0) for k in range(8)], {}),
        ("64 GPUs: EP64 a2a", mn, [(a2a(mn_route, range(64), MiB // 8), 0.0)], {}),
        ("switch8 a2a, distinct +-3% pair volumes [n/10]", sw,
         [(noisy(a2a(sw_route, r8, MiB), max(n // 10, 1)), 0.0)], {}),
        ("pcie-tree8 a2a, distinct +-3% volumes [n/10]", tree,
         [(noisy(a2a(tree_route, r8, MiB), max(n // 10, 1)), 0.0)], {}),
        ("64 GPUs: 4 groups of 16 over 2 nodes, +-3% [n/40]", mn,
         [(noisy(a2a(mn_route, range(16 * k, 16 * k + 16), MiB // 2), max(n // 40, 1), k), 0.0)
          for k in range(4)], {}),
    ]
    print(f"{'case':50s} {'us/transfer':>12s} {'sim us/round':>13s} {'memo hit/miss':>14s}")
    for name, G, streams, kw in cases:
        rounds = max(n // int(name.split("[n/")[1][:-1]), 1) if "[n/" in name else n
        us, sim_us, net = run(G, streams, rounds, **kw)
        print(f"{name:50s} {us:10.1f}us {sim_us:11.2f}us {net.memo_hits:>8d}/{net.memo_misses:<5d}")
    # cost of one full (uncached) plan of the 4032-flow EP64 all-to-all
    t = time.process_time()
    run(mn, [(a2a(mn_route, range(64), MiB // 8), 0.0)], 1, memo_size=0)
    print(f"{'64 GPUs: EP64 a2a, one uncached compile+plan':50s} {(time.process_time() - t) * 1e6:10.1f}us")


if __name__ == "__main__":
    main()
