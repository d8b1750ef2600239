"""Rectified-flow sampling with classifier-free guidance, network-agnostic.

The network is reached only through a ``denoise(x, t, y, step_index)`` callable, so the
expert-parallel executor can plug in a per-step forward that knows which step it is in
(strategies decide per step what to communicate). With guidance on, the conditional and
unconditional halves travel through the network as ONE batch of 2B images
(conditional first), exactly what the simulator counts.

Rectified flow (as in DiT-MoE's ``rectified_flow.py``): x_t = (1 - t) x_0 + t noise, the
network predicts v = noise - x_0, and Euler steps walk t from 1 down to 0:
z <- z - (1/T) v(z, t_i) at t_i = 1 - i/T, i = 0 .. T-1. With ``learn_sigma`` the network
output has 2C channels; the first C are the velocity.

Shape legend: B images per guidance half, C latent channels, O network output channels,
L latent side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from dicesim.errors import ConfigError


class Denoise(Protocol):
    """One network evaluation: inputs x_BCLL at times t_B with labels y_B -> output B x O x L x L."""

    def __call__(self, x_BCLL: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor, step_index: int) -> torch.Tensor: ...


#: called after every step with (step_index, t of that step, updated latents z_BCLL)
StepCallback = Callable[[int, float, torch.Tensor], None]


@dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    """How to sample: ``num_steps`` Euler steps; ``guidance_scale`` None means no CFG."""

    num_steps: int = 50
    guidance_scale: float | None = 4.0

    def __post_init__(self) -> None:
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ConfigError("num_steps", f"must be a positive integer, got {self.num_steps!r}", ">= 1")
        if self.guidance_scale is not None and not self.guidance_scale >= 0:
            raise ConfigError("guidance_scale", f"must be >= 0 or None, got {self.guidance_scale!r}", ">= 0 or None")

    @property
    def cfg(self) -> bool:
        return self.guidance_scale is not None

    @property
    def network_batch_factor(self) -> int:
        """Images through the network per sampled image (2 with CFG)."""
        return 2 if self.cfg else 1


def step_times(num_steps: int) -> list[float]:
    """Times the network is evaluated at: 1, 1 - 1/T, ..., 1/T (step i at 1 - i/T)."""
    return [1.0 - i / num_steps for i in range(num_steps)]


def initial_noise(
    *,
    batch: int,
    channels: int,
    side: int,
    seed: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Starting latents z_BCLL ~ N(0, 1), drawn on the CPU so every device starts identically."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, side, side, generator=gen).to(device=device, dtype=dtype)


@torch.no_grad()
def sample(
    denoise: Denoise,
    z_BCLL: torch.Tensor,
    y_B: torch.Tensor,
    *,
    config: SamplerConfig,
    null_class: int,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Integrate from noise ``z_BCLL`` at t = 1 to latents at t = 0; returns B x C x L x L.

    Keep ``z_BCLL`` in float32 even when the network runs in bf16 (let ``denoise`` cast):
    the Euler sum of T small updates loses precision in bf16.
    """
    B, C = z_BCLL.shape[:2]
    if y_B.shape != (B,):
        raise ValueError(f"labels y_B must have shape ({B},), got {tuple(y_B.shape)}")
    dt = 1.0 / config.num_steps
    y_in_B = torch.cat([y_B, torch.full_like(y_B, null_class)]) if config.cfg else y_B
    for step, t in enumerate(step_times(config.num_steps)):
        x_in_BCLL = torch.cat([z_BCLL, z_BCLL]) if config.cfg else z_BCLL
        t_in_B = torch.full((x_in_BCLL.shape[0],), t, dtype=torch.float32, device=z_BCLL.device)
        out_BOLL = denoise(x_in_BCLL, t_in_B, y_in_B, step)
        if out_BOLL.shape[0] != x_in_BCLL.shape[0] or out_BOLL.shape[1] < C:
            raise ValueError(f"denoise returned {tuple(out_BOLL.shape)} for input {tuple(x_in_BCLL.shape)}")
        v_BCLL = out_BOLL[:, :C].to(z_BCLL.dtype)
        if config.cfg:
            v_cond_BCLL, v_uncond_BCLL = v_BCLL.chunk(2)
            v_BCLL = v_uncond_BCLL + config.guidance_scale * (v_cond_BCLL - v_uncond_BCLL)
        z_BCLL = z_BCLL - dt * v_BCLL
        if on_step is not None:
            on_step(step, t, z_BCLL)
    return z_BCLL


def model_denoiser(model: torch.nn.Module) -> Denoise:
    """Adapt a plain ``model(x, t, y)`` (e.g. the reference DiTMoE) to the Denoise signature."""

    def denoise(x_BCLL: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor, step_index: int) -> torch.Tensor:
        del step_index  # the reference model is the same at every step
        param = next(model.parameters())
        return model(x_BCLL.to(param.dtype), t_B, y_B)

    return denoise


def sample_reference(
    model: torch.nn.Module, y_B: torch.Tensor, *, config: SamplerConfig, seed: int, on_step: StepCallback | None = None
) -> torch.Tensor:
    """Single-process reference sampling of ``validate.model.model.DiTMoE`` from seeded noise."""
    param = next(model.parameters())
    z_BCLL = initial_noise(
        batch=y_B.shape[0],
        channels=model.preset.latent_channels,
        side=model.latent_side,
        seed=seed,
        device=param.device,
    )
    return sample(model_denoiser(model), z_BCLL, y_B.to(param.device), config=config, null_class=model.null_class, on_step=on_step)
