"""Model presets and per-op costs against hand calculations."""

from __future__ import annotations

import pytest

from dicesim.errors import ConfigError
from dicesim.models import block_workload, get_model


def test_presets_match_published_shapes():
    xl, g = get_model("XL/2"), get_model("G/2")
    assert (xl.depth, xl.hidden, xl.heads, xl.num_experts, xl.top_k) == (28, 1152, 16, 8, 2)
    assert (g.depth, g.hidden, g.heads, g.num_experts) == (40, 1408, 16, 16)
    assert xl.expert_hidden == 4608 and xl.shared_hidden == 2304
    # DiT-MoE-XL/2-8E2A has ~4.1B parameters, G/2-16E2A ~16.5B: experts dominate
    D, H, S = xl.hidden, xl.expert_hidden, xl.shared_hidden
    params = xl.depth * (10 * D * D + 8 * 3 * D * H + 3 * D * S)
    assert 4.0e9 < params < 4.3e9


def test_tokens_per_image_256px_is_256():
    assert get_model("XL/2").tokens_per_image(256) == 256
    assert get_model("XL/2").tokens_per_image(512) == 1024


def test_attention_half_flops_by_hand():
    # XL/2, one image without CFG at 256 px: 256 tokens of width 1152
    w = block_workload(get_model("XL/2"), batch=1, image_px=256, cfg=False)
    D, n = 1152, 256
    adaln = 2 * D * 6 * D
    qkv = 2 * n * D * 3 * D
    attn = 2 * 2 * n * n * D
    proj = 2 * n * D * D
    elementwise = 12 * n * D
    assert w.attention_half().flops == adaln + qkv + attn + proj + elementwise


def test_expert_and_shared_flops_by_hand():
    w = block_workload(get_model("XL/2"), batch=2, image_px=256, cfg=True)
    assert w.images == 4 and w.tokens == 1024 and w.routed_rows == 2048
    D, H, S = 1152, 4608, 2304
    assert w.expert_rows(10, 1).flops == 10 * (6 * D * H + 4 * H)
    assert w.shared_expert().flops == 1024 * (6 * D * S + 4 * S + 3 * D)
    # all-to-all payload: one bf16 row of width D per token copy
    assert w.row_nbytes() == 2304
    assert w.gate().flops == 2 * 1024 * D * 8 + 8 * 1024 * D + 5 * 1024 * 8


def test_expert_weights_counted_once_per_local_expert():
    w = block_workload(get_model("G/2"), batch=1, image_px=256)
    one = w.expert_rows(100, 1).nbytes
    two = w.expert_rows(100, 2).nbytes
    assert two - one == 3 * 1408 * 5632 * 2
    assert w.expert_rows(0, 2).nbytes == 0


def test_expert_count_what_if():
    m = get_model("XL/2", num_experts=64)
    assert m.num_experts == 64 and m.depth == 28 and "64E" in m.name


@pytest.mark.parametrize("kwargs,field", [
    (dict(batch=0, image_px=256), "batch"),
    (dict(batch=1, image_px=250), "image_size"),
    (dict(batch=1, image_px=256, dtype="int3"), "dtype"),
])
def test_bad_workload_names_field(kwargs, field):
    with pytest.raises(ConfigError) as exc:
        block_workload(get_model("tiny"), **kwargs)
    assert exc.value.field == field and "\n" not in str(exc.value)


def test_unknown_model_lists_allowed():
    with pytest.raises(ConfigError, match="allowed: tiny, small, digits, S/2, B/2, XL/2, G/2"):
        get_model("XXL/2")


def test_digits_preset_is_pixels_at_8px():
    m = get_model("digits")
    assert (m.depth, m.hidden, m.num_experts, m.top_k, m.latent_channels, m.out_channels) == (6, 48, 8, 2, 1, 1)
    assert m.latent_side(8) == 8 and m.tokens_per_image(8) == 16
    # the checkpoint must stay under 5 MB in fp32: experts dominate
    D, H, S = m.hidden, m.expert_hidden, m.shared_hidden
    assert m.depth * (10 * D * D + m.num_experts * 3 * D * H + 3 * D * S) * 4 < 5e6
