"""Hardware profile: the numbers the cost model and the engine time every op with.

A :class:`HardwareProfile` is immutable and validated at the boundary (unknown keys are an
error). It is stored as TOML; built-in profiles for the GPUs in ``docs/hardware.md`` live
in ``dicesim/data/profiles/*.toml`` with a citation for every number, and calibration
writes fitted ones with :func:`save_profile` (provenance in ``source``/``date``/``fitted_range``).
"""

from __future__ import annotations

import functools
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dicesim.atomic import write_atomic
from dicesim.errors import ConfigError, model_keys_at
from dicesim.limits import physical_problem
from dicesim.sim.costs.attention_kernels import Arch
from dicesim.sim.costs.host import HostModel
from dicesim.tomlio import read_toml

#: op kinds the cost model distinguishes (plan action kinds map onto these)
OP_KINDS: tuple[str, ...] = ("embed", "attention", "gate", "experts", "shared_expert", "local_combine", "final")
#: collective kinds with their own base latency (every profile has these)
COLLECTIVE_KINDS: tuple[str, ...] = ("all_to_all", "count_exchange")
#: kinds a profile may time on their own (a base latency per ring step, a bandwidth); absent, the all-to-all's
#: base latency and the links' bandwidth stand in (dicesim.sim.engine.groupcomm)
STEP_KINDS: tuple[str, ...] = ("all_gather", "p2p_pass")
OpKind = Literal["embed", "attention", "gate", "experts", "shared_expert", "local_combine", "final"]
CollectiveKind = Literal["all_to_all", "count_exchange", "all_gather", "p2p_pass"]
StepKind = Literal["all_gather", "p2p_pass"]


class OpEfficiency(BaseModel):
    """Fraction of peak reached by one op kind, and its fixed per-op cost on the GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    compute_eff: float = Field(gt=0, le=1)
    mem_eff: float = Field(gt=0, le=1)
    launch_s: float = Field(ge=0)


class HardwareProfile(BaseModel):
    """Per-GPU throughput, per-op efficiency, collective latencies and host overheads.

    Collective time = ``collective_base_s[kind]`` + the largest ``link_latency_s`` of the link
    classes its routes cross + (for all-to-all) the flows' transfer time over the graph, whose
    link bandwidths are scaled by ``link_bw_eff[class]`` on top of the NCCL model's per-transport
    share (:mod:`dicesim.sim.network.nccl`). Class lookups fall back to
    ``"default"``. ``all_gather`` / ``p2p_pass`` (optional, :data:`STEP_KINDS`): a ring all-gather's
    base latency per ring step and a ring-attention pass's base latency; ``collective_bw_Bps[kind]``:
    the bandwidth such a transfer drains at on an idle link (a CPU profile fits both on a gloo
    microbenchmark: :mod:`dicesim.calibrate.fit_collectives`); absent, the all-to-all's base and
    the links' bandwidth stand in. While this rank's communication is in flight, compute runs
    ``1 + interference`` times slower; while this rank computes, the links into and out of its
    GPU carry ``1 / (1 + comm_interference)`` of their bandwidth and the latency of transfers
    crossing them passes that much slower (0: communication is never slowed by compute).

    ``host``: the host of an eager executor (:mod:`dicesim.sim.costs.host`): per op, the host
    seconds to issue it and the syncs before it; without it the host costs ``host_op_s`` per op
    launch and ``host_collective_s`` per collective. :attr:`basis` says whether the profile rests
    on measurements (a fitted profile) or on datasheets and stated assumptions.
    ``memory_capacity_bytes``: the GPU's memory as the driver reports it (None: unknown, e.g. a
    CPU profile), which the per-GPU memory model compares its total with (docs/memory.md).
    ``arch`` and ``sms``: the GPU's architecture and SM count, given together; where they are known
    the dense step model times the attention core on the published kernel curves of that
    architecture, scaled by SMs (:mod:`dicesim.sim.costs.attention_kernels`); without them the
    ``attention`` efficiency applies.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    gpu: str
    source: str
    date: str
    fitted_range: str = "not fitted"
    peak_tflops: float = Field(gt=0)
    mem_bw_GBps: float = Field(gt=0)
    memory_capacity_bytes: Optional[int] = Field(None, gt=0)
    arch: Optional[Arch] = None
    sms: Optional[int] = Field(None, gt=0)
    ops: dict[OpKind, OpEfficiency]
    collective_base_s: dict[CollectiveKind, float]
    link_latency_s: dict[str, float]
    link_bw_eff: dict[str, float] = Field(default_factory=lambda: {"default": 1.0})
    collective_bw_Bps: dict[StepKind, float] = Field(default_factory=dict)
    host_op_s: float = Field(ge=0)
    host_collective_s: float = Field(ge=0)
    interference: float = Field(ge=0)
    comm_interference: float = Field(default=0.0, ge=0)
    host: Optional[HostModel] = None
    citations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> "HardwareProfile":
        missing = [k for k in OP_KINDS if k not in self.ops]
        if missing:
            raise ValueError(f"ops is missing {missing}")
        missing = [k for k in COLLECTIVE_KINDS if k not in self.collective_base_s]
        if missing:
            raise ValueError(f"collective_base_s is missing {missing}")
        if (self.arch is None) != (self.sms is None):
            raise ValueError("arch and sms go together: give both (the attention curves need both) or neither")
        for table in ("link_latency_s", "link_bw_eff"):
            values = getattr(self, table)
            if "default" not in values:
                raise ValueError(f"{table} needs a 'default' entry")
            if any(v < 0 for v in values.values()):
                raise ValueError(f"{table} values must be >= 0")
        times = {**{f"collective_base_s.{k}": v for k, v in self.collective_base_s.items()},
                 **{f"link_latency_s.{k}": v for k, v in self.link_latency_s.items()},
                 "host_op_s": self.host_op_s, "host_collective_s": self.host_collective_s,
                 **{f"ops.{k}.launch_s": o.launch_s for k, o in self.ops.items()}}
        # every number against its physical range (dicesim.limits.PHYSICAL): bounded from below
        # too, so no rate near zero reaches the cost model
        checks = [("peak_tflops", "peak_tflops", self.peak_tflops), ("mem_bw_GBps", "mem_bw_GBps", self.mem_bw_GBps),
                  ("interference", "interference", self.interference),
                  ("comm_interference", "interference", self.comm_interference),
                  *((k, "fixed_time_s", v) for k, v in sorted(times.items())),
                  *((f"link_bw_eff.{k}", "efficiency", v) for k, v in sorted(self.link_bw_eff.items())),
                  *((f"collective_bw_Bps.{k}", "bw_Bps", v) for k, v in sorted(self.collective_bw_Bps.items())),
                  *((f"ops.{k}.{f}", "efficiency", getattr(o, f)) for k, o in sorted(self.ops.items())
                    for f in ("compute_eff", "mem_eff")),
                  *((("memory_capacity_bytes", "gpu_memory_bytes", self.memory_capacity_bytes),)
                    if self.memory_capacity_bytes is not None else ())]
        for field, quantity, value in checks:
            problem = physical_problem(quantity, value)
            if problem:
                raise ValueError(f"{field}: {problem}")
        return self

    @property
    def basis(self) -> Literal["measured", "datasheet"]:
        """``measured``: fitted from traces (``fitted_range`` says on what); ``datasheet``: vendor
        figures and stated assumptions only."""
        return "datasheet" if self.fitted_range == "not fitted" else "measured"

    def describe(self) -> str:
        """One line for outputs: the profile's name and what it rests on."""
        what = "measured" if self.basis == "measured" else "datasheet"
        host = "; eager host model" if self.host is not None else ""
        return f"{self.name} ({what}{host})"

    @property
    def peak_flops(self) -> float:
        return self.peak_tflops * 1e12

    @property
    def mem_bw_Bps(self) -> float:
        return self.mem_bw_GBps * 1e9

    def link_latency(self, link_class: str) -> float:
        """Per-collective latency added when a route crosses a link of ``link_class``."""
        return self.link_latency_s.get(link_class, self.link_latency_s["default"])

    def bw_eff(self, link_class: str) -> float:
        """Fraction of a ``link_class`` link's bandwidth collectives reach."""
        return self.link_bw_eff.get(link_class, self.link_bw_eff["default"])

    def with_updates(self, **fields: object) -> "HardwareProfile":
        """A validated copy with some fields replaced (calibration uses this)."""
        return profile_from_dict({**self.model_dump(), **fields}, origin="with_updates")


def profile_from_dict(data: dict, origin: str = "profile") -> HardwareProfile:
    """Validate a plain mapping into a profile; problems become one-line ConfigErrors."""
    try:
        return HardwareProfile(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        field = f"profile.{loc}" if loc else "profile"
        if err["type"] == "extra_forbidden":
            keys = model_keys_at(HardwareProfile, err["loc"][:-1])
            raise ConfigError(field, f"unknown key in {origin}", keys) from None
        if err["type"] == "literal_error":
            raise ConfigError(field, f"{err['input']!r} is not allowed in {origin}", err["ctx"]["expected"]) from None
        raise ConfigError(field, f"{err['msg']} in {origin}") from None
    except TypeError as exc:
        raise ConfigError("profile", f"{exc} in {origin}") from None


def load_profile(path: str | os.PathLike) -> HardwareProfile:
    """Read a profile TOML file."""
    data = read_toml(path, what="profile", error=lambda problem: ConfigError("profile", f"{path}: {problem}"))
    return profile_from_dict(data, origin=str(path))


def save_profile(profile: HardwareProfile, path: str | os.PathLike) -> Path:
    """Write ``profile`` as TOML atomically (temporary file + rename); returns the path."""
    data = profile.model_dump(mode="json", exclude_none=True)  # TOML has no null: no host model, unknown capacity
    return write_atomic(path, lambda tmp: tmp.write_bytes(tomli_w.dumps(data).encode("utf-8")))


def _builtin_dir():
    return resources.files("dicesim") / "data" / "profiles"


def builtin_profile_names() -> tuple[str, ...]:
    """Names of the profiles shipped with dicesim (``rtx4090``, ``h100-sxm``, ...)."""
    return tuple(sorted(f.name[: -len(".toml")] for f in _builtin_dir().iterdir() if f.name.endswith(".toml")))


def get_profile(name_or_path: str | os.PathLike) -> HardwareProfile:
    """A built-in profile by name, or a profile TOML file by path."""
    name = str(name_or_path)
    if name.endswith(".toml") or os.sep in name:
        return load_profile(name)
    f = _builtin_dir() / f"{name}.toml"
    if not f.is_file():
        raise ConfigError("profile", f"unknown profile {name!r}", builtin_profile_names())
    return _profile_from_text(f.read_text(), f"built-in profile {name}")


@functools.lru_cache(maxsize=32)
def _profile_from_text(text: str, origin: str) -> HardwareProfile:
    # keyed by the file's content (a pure function of it; the profile is frozen): a study resolves
    # the profile of every configuration, each a parse and a validation of the same file
    return profile_from_dict(tomllib.loads(text), origin=origin)


#: substrings of a topology name or ``gpu`` graph attribute -> (the GPU's datasheet profile, its
#: best-evidenced profile: measured where the project has op timings of that GPU, else the datasheet).
#: For H100 and H200 that is the device timing measured under CUDA graphs (``-calibrated-graph``),
#: with the same per-op host assumption every other GPU's profile makes, so that machines and
#: families compare like for like; the eager profiles (``-calibrated``) add the host model fitted on
#: this project's Python executor (per-expert launches, count-exchange syncs), which the sequence
#: family's host was never measured against (docs/model.md): ask for them with ``--profile``.
_GPU_HINTS: tuple[tuple[str, str, str], ...] = (
    ("4090", "rtx4090", "rtx4090"), ("l40s", "l40s", "l40s"), ("a100", "a100-sxm", "a100-sxm"),
    ("h200", "h200", "h200-calibrated-graph"), ("h100", "h100-sxm", "h100-calibrated-graph"),
)


def profile_for_gpu(hint: str, *, datasheet: bool = False) -> HardwareProfile:
    """The built-in profile of the GPU ``hint`` (topology name or GPU model) mentions: the best-evidenced
    one (measured where the project has measurements of that GPU, ``traces/gpu``), or its datasheet
    profile (``datasheet=True``: what a calibration starts from)."""
    low = hint.lower()
    for needle, sheet, best in _GPU_HINTS:
        if needle in low:
            return get_profile(sheet if datasheet else best)
    raise ConfigError("profile", f"cannot tell the GPU of {hint!r}; pass a profile explicitly",
                      builtin_profile_names())
