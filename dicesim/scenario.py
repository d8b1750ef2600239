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

from dicesim.content_key import is_file_reference
from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.limits import (
    INT64_MAX, INT64_MIN, MAX_BATCH, MAX_EXPERTS, MAX_IMAGE_PX, MAX_RECORDED_EVENTS, MAX_SIM_TABLE_NBYTES, MAX_STEPS,
    MAX_WORLD_SIZE, human_bytes, recorded_events, sim_table_nbytes,
)
from dicesim.models import DTYPE_NBYTES, MODEL_NAMES, ModelPreset, get_model
from dicesim.plan import layout_for
from dicesim.strategy import ExpertParallelStrategy, Strategy, as_strategy, make_strategy, strategy_names
from dicesim.strict_table import take_table
from dicesim.tomlio import read_toml

DEFAULT_TOPOLOGY = "8x-rtx4090-pcie"
SECTIONS = ("model", "workload", "strategy", "topology", "routing", "profile")


class RoutingConfig(BaseModel):
    """Expert load: uniform, Zipf(alpha) over experts, or a measured router histogram."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["uniform", "zipf", "histogram"] = Field("uniform", description="how tokens load the experts")
    alpha: float = Field(1.0, gt=0, description="Zipf exponent of the expert load (kind = zipf)")
    histogram: Optional[str] = Field(None, description="measured router histogram: .npy, .csv (layers x experts) "
                                     "or an executor trace file/directory (kind = histogram)")
    #: share of the two copies' router weight held by the higher-scoring copy; used for the
    #: score-weighted lag. The executor's (untrained) models measure 0.63 (`small`) to 0.68
    #: (`tiny`) averaged over layers; a trained model's share is a property of its router, so
    #: 0.6 is a placeholder to replace with a measured value (see docs/model.md).
    top1_share: float = Field(0.6, ge=0.5, le=1.0, description="share of a token's router weight on its "
                              "higher-scoring copy (weights the lag; 0.6 is a placeholder, docs/model.md)")
    #: "expected": every step routes the expected counts (fast, deterministic); "multinomial":
    #: each (layer, step) draws its own counts from the load model (seeded; much slower)
    sampling: Literal["expected", "multinomial"] = Field("expected", description="expected counts every step, "
                                                         "or seeded multinomial draws per layer and step")


class Scenario(BaseModel):
    """One fully specified configuration (model x workload x strategy x topology)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = Field("XL/2", description="model preset (`dicesim presets`)")
    num_experts: Optional[int] = Field(None, ge=1, le=MAX_EXPERTS, description="routed experts, replacing the "
                                       "preset's (a what-if); a divisor or multiple of world_size")
    batch: int = Field(32, ge=1, le=MAX_BATCH, description="images per GPU (CFG doubles what travels)")
    image_size: int = Field(256, ge=1, le=MAX_IMAGE_PX, description="image side in pixels, a multiple of the "
                            "patch in pixels (16 for the /2 presets)")
    steps: int = Field(50, ge=1, le=MAX_STEPS, description="denoising steps")
    cfg: bool = Field(True, description="classifier-free guidance: the conditional and unconditional halves "
                      "travel as one batch")
    dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="activation precision: bytes moved and held")
    #: any family's config; a table of fields reads as its family's (default: expert-parallel)
    strategy: Annotated[SerializeAsAny[Strategy], BeforeValidator(as_strategy)] = Field(
        ExpertParallelStrategy(name="sync"), description="strategy preset and fields (table below)")
    topology: str = Field(DEFAULT_TOPOLOGY, description="topology preset, cluster family (`<N>x-...`) or "
                          ".toml/.graphml file")
    world_size: int = Field(8, ge=1, le=MAX_WORLD_SIZE, description="GPUs used (at most the topology's)")
    placement: Literal["contiguous", "strided"] = Field(
        "contiguous", description="with more GPUs than experts, which GPUs form an expert-parallel group: "
        "contiguous (inside a server) or strided (one GPU per server in turn)")
    routing: RoutingConfig = Field(RoutingConfig(), description="expert load (table below)")
    seed: int = Field(0, ge=0, le=INT64_MAX, description="seed of sampled routing (numpy seeds are non-negative)")
    profile: Optional[str] = Field(None, description="hardware profile: built-in name or TOML file; none = the "
                                   "best-evidenced built-in profile of the topology's GPU (`dicesim presets`)")
    interference: bool = Field(True, description="compute-communication interference: true = the profile's "
                               "factors, false = both 0, to check a prediction both ways (docs/model.md)")

    def preset(self) -> ModelPreset:
        return get_model(self.model, self.num_experts)

    def with_strategy(self, strategy: Strategy) -> "Scenario":
        return self.model_copy(update={"strategy": strategy})

    def setup_label(self) -> str:
        """Model, GPUs, machine and workload, without the strategy; every field set away from its default
        (the expert count, placement, precision, routing, profile, CFG) is named, so a what-if shows."""
        from dicesim.topology import machine_name

        return (f"{self.model}{self._model_note()} x{self.world_size} {machine_name(self.topology)} b{self.batch} "
                f"{self.image_size}px {self.steps} steps{''.join(' ' + o for o in self.overrides())}")

    def _model_note(self) -> str:
        preset = get_model(self.model)
        return f" ({self.num_experts} experts)" if self.num_experts and self.num_experts != preset.num_experts else ""

    def overrides(self) -> list[str]:
        """The non-default settings besides model, machine and workload sizes, as short labels."""
        out = []
        if self.placement != "contiguous":
            out.append(f"placement={self.placement}")
        if self.dtype != "bf16":
            out.append(self.dtype)
        if not self.cfg:
            out.append("no-cfg")
        if self.routing.kind != "uniform":
            alpha = f"({self.routing.alpha:g})" if self.routing.kind == "zipf" else ""
            out.append(f"routing={self.routing.kind}{alpha}")
        if self.profile:
            out.append(f"profile={Path(self.profile).stem if self.profile.endswith('.toml') else self.profile}")
        return out

    def label(self) -> str:
        return f"{self.setup_label()} {self.strategy.name}"


#: where each scenario field lives in a scenario file: field -> (section, key); ``strategy`` and ``routing``
#: are whole tables (their own fields), ``profile`` is ``[profile] file``
FILE_KEYS: dict[str, tuple[str, str]] = {
    "model": ("model", "name"), "num_experts": ("model", "num_experts"),
    "batch": ("workload", "batch"), "image_size": ("workload", "image_size"), "steps": ("workload", "steps"),
    "cfg": ("workload", "cfg"), "dtype": ("workload", "dtype"), "seed": ("workload", "seed"),
    "topology": ("topology", "name"), "world_size": ("topology", "world_size"),
    "placement": ("topology", "placement"), "strategy": ("strategy", "preset"), "routing": ("routing", "kind"),
    "profile": ("profile", "file"), "interference": ("profile", "interference"),
}

_ALLOWED = {
    "model": MODEL_NAMES, "dtype": tuple(DTYPE_NBYTES), "placement": ("contiguous", "strided"),
    "kind": ("uniform", "zipf", "histogram"), "sampling": ("expected", "multinomial"), "preset": strategy_names(),
}


def validate_scenario(sc: Scenario) -> Scenario:
    """Cross-field checks that need more than one field. Returns the scenario unchanged."""
    preset = sc.preset()
    layout_for(sc.strategy, sc.world_size, preset.num_experts, group_layout=sc.placement)
    sc.strategy.check_split(sc.world_size, preset.tokens_per_image(sc.image_size), heads=preset.heads)
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


def strategy_refusal(sc: Scenario, strategy: Strategy) -> str:
    """Why ``strategy`` cannot split ``sc``'s work (its ``check_split`` and ``check_model``, one line), or ''.
    What a default listing (``dicesim compare`` without ``--strategies``, ``recommend``'s alternatives) uses to
    leave a preset out with its reason instead of failing: e.g. ``ulysses`` on a model whose heads do not
    split over the GPUs."""
    preset = sc.preset()
    try:
        strategy.check_split(sc.world_size, preset.tokens_per_image(sc.image_size), heads=preset.heads)
        strategy.check_model(preset.depth)
    except ConfigError as exc:
        return exc.one_line()
    return ""


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
        raise config_error_from_pydantic(exc, "", _ALLOWED, model=Scenario) from None
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
            raise config_error_from_pydantic(exc, "routing", _ALLOWED, model=RoutingConfig) from None
    profile = doc.get("profile")
    if isinstance(profile, dict):
        prof = take_table(profile, ("file", "name", "interference"), "profile")
        fields["interference"] = prof.get("interference")
        profile = prof.get("file") or prof.get("name")
    if profile is not None:
        fields["profile"] = profile
    return make_scenario(**fields)


def relative_to(path: Path, value: object) -> object:
    """A file name ``value`` as written in the file ``path``: absolute, relative to that file."""
    if not isinstance(value, str) or not value or not path.exists():
        return value
    try:
        return value if Path(value).is_absolute() else str((path.parent / value).resolve())
    except (OSError, ValueError):  # a NUL in the name: the reader names the problem
        return value


def resolve_paths(doc: dict, path: Path) -> dict:
    """``doc`` (a parsed scenario, or a sweep's ``[base]`` tables) with every file it names --
    topology, profile, router histogram -- made absolute relative to ``path``, the file that
    names them (the working directory has no say). Returns a new dict; ``doc`` is unchanged."""
    if not path.exists():
        return doc
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in doc.items()}

    def rebase(value: object) -> object:
        return relative_to(path, value)

    topo = out.get("topology")
    if isinstance(topo, dict):
        for key in ("name", "file"):
            value = topo.get(key)
            if key in topo and (key == "file" or str(value).endswith((".toml", ".graphml"))):
                topo[key] = rebase(value)
    prof = out.get("profile")
    if isinstance(prof, dict) and "file" in prof and is_file_reference(prof["file"]):
        prof["file"] = rebase(prof["file"])
    elif is_file_reference(prof):
        out["profile"] = rebase(prof)
    routing = out.get("routing")
    if isinstance(routing, dict) and routing.get("histogram"):
        routing["histogram"] = rebase(routing["histogram"])
    return out


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file; every error names the file."""
    p = Path(path)
    with naming_file(p):
        return scenario_from_dict(resolve_paths(read_toml(p, what="scenario"), p), p)


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
