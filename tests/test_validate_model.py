"""validate.model.model / validate.model.experts: shapes, routing order, piece composition, subset banks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dicesim.errors import ConfigError
from dicesim.models import get_model
from validate.model.experts import ExpertBank, param_seed
from validate.model.model import (
    DiTMoE,
    combine_copies,
    copies_to_rows,
    sincos_pos_embed_2d,
    sort_copies,
    timestep_features,
)

torch.set_num_threads(1)
PRESET = get_model("tiny")  # depth 4, hidden 32, 2 heads, 4 experts, 10 classes
SIDE = 8  # latent side -> 16 tokens per image


@pytest.fixture(scope="module")
def model() -> DiTMoE:
    return DiTMoE(PRESET, latent_side=SIDE, seed=7).eval()


def _inputs(batch: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, PRESET.latent_channels, SIDE, SIDE, generator=gen)
    t = torch.rand(batch, generator=gen)
    y = torch.randint(0, PRESET.num_classes + 1, (batch,), generator=gen)
    return x, t, y


def test_shapes_of_model_and_pieces(model):
    x, t, y = _inputs(batch=3)
    with torch.no_grad():
        out = model(x, t, y)
        x_BTD, c_BD = model.embed(x, t, y)
        block = model.blocks[0]
        h_ND, gate_BD = block.moe_input(block.attention_half(x_BTD, c_BD), c_BD)
        idx_NK, score_NK = block.route(h_ND)
    assert out.shape == (3, PRESET.out_channels, SIDE, SIDE)
    assert x_BTD.shape == (3, 16, PRESET.hidden) and c_BD.shape == (3, PRESET.hidden)
    assert h_ND.shape == (48, PRESET.hidden) and gate_BD.shape == (3, PRESET.hidden)
    assert idx_NK.shape == (48, PRESET.top_k) and idx_NK.dtype == torch.int64
    assert score_NK.shape == (48, PRESET.top_k) and score_NK.dtype == torch.float32
    assert model.tokens_per_image == PRESET.tokens_per_image(SIDE * PRESET.latent_downsample)
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_route_returns_true_top_k_with_copy0_highest(model):
    gen = torch.Generator().manual_seed(3)
    for block in model.blocks:
        h_ND = 3 * torch.randn(2000, PRESET.hidden, generator=gen)
        with torch.no_grad():
            idx_NK, score_NK = block.route(h_ND)
            probs_NE = F.linear(h_ND, block.moe.gate.weight).softmax(-1)
        assert (score_NK[:, 0] >= score_NK[:, 1]).all()
        assert (idx_NK[:, 0] != idx_NK[:, 1]).all()
        torch.testing.assert_close(score_NK, probs_NE.gather(1, idx_NK))  # not renormalised
        third_NE = probs_NE.scatter(1, idx_NK, -1.0).max(dim=1).values
        assert (score_NK[:, 1] >= third_NE).all()


def test_route_sorts_even_when_topk_returns_reversed_copies(model, monkeypatch):
    h_ND = torch.randn(64, PRESET.hidden, generator=torch.Generator().manual_seed(4))
    block = model.blocks[1]
    with torch.no_grad():
        expected = block.route(h_ND)
        real_topk = torch.topk

        def reversed_topk(*args, **kwargs):
            values, indices = real_topk(*args, **kwargs)
            return values.flip(-1), indices.flip(-1)

        monkeypatch.setattr(torch, "topk", reversed_topk)
        got = block.route(h_ND)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_sort_copies_orders_by_score_then_expert_id():
    idx = torch.tensor([[3, 1], [0, 2], [2, 0]])
    score = torch.tensor([[0.2, 0.5], [0.4, 0.4], [0.3, 0.3]])
    idx_s, score_s = sort_copies(idx, score)
    assert idx_s.tolist() == [[1, 3], [0, 2], [0, 2]]
    assert torch.equal(score_s, torch.tensor([[0.5, 0.2], [0.4, 0.4], [0.3, 0.3]]))


def _expert_parallel_block(block, banks, x_BTD, c_BD):
    """Compose the split pieces as a 2-rank executor would: expert e lives in banks[e % 2]."""
    mod = block.modulation(c_BD)
    x_BTD = block.attention_half(x_BTD, c_BD, mod=mod)
    h_ND, gate_BD = block.moe_input(x_BTD, c_BD, mod=mod)
    idx_NK, score_NK = block.route(h_ND)
    rows_RD, ids_R = copies_to_rows(h_ND, idx_NK)
    out_RD = torch.empty_like(rows_RD)
    for rank, bank in enumerate(banks):
        mine_R = ids_R % len(banks) == rank
        out_RD[mine_R] = bank.forward_rows(rows_RD[mine_R], ids_R[mine_R])
    routed_ND = combine_copies(out_RD.view(*idx_NK.shape, -1), score_NK)
    return block.moe_output(x_BTD, routed_ND, block.shared_expert(h_ND), gate_BD)


def test_split_pieces_with_subset_banks_equal_monolithic_forward_exactly(model):
    x, t, y = _inputs(batch=2, seed=5)
    with torch.no_grad():
        x_BTD, c_BD = model.embed(x, t, y)
        for layer, block in enumerate(model.blocks):
            banks = [ExpertBank(PRESET, [e for e in range(4) if e % 2 == r], layer=layer, seed=7) for r in (0, 1)]
            x_split = _expert_parallel_block(block, banks, x_BTD, c_BD)
            x_BTD = block(x_BTD, c_BD)
            assert torch.equal(x_split, x_BTD)
        assert torch.equal(model.head(x_BTD, c_BD), model(x, t, y))


def test_subset_bank_weights_equal_full_model_experts(model):
    for layer in (0, 3):
        for ids in ((3,), (0, 2), (2, 1)):
            bank = ExpertBank(PRESET, ids, layer=layer, seed=7)
            assert bank.expert_ids == tuple(sorted(ids)) and len(bank) == len(ids)
            for e in ids:
                for name, p in bank[e].named_parameters():
                    assert torch.equal(p, model.blocks[layer].experts[e].get_parameter(name))
    weights = [model.blocks[0].experts[e].up_proj.weight for e in range(4)] + [model.blocks[0].experts[0].gate_proj.weight]
    assert all(not torch.equal(a, b) for i, a in enumerate(weights) for b in weights[i + 1 :])
    other_layer = ExpertBank(PRESET, (0,), layer=1, seed=7)[0].up_proj.weight
    assert not torch.equal(other_layer, model.blocks[0].experts[0].up_proj.weight)


def test_subset_model_shares_all_weights_with_full_model(model):
    sub = DiTMoE(PRESET, latent_side=SIDE, seed=7, expert_ids=(1, 2))
    full_sd, sub_sd = model.state_dict(), sub.state_dict()
    assert set(sub_sd) < set(full_sd)
    assert not any(".moe.experts.0." in k or ".moe.experts.3." in k for k in sub_sd)
    assert all(torch.equal(v, full_sd[k]) for k, v in sub_sd.items())


def test_construction_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = DiTMoE(PRESET, latent_side=SIDE, seed=1)
    b = DiTMoE(PRESET, latent_side=SIDE, seed=1)
    c = DiTMoE(PRESET, latent_side=SIDE, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)
    assert param_seed(1, "x") == param_seed(1, "x") != param_seed(2, "x")


def test_forward_rows_and_grouped_agree_and_reject_foreign_experts():
    bank = ExpertBank(PRESET, (1, 3), layer=2, seed=0)
    gen = torch.Generator().manual_seed(8)
    rows_RD = torch.randn(10, PRESET.hidden, generator=gen)
    ids_R = torch.tensor([3, 1, 1, 3, 3, 1, 1, 1, 3, 1])
    with torch.no_grad():
        out_RD = bank.forward_rows(rows_RD, ids_R)
        for r in range(10):
            torch.testing.assert_close(out_RD[r], bank[int(ids_R[r])](rows_RD[r : r + 1])[0])
        order = torch.argsort(ids_R, stable=True)
        grouped = bank.forward_grouped(rows_RD[order], [6, 4])
        assert torch.equal(grouped, out_RD[order])
        assert bank.forward_rows(rows_RD[:0], ids_R[:0]).shape == (0, PRESET.hidden)
        with pytest.raises(LookupError, match="expert 0"):
            bank.forward_rows(rows_RD, torch.zeros(10, dtype=torch.int64))
        with pytest.raises(ValueError):
            bank.forward_grouped(rows_RD, [5, 4])


def test_pos_embed_and_timestep_features_golden_values():
    pos = sincos_pos_embed_2d(4, 2)  # token t = row*2 + col; [sin,cos](col) | [sin,cos](row)
    s, c = math.sin(1.0), math.cos(1.0)
    expected = torch.tensor([[0, 1, 0, 1], [s, c, 0, 1], [0, 1, s, c], [s, c, s, c]], dtype=torch.float32)
    torch.testing.assert_close(pos, expected)
    feats = timestep_features(torch.tensor([0.0, 2.0]), dim=4)  # freqs 1, 0.01 ; [cos | sin]
    torch.testing.assert_close(feats[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(feats[1], torch.tensor([math.cos(2), math.cos(0.02), math.sin(2), math.sin(0.02)]))


def test_unpatchify_places_every_value(model):
    P, O, side = PRESET.patch, PRESET.out_channels, SIDE // PRESET.patch
    code_BTQ = torch.arange(side * side * P * P * O, dtype=torch.float32).reshape(1, side * side, P * P * O)
    img = model.unpatchify(code_BTQ)
    for h, w, p, q, o in ((0, 0, 0, 0, 0), (1, 2, 1, 0, 5), (3, 3, 1, 1, 7), (2, 0, 0, 1, 3)):
        assert img[0, o, h * P + p, w * P + q] == code_BTQ[0, h * side + w, (p * P + q) * O + o]


def test_label_dropout_only_with_generator():
    emb = DiTMoE(PRESET, latent_side=SIDE, label_dropout_prob=0.5).y_embedder
    y = torch.arange(10).repeat(4)
    table = emb.embedding_table.weight
    assert torch.equal(emb(y), table[y])
    dropped = emb(y, drop_generator=torch.Generator().manual_seed(0))
    is_null = (dropped == table[10]).all(dim=1)
    assert ((dropped == table[y]).all(dim=1) | is_null).all()
    assert 5 <= int(is_null.sum()) <= 35
    assert torch.equal(dropped, emb(y, drop_generator=torch.Generator().manual_seed(0)))


def test_bad_configuration_raises_config_error():
    with pytest.raises(ConfigError, match="latent_side"):
        DiTMoE(PRESET, latent_side=7)
    with pytest.raises(ConfigError, match="expert_ids"):
        ExpertBank(PRESET, (0, 4), layer=0)
    with pytest.raises(ConfigError, match="expert_ids"):
        ExpertBank(PRESET, (1, 1), layer=0)
    with pytest.raises(ConfigError, match="label_dropout_prob"):
        DiTMoE(PRESET, latent_side=SIDE, label_dropout_prob=1.0)
    assert DiTMoE.for_image(PRESET, 64).latent_side == 8
