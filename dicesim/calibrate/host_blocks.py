"""diffusers' DiT blocks' host cost, measured on CPU, mapped onto a GPU machine's host: a check of the step model.

The step model (:mod:`dicesim.calibrate.published.step_level`, ``EAGER_HOST_PER_KERNEL_S``) charges every
eager block 17.2 us of host per counted kernel: the executor's own ops on the H100 machine. The published
runs ran diffusers' blocks. ``benchmarks/host_diffusers_blocks.py`` times those on CPU with tiny tensors,
on the CPU scale of ``traces/host/cpu-executor.toml``; :func:`gpu_block_host` maps each through the host
model fitted on that GPU machine (:mod:`dicesim.calibrate.fit_host`: ``H = rho * H_cpu + tau * launches``),
exactly as the executor's ops are mapped. Nothing here feeds a prediction: it is what the 17.2 us is checked
against (docs/step-level.md, "Host").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dicesim.calibrate.fit_host import HostFile
from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.tomlio import read_toml

DEFAULT_HOST_BLOCKS = Path("traces/host/cpu-diffusers-blocks.toml")


class BlockRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    diffusers_class: str
    host_s: float = Field(gt=0, le=1)  # on the CPU scale of traces/host/cpu-executor.toml
    raw_host_s: float = Field(gt=0, le=1)  # on the CPU that measured it
    launches: int = Field(gt=0, le=10_000)
    syncs: int = Field(ge=0, le=1_000)


class HostBlocks(HostFile):
    """``traces/host/cpu-diffusers-blocks.toml`` (``benchmarks/host_diffusers_blocks.py``)."""

    schema_: Literal["dicesim-host-blocks/1"] = Field(alias="schema")
    block: dict[str, BlockRow] = Field(min_length=1)


def load_host_blocks(path: str | Path = DEFAULT_HOST_BLOCKS) -> HostBlocks:
    """The measured blocks; a malformed file is a :class:`ConfigError` naming it."""
    data = read_toml(path, what="host blocks", error=lambda problem: ConfigError("host_blocks", f"{path}: {problem}"))
    try:
        return HostBlocks(**data)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, prefix=f"host_blocks ({path})") from None


@dataclass(frozen=True)
class BlockHost:
    """One block's host on the GPU machine: the whole forward and per counted launch."""

    name: str
    host_s: float
    launches: int

    @property
    def per_launch_s(self) -> float:
        return self.host_s / self.launches


def gpu_block_host(blocks: HostBlocks, rho: float, tau_s: float) -> dict[str, BlockHost]:
    """Each block's host seconds on the GPU machine whose host fit is ``rho``, ``tau_s``."""
    if rho < 0 or tau_s < 0:
        raise ConfigError("host fit", f"rho and tau must be >= 0, got {rho}, {tau_s}")
    return {name: BlockHost(name, rho * row.host_s + tau_s * row.launches, row.launches)
            for name, row in blocks.block.items()}
