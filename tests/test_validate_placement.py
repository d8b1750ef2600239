"""Placement rules, the dispatcher's row bookkeeping (simulated all-to-all), copy roles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dicesim.errors import ConfigError
from dicesim.placement import make_placement, replicated
from dicesim.strategy import make_strategy
from validate.executor.dispatcher import recv_expert_ids, send_plan
from validate.executor.roles import random_kept_copy, role_order


def test_modulo_and_block_layouts():
    p = make_placement(4, 8)
    assert p.ep_size == 4 and p.num_groups == 1 and p.experts_per_rank == 2
    assert p.experts_of(1) == (1, 5) and p.owner(6) == 2
    b = make_placement(4, 8, expert_layout="block")
    assert b.experts_of(1) == (2, 3) and b.owner(7) == 3


def test_groups_contiguous_and_strided():
    c = make_placement(8, 4, group_layout="contiguous")
    assert c.groups() == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert (c.group_of(5), c.ep_rank(5), c.experts_of(c.ep_rank(5))) == (1, 1, (1,))
    s = make_placement(8, 4, group_layout="strided")
    assert s.groups() == ((0, 2, 4, 6), (1, 3, 5, 7))
    assert (s.group_of(5), s.ep_rank(5)) == (1, 2)


@pytest.mark.parametrize("world, experts", [(3, 8), (6, 4), (5, 2)])
def test_indivisible_pairs_are_one_line_config_errors(world, experts):
    with pytest.raises(ConfigError) as err:
        make_placement(world, experts)
    assert "\n" not in str(err.value) and "world_size" in str(err.value)


def test_unknown_layout_is_config_error():
    with pytest.raises(ConfigError, match="contiguous, strided"):
        make_placement(8, 4, group_layout="diagonal")


def test_replicated_holds_everything():
    p = replicated(3, 8)
    assert p.ep_size == 1 and p.experts_of(0) == tuple(range(8))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([(1, 4), (2, 4), (4, 4), (2, 8), (8, 4), (8, 2), (16, 8), (4, 16)]),
       st.sampled_from(["contiguous", "strided"]), st.sampled_from(["modulo", "block"]))
def test_every_expert_has_one_owner_per_group(pair, glayout, elayout):
    W, E = pair
    p = make_placement(W, E, group_layout=glayout, expert_layout=elayout)
    held = [e for r in range(p.ep_size) for e in p.experts_of(r)]
    assert sorted(held) == list(range(E))
    assert all(len(p.experts_of(r)) == E // p.ep_size for r in range(p.ep_size))
    members = sorted(r for g in p.groups() for r in g)
    assert members == list(range(W)) and all(len(g) == p.ep_size for g in p.groups())


def _all_to_all(sends: list[torch.Tensor], splits: list[list[int]]) -> list[torch.Tensor]:
    """Pure-python all_to_all_single: rank r receives chunk r of every sender, sender order."""
    chunks = [list(torch.split(x, sp)) for x, sp in zip(sends, splits)]
    return [torch.cat([chunks[s][r] for s in range(len(sends))]) for r in range(len(sends))]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(2, 4), (4, 4), (4, 8), (2, 8)]), st.integers(0, 2**31 - 1))
def test_dispatch_layout_round_trip(pair, seed):
    """Rows reach the rank owning their expert, labelled with the right expert id, and come back in order."""
    S, E = pair
    p = make_placement(S, E)
    gen = torch.Generator().manual_seed(seed)
    ids = [torch.randint(E, (int(torch.randint(0, 12, (1,), generator=gen)),), generator=gen) for _ in range(S)]
    # each row carries (source rank, local row, expert) so we can check where it lands
    rows = [torch.stack([torch.full_like(i, s), torch.arange(len(i)), i], dim=1).float() for s, i in enumerate(ids)]
    plans = [send_plan(i, p) for i in ids]
    recv_counts = _all_to_all([c.reshape(-1) for _, c in plans], [[p.experts_per_rank] * S] * S)
    recv_counts = [c.view(S, -1) for c in recv_counts]
    sent = [r[o] for r, (o, _) in zip(rows, plans)]
    got = _all_to_all(sent, [c.sum(1).tolist() for _, c in plans])
    for r in range(S):
        labels = recv_expert_ids(recv_counts[r], p.experts_of(r))
        assert torch.equal(labels.float(), got[r][:, 2]) if len(labels) else got[r].numel() == 0
        assert all(p.owner(int(e)) == r for e in got[r][:, 2])
    back = _all_to_all(got, [c.sum(1).tolist() for c in recv_counts])
    for s in range(S):
        restored = torch.empty_like(back[s])
        restored[plans[s][0]] = back[s]
        assert torch.equal(restored, rows[s])


def test_role_order_policies():
    idx = torch.tensor([[3, 1], [0, 2]])

    def kept(policy):
        return make_strategy("dice", cond_policy=policy).kept_copy(2)

    assert role_order(idx, kept("low"), None).tolist() == [[0, 1], [0, 1]]
    assert role_order(idx, kept("high"), None).tolist() == [[1, 0], [1, 0]]
    assert role_order(idx, kept("random"), torch.tensor([1, 0])).tolist() == [[1, 0], [0, 1]]


def test_random_policy_is_fixed_per_token_and_partition_free():
    keys = np.arange(1000)
    whole = random_kept_copy(7, 2, keys, 2)
    assert torch.equal(torch.cat([random_kept_copy(7, 2, keys[:300], 2), random_kept_copy(7, 2, keys[300:], 2)]), whole)
    assert 400 < int(whole.sum()) < 600  # both copies chosen, roughly evenly
    assert not torch.equal(random_kept_copy(8, 2, keys, 2), whole)
    assert not torch.equal(random_kept_copy(7, 3, keys, 2), whole)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("world_size, num_experts", [(8, 8), (16, 8), (64, 8), (12, 4), (4, 16), (6, 4)])
def test_group_of_and_ep_rank_agree_with_the_groups(layout, world_size, num_experts):
    """The closed forms (O(1) per rank; 16,384 ranks once took minutes) name each rank's group and place."""
    from dicesim.placement import Placement

    p = Placement(world_size=world_size, num_experts=num_experts, group_layout=layout)
    for g, members in enumerate(p.groups()):
        for i, r in enumerate(members):
            assert (p.group_of(r), p.ep_rank(r)) == (g, i)
