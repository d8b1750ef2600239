"""Trace runs as calibration sees them: events plus the configuration that produced them.

A :class:`TraceRun` reads the facts calibration needs out of a trace's metadata, whatever
wrote it: the executor (``validate``: ``scenario.batch_per_rank``, ``guidance_scale``, router
histogram in ``extra``), the simulator (``scenario`` is a dumped
:class:`~dicesim.scenario.Scenario`), the GPU op-timing benchmark (``strategy =
"op-timings"``) or a Kineto profile converted by :mod:`dicesim.calibrate.kineto`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dicesim.errors import ConfigError, TraceError
from dicesim.limits import MAX_WORLD_SIZE
from dicesim.models import (
    BlockWorkload,
    ModelPreset,
    block_workload,
    get_model,
)
from dicesim.plan import ParallelLayout, layout_for
from dicesim.strategy import Strategy, make_strategy, parse_strategy
from dicesim.strategy.base import DEFAULT_FAMILY
from dicesim.trace import TraceMeta, read_trace, trace_stems
from dicesim.trace.runmeta import ScenarioMeta, ep_groups, router_hist, scenario_meta


@dataclass(frozen=True, kw_only=True)
class TraceRun:
    """One traced run: its events (seconds are derived on demand) and its configuration."""

    stem: str
    path: Path
    events: pd.DataFrame
    meta: TraceMeta
    model: str
    num_experts: int
    batch: int
    image_size: int
    steps: int
    cfg: bool
    dtype: str
    world_size: int
    strategy: Strategy | None
    ep_size: int
    router_hist_WTLE: np.ndarray | None = None
    extra_experts_on_rank: int | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def preset(self) -> ModelPreset:
        return get_model(self.model, self.num_experts)

    @property
    def workload(self) -> BlockWorkload:
        return block_workload(self.preset, batch=self.batch, image_px=self.image_size, cfg=self.cfg, dtype=self.dtype)

    @property
    def experts_on_rank(self) -> int:
        """Routed experts each rank holds (all of them for the data-parallel baseline)."""
        if self.extra_experts_on_rank is not None:
            return self.extra_experts_on_rank
        return self.num_experts // max(self.ep_size, 1)

    @property
    def layout(self) -> ParallelLayout | None:
        """The run's parallel layout (:func:`trace_layout`)."""
        return trace_layout(self.strategy, self.world_size, self.num_experts)

    @property
    def experts_replicated(self) -> bool:
        """Every rank holds every expert (the data-parallel baseline)."""
        layout = self.layout
        return layout is not None and layout.replicated

    @property
    def strategy_name(self) -> str:
        return (self.strategy.name if self.strategy is not None else self.meta.strategy).rstrip("*")

    @property
    def is_timeline(self) -> bool:
        """A whole sampling run (steps of embed ... final), not isolated op timings."""
        return bool((self.events["name"] == "embed").any())

    @property
    def family(self) -> str:
        """The strategy's family (``expert_parallel``, ``sequence``, ...); the default family for a
        run whose trace names no strategy (op timings, profiles)."""
        return self.strategy.family if self.strategy is not None else DEFAULT_FAMILY

    def fields(self) -> dict[str, Any]:
        """The names ``--fit-on`` expressions may use."""
        return {"model": self.model, "batch": self.batch, "world_size": self.world_size,
                "strategy": self.strategy_name, "family": self.family, "steps": self.steps,
                "image_size": self.image_size,
                "backend": self.meta.backend, "device": self.meta.device, "stem": self.stem}


def trace_layout(strategy: Strategy | None, world_size: int, num_experts: int) -> ParallelLayout | None:
    """The layout a traced run's strategy's family gives it (``sync`` where the trace names no
    strategy); None where world size and expert count form none: an op-timing benchmark times
    one rank of a group it never builds."""
    try:
        return layout_for(strategy if strategy is not None else make_strategy("sync"), world_size, num_experts)
    except ConfigError:
        return None


def trace_strategy(sc: ScenarioMeta, meta: TraceMeta, where: Path) -> Strategy | None:
    """The strategy a trace's metadata records (its fields read strictly); None for a run without one."""
    raw = sc.strategy
    if isinstance(raw, dict):
        try:  # no family in the metadata: an expert-parallel strategy (every trace before families)
            return parse_strategy(raw, where="scenario.strategy")
        except ConfigError as exc:
            raise TraceError(where, f"metadata {exc.one_line()}") from None
    name = (raw if isinstance(raw, str) else meta.strategy).rstrip("*")
    try:
        return make_strategy(name)
    except ConfigError:  # op-timing benchmarks and profiles have no strategy
        return None


def _first(*values: Any, default: Any = None) -> Any:
    return next((v for v in values if v is not None), default)


def run_from_trace(events: pd.DataFrame, meta: TraceMeta, path: Path, stem: str) -> TraceRun:
    """Describe one trace; TraceError if its metadata lacks what calibration needs or has it
    in the wrong type, shape or range (parsed by :mod:`dicesim.trace.runmeta`)."""
    sc = scenario_meta(meta, path)
    model = sc.model or meta.model
    if not model:
        raise TraceError(path, "trace metadata names no model (scenario.model or model)")
    try:
        preset = get_model(model, sc.num_experts)
    except ConfigError as exc:
        raise TraceError(path, f"unknown model in trace metadata: {exc.one_line()}") from None
    strategy = trace_strategy(sc, meta, path)
    # op-timing benchmarks time one rank of an ep_world-way group in a single process
    world = _first(sc.world_size, sc.ep_world, meta.world_size or None, default=1)
    if not 1 <= world <= MAX_WORLD_SIZE:
        raise TraceError(path, f"metadata world_size {world} is out of range (allowed: 1..{MAX_WORLD_SIZE})")
    cfg = sc.cfg if sc.cfg is not None else ("guidance_scale" not in sc.model_fields_set or sc.guidance_scale is not None)
    ep_groups(meta, path, world_size=world)
    layout = trace_layout(strategy, world, preset.num_experts)
    return TraceRun(
        stem=stem, path=path, events=events, meta=meta, model=preset.name.split("@")[0],
        num_experts=preset.num_experts, batch=_first(sc.batch_per_rank, sc.batch, default=1),
        image_size=_first(sc.image_size, default=256), steps=_first(sc.steps, default=1),
        cfg=cfg, dtype=sc.dtype or "bf16", world_size=world, strategy=strategy,
        ep_size=layout.placement.ep_size if layout is not None else min(world, preset.num_experts),
        router_hist_WTLE=router_hist(meta, path, world_size=world, layers=preset.depth,
                                     experts=preset.num_experts),
        extra_experts_on_rank=sc.experts_per_rank,
        attrs={"recv_rows": sc.recv_rows},
    )


def _read_any(path: Path) -> tuple[pd.DataFrame, TraceMeta]:
    """A dicesim trace file, or a torch.profiler (Kineto) Chrome export."""
    from dicesim.calibrate.kineto import is_kineto, read_kineto

    if path.name.endswith((".json", ".json.gz")) and is_kineto(path):
        return read_kineto(path)
    df, meta = read_trace(path)
    return df, meta


def load_runs(paths: list[str | Path]) -> list[TraceRun]:
    """Every trace in the given directories or files, sorted by stem; TraceError if none."""
    runs: list[TraceRun] = []
    for p in map(Path, paths):
        if p.is_dir():
            items = trace_stems(p).items()
        elif p.exists():
            items = [(p.name.split(".")[0], p)]
        else:
            raise TraceError(p, "no such file or directory")
        for stem, f in items:
            df, meta = _read_any(f)
            runs.append(run_from_trace(df, meta, f, stem))
    if not runs:
        raise TraceError(", ".join(map(str, paths)), "no traces found")
    return sorted(runs, key=lambda r: (str(r.path.parent), r.stem))


_REP = re.compile(r"-r\d+$", re.ASCII)


def config_key(run: TraceRun) -> str:
    """The configuration a run measures: its stem without a repetition suffix ``-r<k>``."""
    return _REP.sub("", run.stem)
