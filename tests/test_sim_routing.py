"""Placement and routed-row models: groups, exact totals, skip halving, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicesim.errors import ConfigError
from dicesim.scenario import RoutingConfig
from dicesim.strategy import make_strategy
from dicesim.placement import make_placement
from dicesim.plan.staleness import kept_share
from dicesim.sim.costs.routing import _ROWS_PER_SLICE, _largest_remainder, _one_copy, build_routing, expert_probs


def test_placement_groups():
    p = make_placement(8, 16)
    assert p.groups() == (tuple(range(8)),) and p.experts_per_rank == 2
    assert [p.owner(e) for e in (0, 7, 8, 15)] == [0, 7, 0, 7]
    c = make_placement(64, 8, group_layout="contiguous")
    s = make_placement(64, 8, group_layout="strided")
    assert c.num_groups == s.num_groups == 8 and c.ep_size == 8
    assert c.groups()[1] == tuple(range(8, 16))
    assert s.groups()[1] == tuple(range(1, 64, 8))
    for p in (c, s):  # every rank in exactly one group
        assert sorted(r for g in p.groups() for r in g) == list(range(64))
    with pytest.raises(ConfigError, match="world_size"):
        make_placement(6, 8)
    with pytest.raises(ConfigError, match="group_layout"):
        make_placement(8, 8, group_layout="diagonal")


def _routing(W=4, E=8, L=3, T=5, tokens=100, sampling="expected", seed=0, cfg=RoutingConfig()):
    return build_routing(cfg, make_placement(W, E), num_layers=L, num_steps=T,
                         tokens_per_rank=tokens, top_k=2, seed=seed, sampling=sampling)


@pytest.mark.parametrize("sampling", ["expected", "multinomial"])
def test_totals_and_skip_halving(sampling):
    rt = _routing(tokens=101, sampling=sampling, cfg=RoutingConfig(kind="zipf", alpha=1.2))
    full, skip = rt.send_rows_LTWS(False), rt.send_rows_LTWS(True)
    assert (full.sum(axis=-1) == 202).all()  # tokens x top-2 copies
    assert (skip.sum(axis=-1) == 101).all()  # one copy per token, exactly half
    assert (np.abs(skip - full / 2) <= 1).all()
    # what the ranks send is what the ranks receive
    for s in (False, True):
        assert rt.recv_rows_LTW(s).sum() == rt.send_rows_LTWS(s).sum()


def test_uniform_expected_is_balanced():
    rt = _routing(W=4, E=8, tokens=128)
    assert (rt.send_rows(1, 2, False) == 64).all()  # 256 copies over 4 members
    assert (rt.recv_rows_LTW(False) == 256).all()
    assert (rt.group_matrix((0, 1, 2, 3), 0, 0, True) == 32).all()


def test_groups_route_inside_their_group():
    rt = build_routing(RoutingConfig(), make_placement(8, 4, group_layout="strided"), num_layers=1,
                       num_steps=1, tokens_per_rank=10, top_k=2, seed=0)
    assert rt.send_rows(0, 0, False).shape == (8, 4)
    assert (rt.recv_rows_LTW(False) == 20).all()


def test_determinism_and_seed_dependence():
    a = _routing(sampling="multinomial", seed=3)
    b = _routing(sampling="multinomial", seed=3)
    c = _routing(sampling="multinomial", seed=4)
    assert np.array_equal(a.counts_LTWE, b.counts_LTWE)
    assert not np.array_equal(a.counts_LTWE, c.counts_LTWE)
    assert not a.counts_LTWE.flags.writeable


def test_zipf_probabilities():
    p = expert_probs(RoutingConfig(kind="zipf", alpha=1.0), 4, 8, seed=0)
    assert np.allclose(p.sum(axis=1), 1.0)
    expect = 1 / np.arange(1, 9)
    expect /= expect.sum()
    for row in p:  # same popularity curve, a different expert ranking per layer
        assert np.allclose(np.sort(row)[::-1], expect)
    assert len({tuple(np.argsort(r)) for r in p}) > 1
    assert np.array_equal(p, expert_probs(RoutingConfig(kind="zipf", alpha=1.0), 4, 8, seed=0))


def test_histogram(tmp_path):
    h = np.array([[1, 3], [2, 2]], dtype=float)
    cfg = RoutingConfig(kind="histogram", histogram=str(tmp_path / "h.npy"))
    np.save(tmp_path / "h.npy", h)
    assert np.allclose(expert_probs(cfg, 2, 2, 0), [[0.25, 0.75], [0.5, 0.5]])
    np.savetxt(tmp_path / "h.csv", h, delimiter=",")
    cfg_csv = RoutingConfig(kind="histogram", histogram=str(tmp_path / "h.csv"))
    assert np.allclose(expert_probs(cfg_csv, 2, 2, 0), [[0.25, 0.75], [0.5, 0.5]])
    assert np.allclose(expert_probs(cfg, 3, 2, 0, histogram=np.array([1.0, 1.0])), 0.5)
    with pytest.raises(ConfigError, match="shape"):
        expert_probs(cfg, 3, 2, 0)
    with pytest.raises(ConfigError, match="not found"):
        expert_probs(RoutingConfig(kind="histogram", histogram="nope.npy"), 2, 2, 0)
    with pytest.raises(ConfigError, match="outside the plausible range"):
        expert_probs(cfg, 2, 2, 0, histogram=np.array([[1.0, -1.0], [1, 1]]))


def test_kept_share():
    def kept(policy):
        return make_strategy("dice", cond_policy=policy).kept_copy(2)

    assert kept_share(kept("low"), 0.6) == 0.6  # low skips the lower score: keeps top-1
    assert kept_share(kept("high"), 0.6) == pytest.approx(0.4)
    assert kept_share(kept("random"), 0.6) == 0.5


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 50), min_size=1, max_size=12), st.integers(0, 40))
def test_largest_remainder_exact_total(values, extra):
    x = np.array(values)
    total = int(np.floor(x).sum()) + min(extra, len(values))
    if total < np.floor(x).sum() or total > np.floor(x).sum() + len(values):
        return
    out = _largest_remainder(x, total)
    assert out.sum() == total
    assert (np.abs(out - x) < 1 + 1e-9).all()


def test_one_copy_in_slices_is_the_general_rounding():
    # a drawn table larger than one slice (the last slice partial): the closed form for two copies,
    # applied a slice at a time, must give what the general largest-remainder rounding gives
    rng = np.random.default_rng(5)
    counts = rng.multinomial(2 * 101, np.full(8, 1 / 8), size=(3, 2, _ROWS_PER_SLICE // 3 + 7))
    out = _one_copy(counts, 2, 101)
    assert out.shape == counts.shape and out.dtype == np.int64
    assert np.array_equal(out, _largest_remainder(counts / 2, 101))


def test_rows_go_to_the_member_the_shared_placement_names():
    # zipf load is uneven across experts, so which member holds which expert shows in the rows
    cfg = RoutingConfig(kind="zipf", alpha=1.5)
    for layout in ("modulo", "block"):
        p = make_placement(2, 8, expert_layout=layout)
        rt = build_routing(cfg, p, num_layers=1, num_steps=1, tokens_per_rank=1000, top_k=2, seed=3)
        per_expert = rt.counts_LTWE[0, 0, 0]
        expected = [sum(per_expert[e] for e in p.experts_of(m)) for m in range(2)]
        assert rt.send_rows(0, 0, False)[0].tolist() == expected


def test_histogram_from_an_executor_trace_drives_the_load(tmp_path):
    from pathlib import Path

    from dicesim.sim.costs.routing import load_histogram
    from dicesim.trace import read_trace

    trace = Path(__file__).parents[1] / "traces" / "reference" / "validate-tiny-dice-w2-gloo.trace.json"
    hist = load_histogram(str(trace))
    _, meta = read_trace(trace)
    raw = np.asarray(meta.extra["router_hist"])  # rank, step, layer, expert
    assert hist.shape == (4, 4) and (hist == raw.sum(axis=(0, 1))).all()
    probs = expert_probs(RoutingConfig(kind="histogram", histogram=str(trace)), 4, 4, seed=0)
    assert np.allclose(probs.sum(axis=1), 1) and np.allclose(probs, hist / hist.sum(axis=1, keepdims=True))
    with pytest.raises(ConfigError, match="no executor router histogram"):
        from dicesim.trace import EventRecorder, TraceMeta, write_trace

        rec = EventRecorder("sim")
        rec.add(0, "compute", "compute", "attention", 0.0, 1.0)
        write_trace(rec.to_frame(), TraceMeta(source="sim"), tmp_path, "sim")
        load_histogram(str(tmp_path / "sim.events.parquet"))
