"""What one rank does for one run: build its slice of the model, its groups, its runner, sample.

:class:`RunSpec` is the validated description of a run (model, strategy, sizes, seeds).
:func:`run_rank` executes it on an initialised torch.distributed rank; :func:`run_emulated`
executes the same plan in one process holding every expert and every image, with the
:class:`~validate.executor.dispatcher.EmulatedDispatcher` (no communication): the reference the
distributed run must match. Images are numbered globally (rank ``r`` samples images
``r*batch .. r*batch+batch-1``), so noise, labels and the ``random`` copy policy do not depend
on how images are spread over ranks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist

from dicesim.errors import ConfigError
from dicesim.models import DTYPE_NBYTES, ModelPreset, get_model
from dicesim.plan import CollectiveKind, ParallelLayout, build_plan, layout_for
from dicesim.strategy import Strategy
from validate.executor.dispatcher import Dispatcher, EmulatedDispatcher
from validate.model.model import DiTMoE
from dicesim.placement import Placement
from validate.executor.runner import PlanRunner, RunRecord
from validate.model.sampler import SamplerConfig, initial_noise, sample
from validate.executor.spec_limits import check_spec_limits
from validate.executor.memprobe import LiveTensorBytes, module_nbytes
from validate.executor.tracing import RankTracer

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: hidden test hook: "RANK:STEP" makes that rank die (os._exit) or hang at the start of that step
CRASH_ENV, HANG_ENV = "DICESIM_VALIDATE_CRASH_AT", "DICESIM_VALIDATE_HANG_AT"
CRASH_EXIT_CODE = 17


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One executor run. ``batch`` is images per rank (before CFG doubles them)."""

    strategy: Strategy
    model: str = "tiny"
    num_experts: int | None = None
    steps: int = 20
    batch: int = 2
    image_size: int = 32
    seed: int = 0
    guidance_scale: float | None = 4.0
    shadow: bool = False
    group_layout: str = "contiguous"
    expert_layout: str = "modulo"
    dtype: str = "fp32"
    trace: bool = True
    checkpoint: str | None = None
    #: count the bytes of every tensor the run allocates (slow: a Python call per op; docs/memory.md)
    measure_memory: bool = False

    @property
    def preset(self) -> ModelPreset:
        return get_model(self.model, self.num_experts)

    def layout(self, world_size: int) -> ParallelLayout:
        """Groups, experts, images and communicators of ``world_size`` ranks (the strategy's family decides)."""
        return layout_for(self.strategy, world_size, self.preset.num_experts, group_layout=self.group_layout,
                          expert_layout=self.expert_layout)

    def placement(self, world_size: int) -> Placement:
        return self.layout(world_size).placement

    def check(self, world_size: int) -> None:
        """Raise ConfigError for anything wrong before a process is started."""
        preset = self.preset
        self.strategy.check_split(world_size, preset.tokens_per_image(self.image_size), heads=preset.heads)
        if self.batch < 1:
            raise ConfigError("batch", f"must be >= 1, got {self.batch}", ">= 1")
        if self.dtype not in TORCH_DTYPES or self.dtype not in DTYPE_NBYTES:
            raise ConfigError("dtype", f"unknown dtype {self.dtype!r}", tuple(TORCH_DTYPES))
        if self.checkpoint is not None and not os.path.exists(self.checkpoint):  # a FIFO: read_checkpoint refuses it
            raise ConfigError("checkpoint", f"no such file {self.checkpoint}")
        check_spec_limits(self, world_size)
        SamplerConfig(num_steps=self.steps, guidance_scale=self.guidance_scale)
        self.layout(world_size)
        build_plan(self.strategy, preset.depth, self.steps)

    def scenario(self, world_size: int, backend: str) -> dict[str, Any]:
        """JSON-ready description for trace metadata and summaries."""
        return {"model": self.preset.name, "num_experts": self.preset.num_experts, "world_size": world_size,
                "backend": backend, "batch_per_rank": self.batch, "image_size": self.image_size,
                "steps": self.steps, "seed": self.seed, "guidance_scale": self.guidance_scale,
                "dtype": self.dtype, "shadow": self.shadow, "group_layout": self.group_layout,
                "expert_layout": self.expert_layout, "strategy": self.strategy.model_dump(mode="json")}


@dataclass
class RankResult:
    """What one rank sends back: its samples, measurements and raw trace rows (picklable)."""

    rank: int
    samples_BCLL: torch.Tensor
    record: RunRecord
    trace_rows: list[tuple] = field(default_factory=list)
    device: str = "cpu"
    #: ``measure_memory``: bytes of the weights (exact) and the peak of the tensors the run allocated
    memory: dict[str, int] | None = None


def global_inputs(spec: RunSpec, num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise z_GCLL and labels y_G of every image of the run (every rank draws the same)."""
    preset = spec.preset
    z_GCLL = initial_noise(batch=num_images, channels=preset.latent_channels,
                           side=preset.latent_side(spec.image_size), seed=spec.seed)
    y_G = torch.randint(preset.num_classes, (num_images,), generator=torch.Generator().manual_seed(spec.seed + 1))
    return z_GCLL, y_G


def build_model(spec: RunSpec, expert_ids: tuple[int, ...] | None, device: torch.device) -> DiTMoE:
    """This rank's model: every dense weight, only the routed experts in ``expert_ids``."""
    model = DiTMoE.for_image(spec.preset, spec.image_size, seed=spec.seed, expert_ids=expert_ids)
    if spec.checkpoint is not None:
        from validate.model.checkpoint import load_into_model, read_checkpoint

        load_into_model(model, read_checkpoint(spec.checkpoint))
    return model.to(device=device, dtype=TORCH_DTYPES[spec.dtype]).eval()


def _image_keys(first: int, count: int, total: int, cfg: bool) -> list[int]:
    own = list(range(first, first + count))
    return own + [total + g for g in own] if cfg else own  # unconditional half: its own token keys


def sample_run(runner: Any, spec: RunSpec, z_BCLL: torch.Tensor, y_B: torch.Tensor, null_class: int,
               rank: int) -> torch.Tensor:
    """Sample ``spec``'s steps with ``runner.denoise`` (any family's runner); the test hooks of
    :data:`CRASH_ENV` / :data:`HANG_ENV` act on ``rank``."""
    denoise = runner.denoise
    crash, hang = os.environ.get(CRASH_ENV, ""), os.environ.get(HANG_ENV, "")

    def checked(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        if crash == f"{rank}:{step}":
            os._exit(CRASH_EXIT_CODE)
        if hang == f"{rank}:{step}":
            import time

            time.sleep(3600)
        return denoise(x, t, y, step)

    hooked = checked if (crash or hang) else denoise
    cfg = SamplerConfig(num_steps=spec.steps, guidance_scale=spec.guidance_scale)
    return sample(hooked, z_BCLL, y_B, config=cfg, null_class=null_class)


def _memory_probe(spec: RunSpec) -> Any:
    """A :class:`LiveTensorBytes` around the sampling loop when the spec asks for it."""
    return LiveTensorBytes() if spec.measure_memory else nullcontext()


def _memory_of(mem: Any, model: DiTMoE) -> dict[str, int] | None:
    if not isinstance(mem, LiveTensorBytes):
        return None
    return {**{f"weights_{k}_nbytes": v for k, v in module_nbytes(model).items()},
            "peak_live_nbytes": mem.peak_nbytes}


@dataclass
class GroupCache:
    """Process groups of one worker, created once per layout (every rank creates every group)."""

    timeout: Any = None  # datetime.timedelta; new_group would otherwise wait 30 minutes
    groups: dict[tuple, Any] = field(default_factory=dict)

    def group(self, layout: ParallelLayout, rank: int, purpose: str) -> Any:
        """This rank's process group for ``purpose`` (one per communicator of the layout, or ``shadow``)."""
        key = (layout.groups(), purpose)
        if key not in self.groups:
            mine = None
            for members in layout.groups():
                g = dist.new_group(list(members), timeout=self.timeout)  # collective: all ranks, same order
                if rank in members:
                    mine = g
            self.groups[key] = mine
        return self.groups[key]

    def subgroup(self, member_sets: tuple[tuple[int, ...], ...], rank: int) -> tuple[Any, int, int]:
        """This rank's group among ``member_sets`` (every rank creates every set's group, in order: new_group is
        collective), its position in it and its size (USP's Ulysses and ring groups)."""
        key = (member_sets, "subgroup")
        if key not in self.groups:
            mine = None
            for members in member_sets:
                g = dist.new_group(list(members), timeout=self.timeout)
                if rank in members:
                    mine = (g, members.index(rank), len(members))
            self.groups[key] = mine
        return self.groups[key]


def run_rank(spec: RunSpec, *, rank: int, world_size: int, device: torch.device, groups: GroupCache) -> RankResult:
    """Run ``spec`` on this rank of an initialised default process group."""
    preset = spec.preset
    layout = spec.layout(world_size)
    placement, ep_rank = layout.placement, layout.group_rank(rank)
    tracer = RankTracer(rank, device=device, enabled=spec.trace)
    if layout.replicated:
        disp = EmulatedDispatcher(placement, sink=tracer.sink, clock=tracer.clock)
        shadow = EmulatedDispatcher(placement) if spec.shadow else None
    else:
        comms = [groups.group(layout, rank, c.purpose) for c in layout.communicators]
        counts = comms[layout.comm_index(CollectiveKind.COUNTS)]
        disp = Dispatcher(placement, ep_rank, group=comms[0], count_group=counts, sink=tracer.sink, clock=tracer.clock,
                          mark=tracer.mark)
        shadow = None
        if spec.shadow:
            sg = groups.group(layout, rank, "shadow")
            shadow = Dispatcher(placement, ep_rank, group=sg, count_group=sg)
    model = build_model(spec, layout.experts_of(rank), device)
    plan = build_plan(spec.strategy, preset.depth, spec.steps)
    G = world_size * spec.batch
    z_GCLL, y_G = global_inputs(spec, G)
    images = layout.images_of(rank, spec.batch)
    mine = slice(images.start, images.stop)
    runner = PlanRunner(model=model, plan=plan, dispatcher=disp, tracer=tracer, rank=rank, shadow=shadow,
                        image_keys_B=_image_keys(images.start, len(images), G, spec.guidance_scale is not None))
    with _memory_probe(spec) as mem:
        samples = sample_run(runner, spec, z_GCLL[mine].to(device), y_G[mine].to(device), model.null_class, rank)
    return RankResult(rank=rank, samples_BCLL=samples.float().cpu(), record=runner.record,
                      trace_rows=tracer.rows(), device=str(device), memory=_memory_of(mem, model))


def run_emulated(spec: RunSpec, world_size: int, device: torch.device | str = "cpu", *,
                 probe: Callable[..., None] | None = None, transport: Any = None,
                 model: DiTMoE | None = None) -> RankResult:
    """The same plan in one process: every expert, all ``world_size * batch`` images, no communication.

    ``transport``: a :class:`validate.executor.hoststaged.HostStaged` makes every exchange move the rows
    that would cross ranks through host memory instead. ``model``: a model built for this spec's
    image size and seed, reused (e.g. across the strategies of one check).
    """
    spec.check(world_size)
    device = torch.device(device)
    G = world_size * spec.batch
    whole = replace(spec, batch=G)
    placement = whole.placement(1)  # one process holds every expert
    if transport is None:
        tracer = RankTracer(0, device=device, enabled=spec.trace)
        disp = EmulatedDispatcher(placement, sink=tracer.sink, clock=tracer.clock)
    else:
        tracer, disp = transport.attach(placement, device=device, enabled=spec.trace, num_layers=whole.preset.depth,
                                        tokens_per_image=whole.preset.tokens_per_image(spec.image_size))
        probe = transport.probe(probe)
    shadow = EmulatedDispatcher(placement) if spec.shadow else None
    model = build_model(whole, None, device) if model is None else model
    plan = build_plan(spec.strategy, whole.preset.depth, spec.steps)
    z_GCLL, y_G = global_inputs(spec, G)
    runner = PlanRunner(model=model, plan=plan, dispatcher=disp, tracer=tracer, rank=0, shadow=shadow, probe=probe,
                        image_keys_B=_image_keys(0, G, G, spec.guidance_scale is not None),
                        sync_step=None if transport is None else transport.sync_step)
    with _memory_probe(spec) as mem:
        samples = sample_run(runner, whole, z_GCLL.to(device), y_G.to(device), model.null_class, -1)
    return RankResult(rank=0, samples_BCLL=samples.float().cpu(), record=runner.record,
                      trace_rows=tracer.rows(), device=str(device), memory=_memory_of(mem, model))
