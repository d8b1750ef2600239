"""validate.model.sampler: Euler rectified flow with one-batch CFG, closed forms and determinism."""

from __future__ import annotations

import pytest
import torch

from dicesim.errors import ConfigError
from dicesim.models import get_model
from validate.model.model import DiTMoE
from validate.model.sampler import SamplerConfig, initial_noise, model_denoiser, sample, sample_reference, step_times

torch.set_num_threads(1)
PRESET = get_model("tiny")


@pytest.fixture(scope="module")
def model() -> DiTMoE:
    return DiTMoE(PRESET, latent_side=8, seed=3).eval()


def test_step_times_and_config_validation():
    assert step_times(4) == [1.0, 0.75, 0.5, 0.25]
    assert SamplerConfig(num_steps=3, guidance_scale=None).network_batch_factor == 1
    assert SamplerConfig(num_steps=3, guidance_scale=1.5).network_batch_factor == 2
    with pytest.raises(ConfigError, match="num_steps"):
        SamplerConfig(num_steps=0)
    with pytest.raises(ConfigError, match="guidance_scale"):
        SamplerConfig(guidance_scale=-1.0)


def test_identity_velocity_gives_closed_form():
    z = initial_noise(batch=2, channels=4, side=4, seed=0)

    def denoise(x, t, y, step):  # v = x, with a learn_sigma half that must be ignored
        return torch.cat([x, torch.full_like(x, 1e6)], dim=1)

    out = sample(denoise, z, torch.tensor([1, 2]), config=SamplerConfig(num_steps=8, guidance_scale=None), null_class=10)
    torch.testing.assert_close(out, z * (1 - 1 / 8) ** 8)


def test_cfg_runs_one_batch_in_step_order_and_mixes_velocities():
    z = initial_noise(batch=3, channels=4, side=2, seed=1)
    y = torch.tensor([4, 5, 6])
    calls = []

    def denoise(x, t, labels, step):
        calls.append((x.shape[0], labels.tolist(), t.tolist(), step))
        v_cond, v_uncond = 2.0, -1.0  # per-half constant velocities
        return torch.where((labels == 10).view(-1, 1, 1, 1), v_uncond, v_cond).expand_as(x).clone()

    out = sample(denoise, z, y, config=SamplerConfig(num_steps=5, guidance_scale=3.0), null_class=10)
    assert [c[3] for c in calls] == [0, 1, 2, 3, 4]
    assert all(c[0] == 6 and c[1] == [4, 5, 6, 10, 10, 10] for c in calls)
    assert [c[2][0] for c in calls] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    torch.testing.assert_close(out, z - (-1.0 + 3.0 * (2.0 - -1.0)))  # sum of dt = 1


def test_sampling_is_deterministic_given_seed(model):
    cfg = SamplerConfig(num_steps=3, guidance_scale=4.0)
    y = torch.tensor([1, 7])
    a = sample_reference(model, y, config=cfg, seed=5)
    b = sample_reference(model, y, config=cfg, seed=5)
    c = sample_reference(model, y, config=cfg, seed=6)
    assert a.shape == (2, PRESET.latent_channels, 8, 8)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_guidance_one_equals_conditional_only_and_guidance_matters(model):
    y = torch.tensor([0, 9])
    steps = []
    cond = sample_reference(model, y, config=SamplerConfig(num_steps=4, guidance_scale=None), seed=2)
    g1 = sample_reference(
        model, y, config=SamplerConfig(num_steps=4, guidance_scale=1.0), seed=2, on_step=lambda i, t, z: steps.append(t)
    )
    g4 = sample_reference(model, y, config=SamplerConfig(num_steps=4, guidance_scale=4.0), seed=2)
    torch.testing.assert_close(g1, cond, rtol=1e-5, atol=1e-5)
    assert (g4 - cond).abs().max() > 1e-3
    assert steps == [1.0, 0.75, 0.5, 0.25]


def test_denoise_output_shape_is_checked(model):
    z = initial_noise(batch=2, channels=4, side=8, seed=0)
    with pytest.raises(ValueError, match="denoise returned"):
        sample(lambda x, t, y, s: x[:1], z, torch.tensor([0, 1]), config=SamplerConfig(num_steps=1), null_class=10)
    out = model_denoiser(model)(z, torch.ones(2), torch.tensor([0, 1]), 0)
    assert out.shape == (2, PRESET.out_channels, 8, 8)
