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
from pydantic import ValidationError

from dicesim.errors import ConfigError, TraceError
from dicesim.models import (
    DTYPE_NBYTES,
    BlockWorkload,
    ModelPreset,
    block_workload,
    get_model,
)
from dicesim.strategy import StrategyConfig, make_strategy
from dicesim.trace import TraceMeta, read_trace, trace_stems


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
    strategy: StrategyConfig | None
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
    def strategy_name(self) -> str:
        return (self.strategy.name if self.strategy is not None else self.meta.strategy).rstrip("*")

    @property
    def is_timeline(self) -> bool:
        """A whole sampling run (steps of embed ... final), not isolated op timings."""
        return bool((self.events["name"] == "embed").any())

    def fields(self) -> dict[str, Any]:
        """The names ``--fit-on`` expressions may use."""
        return {"model": self.model, "batch": self.batch, "world_size": self.world_size,
                "strategy": self.strategy_name, "steps": self.steps, "image_size": self.image_size,
                "backend": self.meta.backend, "device": self.meta.device, "stem": self.stem}


def _get(d: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def _strategy(meta: TraceMeta) -> StrategyConfig | None:
    raw = meta.scenario.get("strategy")
    if isinstance(raw, dict):
        try:
            return StrategyConfig(**raw)
        except ValidationError as exc:
            raise TraceError("<trace meta>", f"scenario.strategy is not a strategy: {exc.errors()[0]['msg']}") from None
    name = (raw if isinstance(raw, str) else meta.strategy).rstrip("*")
    try:
        return make_strategy(name)
    except ConfigError:  # op-timing benchmarks and profiles have no strategy
        return None


def _router_hist(extra: dict, where: Path) -> np.ndarray | None:
    hist = extra.get("router_hist")
    if hist is None:
        return None
    arr = np.asarray(hist, dtype=np.int64)
    axes = extra.get("router_hist_axes", ["rank", "step", "layer", "expert"])
    if arr.ndim != 4 or list(axes) != ["rank", "step", "layer", "expert"]:
        raise TraceError(where, f"router histogram has shape {arr.shape} and axes {axes}, "
                                "expected [rank, step, layer, expert]")
    return arr


def run_from_trace(events: pd.DataFrame, meta: TraceMeta, path: Path, stem: str) -> TraceRun:
    """Describe one trace; TraceError if its metadata lacks what calibration needs."""
    sc = meta.scenario
    model = _get(sc, "model", default=meta.model)
    if not model:
        raise TraceError(path, "trace metadata names no model (scenario.model or model)")
    try:
        preset = get_model(model, _get(sc, "num_experts"))
    except ConfigError as exc:
        raise TraceError(path, f"unknown model in trace metadata: {exc}") from None
    strategy = _strategy(meta)
    # op-timing benchmarks time one rank of an ep_world-way group in a single process
    world = int(_get(sc, "world_size", "ep_world", default=meta.world_size) or 1)
    dtype = str(_get(sc, "dtype", default="bf16"))
    if dtype not in DTYPE_NBYTES:
        raise TraceError(path, f"unknown dtype {dtype!r} in trace metadata")
    cfg = bool(_get(sc, "cfg", default=sc.get("guidance_scale", 1.0) is not None))
    if "guidance_scale" in sc and "cfg" not in sc:
        cfg = sc["guidance_scale"] is not None
    dp = strategy is not None and strategy.scheme == "data_parallel"
    ep = 1 if dp else min(world, preset.num_experts)
    experts_on_rank = _get(sc, "experts_per_rank")
    return TraceRun(
        stem=stem, path=path, events=events, meta=meta, model=preset.name.split("@")[0],
        num_experts=preset.num_experts, batch=int(_get(sc, "batch_per_rank", "batch", default=1)),
        image_size=int(_get(sc, "image_size", default=256)), steps=int(_get(sc, "steps", default=1)),
        cfg=cfg, dtype=dtype, world_size=world, strategy=strategy, ep_size=ep,
        router_hist_WTLE=_router_hist(meta.extra, path),
        extra_experts_on_rank=None if experts_on_rank is None else int(experts_on_rank),
        attrs={"recv_rows": sc.get("recv_rows")},
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


_REP = re.compile(r"-r\d+$")


def config_key(run: TraceRun) -> str:
    """The configuration a run measures: its stem without a repetition suffix ``-r<k>``."""
    return _REP.sub("", run.stem)
