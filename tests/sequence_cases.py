"""Shared scenario pieces of the sequence-parallel variants' closed-form tests (ulysses, ring)."""

from __future__ import annotations

from dicesim.sim.costs.profile import HardwareProfile, get_profile


def quiet_profile() -> HardwareProfile:
    """H100 compute with no host cost and no compute slow-down: the communication alone sets the exposed time."""
    return get_profile("h100-sxm").with_updates(host_op_s=0.0, host_collective_s=0.0, interference=0.0)


def scenario_kw(W: int, T: int, model: str = "tiny") -> dict:
    """One image per rank at 64 px (16 tokens per image), ``T`` steps on ``W`` GPUs."""
    return dict(model=model, world_size=W, batch=1, image_size=64, steps=T)
