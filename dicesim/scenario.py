"""Scenario configs: what to simulate or run, read from TOML and validated at the boundary.

A scenario file has sections ``[model]``, ``[workload]``, ``[strategy]``, ``[topology]``,
``[routing]`` (all optional; defaults give the project's default study: XL/2 on
``8x-rtx4090-pcie``, 8 GPUs, batch 32, 256 px, 50 steps). Every problem becomes one
:class:`~dicesim.errors.ConfigError` line naming the field and the allowed values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, ValidationError

from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.limits import (
    INT64_MAX, INT64_MIN, MAX_BATCH, MAX_EXPERTS, MAX_IMAGE_PX, MAX_RECORDED_EVENTS, MAX_SIM_TABLE_NBYTES, MAX_STEPS,
    MAX_WORLD_SIZE, human_bytes, recorded_events, sim_table_nbytes,
)
from dicesim.models import DTYPE_NBYTES, MODEL_NAMES, ModelPreset, get_model
from dicesim.plan import layout_for
from dicesim.strategy import ExpertParallelStrategy, Strategy, as_strategy, make_strategy, strategy_names
from dicesim.tomlio import read_toml

DEFAULT_TOPOLOGY = "8x-rtx4090-pcie"
SECTIONS = ("model", "workload", "strategy", "topology", "routing", "profile")


class RoutingConfig(BaseModel):
    """Expert load: uniform, Zipf(alpha) over experts, or a measured router histogram."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["uniform", "zipf", "histogram"] = "uniform"
    alpha: float = Field(1.0, gt=0)
    histogram: Optional[str] = None  # .npy / .csv / trace directory with a router histogram
    #: share of the two copies' router weight held by the higher-scoring copy; used for the
    #: score-weighted lag. The executor's (untrained) models measure 0.63 (`small`) to 0.68
    #: (`tiny`) averaged over layers; a trained model's share is a property of its router, so
    #: 0.6 is a placeholder to replace with a measured value (see docs/model.md).
    top1_share: float = Field(0.6, ge=0.5, le=1.0)
    #: "expected": every step routes the expected counts (fast, deterministic); "multinomial":
    #: each (layer, step) draws its own counts from the load model (seeded; much slower)
    sampling: Literal["expected", "multinomial"] = "expected"


class Scenario(BaseModel):
    """One fully specified configuration (model x workload x strategy x topology)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = "XL/2"
    num_experts: Optional[int] = Field(None, ge=1, le=MAX_EXPERTS)
    batch: int = Field(32, ge=1, le=MAX_BATCH)  # images per rank (CFG doubles what travels)
    image_size: int = Field(256, ge=1, le=MAX_IMAGE_PX)  # the preset checks it is a multiple of its patch in pixels
    steps: int = Field(50, ge=1, le=MAX_STEPS)
    cfg: bool = True
    dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    #: any family's config; a table of fields reads as its family's (default: expert-parallel)
    strategy: Annotated[SerializeAsAny[Strategy], BeforeValidator(as_strategy)] = ExpertParallelStrategy(name="sync")
    topology: str = DEFAULT_TOPOLOGY
    world_size: int = Field(8, ge=1, le=MAX_WORLD_SIZE)
    placement: Literal["contiguous", "strided"] = "contiguous"
    routing: RoutingConfig = RoutingConfig()
    seed: int = Field(0, ge=0, le=INT64_MAX)  # numpy seeds are non-negative
    profile: Optional[str] = None  # hardware profile TOML or name; None = the GPU's best-evidenced built-in
    #: False: run with both interference factors of the profile at 0 (compute not slowed by
    #: communication, communication not slowed by compute), to check a prediction both ways
    #: (docs/model.md "Interference"); True: the profile's values
    interference: bool = True

    def preset(self) -> ModelPreset:
        return get_model(self.model, self.num_experts)

    def with_strategy(self, strategy: Strategy) -> "Scenario":
        return self.model_copy(update={"strategy": strategy})

    def setup_label(self) -> str:
        """Model, GPUs, topology and workload, without the strategy."""
        return f"{self.model} x{self.world_size} {self.topology} b{self.batch} {self.image_size}px {self.steps} steps"

    def label(self) -> str:
        return f"{self.setup_label()} {self.strategy.name}"


_ALLOWED = {
    "model": MODEL_NAMES, "dtype": tuple(DTYPE_NBYTES), "placement": ("contiguous", "strided"),
    "kind": ("uniform", "zipf", "histogram"), "sampling": ("expected", "multinomial"), "preset": strategy_names(),
}


def validate_scenario(sc: Scenario) -> Scenario:
    """Cross-field checks that need more than one field. Returns the scenario unchanged."""
    preset = sc.preset()
    layout_for(sc.strategy, sc.world_size, preset.num_experts, group_layout=sc.placement)
    sc.strategy.check_split(sc.world_size, preset.tokens_per_image(sc.image_size))
    sc.strategy.check_model(preset.depth)
    from dicesim.topology import topology_gpus

    gpus = topology_gpus(sc.topology)
    if sc.world_size > gpus:
        raise ConfigError("world_size", f"{sc.world_size} exceeds the {gpus} GPUs of topology {sc.topology!r}",
                          f"1..{gpus}")
    if sc.routing.kind == "histogram" and not sc.routing.histogram:
        raise ConfigError("routing.histogram", "is required when routing.kind = 'histogram'")
    _check_strategy_ints(sc)
    check_run_size(sc)
    return sc


def _check_strategy_ints(sc: Scenario) -> None:
    # strategy counts from flags or files reach numpy and torch seeds: keep them inside int64
    for name, value in sc.strategy.model_dump().items():
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and not INT64_MIN <= v <= INT64_MAX:
                raise ConfigError(f"strategy.{name}", f"{v} does not fit 64 bits", f"integers up to {INT64_MAX}")


def check_run_size(sc: Scenario, *, record: bool = False) -> None:
    """ConfigError when simulating ``sc`` would not fit in memory (limits in docs/limits.md):
    the routing tables always, the event table when ``record``."""
    preset = sc.preset()
    group = min(sc.world_size, preset.num_experts)
    what = f"{sc.world_size} GPUs x {sc.steps} steps x {preset.depth} layers"
    nbytes = sim_table_nbytes(layers=preset.depth, steps=sc.steps, world_size=sc.world_size,
                              experts=preset.num_experts, group_size=group,
                              sampled=sc.routing.sampling == "multinomial")
    if nbytes > MAX_SIM_TABLE_NBYTES:
        raise ConfigError("scenario", f"{what} x {preset.num_experts} experts needs {human_bytes(nbytes)} of routing "
                          f"tables, over the {human_bytes(MAX_SIM_TABLE_NBYTES)} limit; use fewer steps or GPUs",
                          "see docs/limits.md")
    events = recorded_events(layers=preset.depth, steps=sc.steps, world_size=sc.world_size)
    if record and events > MAX_RECORDED_EVENTS:
        raise ConfigError("scenario", f"{what} records about {events:,} events, over the {MAX_RECORDED_EVENTS:,} "
                          "limit of a trace; simulate without --out or with fewer steps", "see docs/limits.md")


def make_scenario(**fields: object) -> Scenario:
    """Build and validate a scenario from keyword fields (``strategy`` may be a preset name)."""
    strategy = fields.pop("strategy", None)
    if isinstance(strategy, str):
        fields["strategy"] = make_strategy(strategy)
    elif strategy is not None:
        fields["strategy"] = strategy
    try:
        sc = Scenario(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, "", _ALLOWED) from None
    return validate_scenario(sc)


def _section(doc: dict, name: str, path: Path) -> dict:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path.name}: [{name}]", f"must be a table, got {type(value).__name__}")
    return dict(value)


def scenario_from_dict(doc: dict, path: Path = Path("<scenario>")) -> Scenario:
    """Map the sectioned TOML document onto a :class:`Scenario`."""
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path.name}: [{unknown[0]}]", "unknown section", SECTIONS)
    model, work, strat = _section(doc, "model", path), _section(doc, "workload", path), _section(doc, "strategy", path)
    topo, routing = _section(doc, "topology", path), _section(doc, "routing", path)
    fields: dict = {}
    fields.update({"model": model.pop("name", None), "num_experts": model.pop("num_experts", None)})
    if model:
        raise ConfigError(f"model.{next(iter(model))}", "unknown key", ("name", "num_experts"))
    for key in ("batch", "image_size", "steps", "cfg", "dtype", "seed"):
        fields[key] = work.pop(key, None)
    if work:
        raise ConfigError(f"workload.{next(iter(work))}", "unknown key",
                          ("batch", "image_size", "steps", "cfg", "dtype", "seed"))
    fields["topology"] = topo.pop("name", None) or topo.pop("file", None)
    fields["world_size"] = topo.pop("world_size", None)
    fields["placement"] = topo.pop("placement", None)
    if topo:
        raise ConfigError(f"topology.{next(iter(topo))}", "unknown key", ("name", "file", "world_size", "placement"))
    if fields["topology"] and str(fields["topology"]).endswith((".toml", ".graphml")):
        fields["topology"] = str((path.parent / fields["topology"]).resolve()) if path.exists() else fields["topology"]
    preset = strat.pop("preset", None)
    if preset is not None and not isinstance(preset, str):
        raise ConfigError("strategy.preset", f"must be a preset name, got {type(preset).__name__}", strategy_names())
    label = strat.pop("name", None)  # a label, not make_strategy's preset argument
    fields["strategy"] = make_strategy(preset, **strat) if (preset or strat or label is not None) else None
    if label is not None:
        fields["strategy"] = fields["strategy"].model_copy(update={"name": str(label)})
    if routing:
        try:
            fields["routing"] = RoutingConfig(**routing)
        except ValidationError as exc:
            raise config_error_from_pydantic(exc, "routing", _ALLOWED) from None
    profile = doc.get("profile")
    if isinstance(profile, dict):
        prof = dict(profile)
        fields["profile"] = prof.pop("file", None) or prof.pop("name", None)
        fields["interference"] = prof.pop("interference", None)
        if prof:
            raise ConfigError(f"profile.{next(iter(prof))}", "unknown key", ("file", "name", "interference"))
    elif profile is not None:
        fields["profile"] = profile
    return make_scenario(**fields)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file; every error names the file."""
    p = Path(path)
    with naming_file(p):
        return scenario_from_dict(read_toml(p, what="scenario"), p)


@contextmanager
def naming_file(path: Path) -> Iterator[None]:
    """Prefix a ConfigError raised inside with ``path``'s name unless it already names it."""
    try:
        yield
    except ConfigError as exc:
        line = exc.one_line()
        if line.startswith(f"{path.name}: ") or line.startswith(f"{path}: "):
            raise
        raise ConfigError(path.name, line) from None
