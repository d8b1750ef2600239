"""validate.model.checkpoint: public DiT-MoE layout, round trips, subset loading, one-line errors.

``public_forward`` re-derives the forward pass from a bare state dict with the formulas of
the public DiT-MoE code (manual attention, dense top-2 MoE with unsorted topk), so the
hand-built-dict test checks both the key layout and the model's math.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dicesim.errors import ConfigError
from dicesim.models import get_model
from validate.model.checkpoint import export_state_dict, load_into_bank, load_into_model, read_checkpoint, save_checkpoint
from validate.model.experts import ExpertBank
from validate.model.model import DiTMoE

torch.set_num_threads(1)
PRESET = get_model("tiny")
SIDE = 8


def public_layout(preset, side: int, seed: int) -> dict[str, torch.Tensor]:
    """A random state dict written key by key in the public layout and shapes."""
    D, C, P, O = preset.hidden, preset.latent_channels, preset.patch, preset.out_channels
    T, Hx, Hs = (side // P) ** 2, preset.expert_hidden, preset.shared_hidden
    shapes = {
        "x_embedder.proj.weight": (D, C, P, P), "x_embedder.proj.bias": (D,), "pos_embed": (1, T, D),
        "t_embedder.mlp.0.weight": (D, 256), "t_embedder.mlp.0.bias": (D,),
        "t_embedder.mlp.2.weight": (D, D), "t_embedder.mlp.2.bias": (D,),
        "y_embedder.embedding_table.weight": (preset.num_classes + 1, D),
        "final_layer.linear.weight": (P * P * O, D), "final_layer.linear.bias": (P * P * O,),
        "final_layer.adaLN_modulation.1.weight": (2 * D, D), "final_layer.adaLN_modulation.1.bias": (2 * D,),
    }  # fmt: skip
    for i in range(preset.depth):
        b = f"blocks.{i}."
        shapes |= {
            b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
            b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
            b + "adaLN_modulation.1.weight": (6 * D, D), b + "adaLN_modulation.1.bias": (6 * D,),
            b + "moe.gate.weight": (preset.num_experts, D),
            b + "moe.shared_experts.gate_proj.weight": (Hs, D), b + "moe.shared_experts.up_proj.weight": (Hs, D),
            b + "moe.shared_experts.down_proj.weight": (D, Hs),
        }  # fmt: skip
        for e in range(preset.num_experts):
            x = f"{b}moe.experts.{e}."
            shapes |= {x + "gate_proj.weight": (Hx, D), x + "up_proj.weight": (Hx, D), x + "down_proj.weight": (D, Hx)}
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) / math.sqrt(s[-1] if len(s) > 1 else 16) for k, s in shapes.items()}


def public_forward(sd, preset, side, x, t, y):
    """Forward pass from a bare public-layout state dict (independent of validate.model.model)."""
    P, O, heads, D = preset.patch, preset.out_channels, preset.heads, preset.hidden

    def lin(v, name, bias=True):
        return F.linear(v, sd[name + ".weight"], sd[name + ".bias"] if bias else None)

    def swiglu(v, name):
        return lin(F.silu(lin(v, name + ".gate_proj", False)) * lin(v, name + ".up_proj", False), name + ".down_proj", False)

    def ln_mod(v, shift, scale):
        return F.layer_norm(v, (D,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]

    tok = F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=P).flatten(2).transpose(1, 2)
    tok = tok + sd["pos_embed"]
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    tfeat = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    c = lin(F.silu(lin(tfeat, "t_embedder.mlp.0")), "t_embedder.mlp.2") + sd["y_embedder.embedding_table.weight"][y]
    B, T = tok.shape[:2]
    for i in range(preset.depth):
        b = f"blocks.{i}."
        sh1, sc1, g1, sh2, sc2, g2 = lin(F.silu(c), b + "adaLN_modulation.1").chunk(6, dim=1)
        q, k, v = lin(ln_mod(tok, sh1, sc1), b + "attn.qkv").reshape(B, T, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(D // heads)).softmax(-1) @ v
        tok = tok + g1[:, None] * lin(att.transpose(1, 2).reshape(B, T, D), b + "attn.proj")
        h = ln_mod(tok, sh2, sc2).reshape(B * T, D)
        weight, idx = torch.topk(F.linear(h, sd[b + "moe.gate.weight"]).softmax(-1), preset.top_k, dim=-1, sorted=False)
        routed = torch.zeros_like(h)
        for e in range(preset.num_experts):
            for kk in range(preset.top_k):
                rows = idx[:, kk] == e
                routed[rows] += weight[rows, kk, None] * swiglu(h[rows], f"{b}moe.experts.{e}")
        tok = tok + g2[:, None] * (routed + swiglu(h, b + "moe.shared_experts")).reshape(B, T, D)
    shift, scale = lin(F.silu(c), "final_layer.adaLN_modulation.1").chunk(2, dim=1)
    out = lin(ln_mod(tok, shift, scale), "final_layer.linear")
    s = side // P
    return torch.einsum("nhwpqc->nchpwq", out.reshape(B, s, s, P, P, O)).reshape(B, O, s * P, s * P)


def _inputs(batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, PRESET.latent_channels, SIDE, SIDE, generator=gen)
    return x, torch.rand(batch, generator=gen), torch.randint(0, PRESET.num_classes + 1, (batch,), generator=gen)


@pytest.fixture(scope="module")
def full() -> DiTMoE:
    return DiTMoE(PRESET, latent_side=SIDE, seed=11).eval()


def test_hand_built_public_dict_loads_and_matches_public_math():
    sd = public_layout(PRESET, SIDE, seed=1)
    model = DiTMoE(PRESET, latent_side=SIDE, seed=0).eval()
    assert set(model.state_dict()) == set(sd)
    load_into_model(model, sd)
    assert torch.equal(model.blocks[2].experts[3].down_proj.weight, sd["blocks.2.moe.experts.3.down_proj.weight"])
    assert torch.equal(model.blocks[1].moe.gate.weight, sd["blocks.1.moe.gate.weight"])
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    x, t, y = _inputs(batch=3, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), public_forward(sd, PRESET, SIDE, x, t, y), rtol=1e-4, atol=1e-5)


def test_export_import_round_trip_gives_identical_forward(full):
    other = DiTMoE(PRESET, latent_side=SIDE, seed=99).eval()
    x, t, y = _inputs()
    with torch.no_grad():
        assert not torch.equal(other(x, t, y), full(x, t, y))
        load_into_model(other, export_state_dict(full))
        assert torch.equal(other(x, t, y), full(x, t, y))


def test_file_round_trip_unwraps_ema_and_ddp_prefix(full, tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(full, path)
    assert set(read_checkpoint(path)) == set(full.state_dict())
    torch.save({"ema": {"module." + k: v for k, v in export_state_dict(full).items()}, "opt": {}}, path)
    sd = read_checkpoint(path)
    assert all(torch.equal(sd[k], v) for k, v in full.state_dict().items())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        read_checkpoint(tmp_path / "junk.pt")
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_subset_model_and_bank_load_from_full_checkpoint(full):
    sd = export_state_dict(full)
    sub = DiTMoE(PRESET, latent_side=SIDE, seed=5, expert_ids=(0, 3))
    load_into_model(sub, sd)
    assert all(torch.equal(v, sd[k]) for k, v in sub.state_dict().items())
    bank = ExpertBank(PRESET, (2,), layer=1, seed=5)
    load_into_bank(bank, sd)
    assert torch.equal(bank[2].gate_proj.weight, full.blocks[1].experts[2].gate_proj.weight)
    partial = {k: v for k, v in sd.items() if ".moe.experts.1." not in k}
    load_into_model(sub, partial)  # a rank's file without other ranks' experts is enough
    with pytest.raises(ConfigError, match=r"missing: blocks\.1\.moe\.experts\.1\.down_proj\.weight"):
        load_into_bank(ExpertBank(PRESET, (1,), layer=1), partial)


def test_errors_name_missing_unexpected_and_mismatched_keys(full):
    sd = export_state_dict(full)
    model = DiTMoE(PRESET, latent_side=SIDE)
    with pytest.raises(ConfigError, match=r"1 missing: blocks\.0\.attn\.qkv\.bias") as info:
        load_into_model(model, {k: v for k, v in sd.items() if k != "blocks.0.attn.qkv.bias"})
    assert "\n" not in str(info.value) and str(info.value).startswith("checkpoint: ")
    with pytest.raises(ConfigError, match=r"1 unexpected: blocks\.0\.attn\.q_norm\.weight"):
        load_into_model(model, sd | {"blocks.0.attn.q_norm.weight": torch.ones(16)})
    bad = sd | {"final_layer.linear.bias": torch.zeros(3)}
    with pytest.raises(ConfigError, match=r"shape mismatch: final_layer\.linear\.bias 3 vs model 32"):
        load_into_model(model, bad)
    eight = export_state_dict(DiTMoE(get_model("tiny", num_experts=8), latent_side=SIDE))
    with pytest.raises(ConfigError, match=r"48 unexpected: .*\.\.\. and 44 more; 4 shape mismatch: blocks\.0\.moe\.gate\.weight 8x32"):
        load_into_model(model, eight)
    with pytest.raises(ConfigError, match="another latent_side"):
        load_into_model(DiTMoE(PRESET, latent_side=16), sd)
    with pytest.raises(ConfigError, match="unexpected"):
        load_into_bank(ExpertBank(PRESET, (0,), layer=0), eight)
