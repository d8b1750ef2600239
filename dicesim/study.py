"""What-if studies: strategies compared along one or two axes, for one or more models, in one command.

A study is a sweep with a fixed shape: models x (up to two varying axes among topology, GPU
count, batch and image size) x strategies, with ``sync`` always present as the speedup
baseline. It runs on the sweep machinery (:func:`dicesim.sweep.run_points`: chunks on
disk, resume, Dask locally or on a cluster) with an evaluator that also keeps the busiest
link of every run, which the written summary uses to say *why* a strategy gains where it
does, and the family of parallelism of every run (:func:`parallelism`), which the report uses
to say which family wins where. :data:`DEFAULT_STUDY` is the embedded default: the built-in
topologies for XL/2 and G/2 across batch sizes, every family's comparison presets
(:data:`dicesim.strategy.COMPARE_DEFAULT`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dicesim.compare import headline_metrics, predicted_quality
from dicesim.content_key import is_file_reference
from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.limits import MAX_BATCH, MAX_IMAGE_PX, MAX_STEPS, MAX_SWEEP_POINTS, MAX_WORLD_SIZE
from dicesim.plan import PlanCache
from dicesim.progress import NO_PROGRESS, Ticker
from dicesim.scenario import Scenario, make_scenario, relative_to
from dicesim.strategy import COMPARE_DEFAULT, make_strategy
from dicesim.sweep import SweepOutcome, run_points
from dicesim.tomlio import read_toml

if TYPE_CHECKING:
    from dicesim.topology.cache import TopologyCache

#: the axes a study can vary, in the order the report uses them (first = bars, second = menu)
STUDY_AXES: tuple[str, ...] = ("topology", "world_size", "batch", "image_size")
#: topologies of the default study (every built-in machine class; the multi-node one at 16 GPUs)
DEFAULT_TOPOLOGIES: tuple[str, ...] = ("8x-rtx4090-pcie", "4x-l40s-pcie", "dgx-a100", "dgx-h100", "hgx-h200",
                                       "2x-dgx-h100-ib")


class StudyConfig(BaseModel):
    """What a study compares. Lists of length > 1 are the study's axes (at most two of
    :data:`STUDY_AXES`); an empty ``world_sizes`` means every GPU of each topology."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "default"
    models: tuple[str, ...] = Field(("XL/2", "G/2"), min_length=1)
    topologies: tuple[str, ...] = Field(DEFAULT_TOPOLOGIES, min_length=1)
    world_sizes: tuple[Annotated[int, Field(ge=1, le=MAX_WORLD_SIZE)], ...] = ()
    batches: tuple[Annotated[int, Field(ge=1, le=MAX_BATCH)], ...] = Field((8, 16, 32), min_length=1)
    image_sizes: tuple[Annotated[int, Field(ge=1, le=MAX_IMAGE_PX)], ...] = Field((256,), min_length=1)
    strategies: tuple[str, ...] = Field(COMPARE_DEFAULT, min_length=1)
    steps: int = Field(50, ge=1, le=MAX_STEPS)
    placement: Literal["contiguous", "strided"] = "contiguous"
    chunk_size: int = Field(8, ge=1, le=MAX_SWEEP_POINTS)

    @field_validator("world_sizes", "batches", "image_sizes")
    @classmethod
    def _unique_sizes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(dict.fromkeys(v))

    @field_validator("models", "topologies", "strategies")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(s.strip() for s in v if s.strip()))
        if not names:  # [" "] would otherwise leave sync alone, or nothing to study
            raise ValueError("needs at least one name that is not blank")
        return names

    def axes(self) -> list[str]:
        """The varying axes, in :data:`STUDY_AXES` order."""
        sizes = {"topology": self.topologies, "world_size": self.world_sizes, "batch": self.batches,
                 "image_size": self.image_sizes}
        return [a for a in STUDY_AXES if len(sizes[a]) > 1]

    def all_strategies(self) -> tuple[str, ...]:
        """The strategies with ``sync`` first (the baseline every speedup is over)."""
        return ("sync",) + tuple(s for s in self.strategies if s != "sync")


DEFAULT_STUDY = StudyConfig()
_ALLOWED = {"placement": ("contiguous", "strided"), "__keys__": tuple(StudyConfig.model_fields)}


def make_study(base: StudyConfig | None = None, /, **overrides: Any) -> StudyConfig:
    """``base`` (default: :data:`DEFAULT_STUDY`) with the given fields replaced, validated."""
    fields = (base or DEFAULT_STUDY).model_dump()
    fields.update({k: v for k, v in overrides.items() if v is not None})
    try:
        study = StudyConfig(**fields)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, "study", _ALLOWED) from None
    axes = study.axes()
    if len(axes) > 2:
        raise ConfigError("study", f"varies {len(axes)} axes ({', '.join(axes)}); a study varies at most two",
                          STUDY_AXES)
    size = study_size(study)
    if size > MAX_SWEEP_POINTS:
        raise ConfigError("study", f"{size:,} configurations, more than the {MAX_SWEEP_POINTS:,} a study may hold; "
                                   "split it into several studies", "see docs/limits.md")
    for name in study.all_strategies():
        make_strategy(name)
    for model in study.models:
        make_scenario(model=model, world_size=1)  # unknown model names fail here, before any work
    return study


def load_study(path: str | Path) -> StudyConfig:
    """A study TOML file: one ``[study]`` table with :class:`StudyConfig`'s fields (an empty
    table is the default study; a file without the table is refused, it would silently be too)."""
    name = Path(path).name
    doc = read_toml(path, what="study")
    unknown = sorted(set(doc) - {"study"})
    if unknown:
        raise ConfigError(f"{name}: [{unknown[0]}]", "unknown section", ("study",))
    if "study" not in doc:
        raise ConfigError(f"{name}: [study]", "is required (`dicesim study` without a file runs the default study)")
    if not isinstance(doc["study"], dict):
        raise ConfigError(f"{name}: study", "must be a table")
    fields = dict(doc["study"])
    if isinstance(fields.get("topologies"), list):  # topology files are relative to the study file
        fields["topologies"] = [relative_to(Path(path), t) if is_file_reference(t) else t
                                for t in fields["topologies"]]
    try:
        return make_study(**fields)
    except ConfigError as exc:
        raise ConfigError(name, exc.one_line()) from None


def study_size(study: StudyConfig) -> int:
    """The number of configurations, counted without building them (one GPU count per topology
    when ``world_sizes`` is empty)."""
    return (len(study.models) * len(study.topologies) * max(len(study.world_sizes), 1) * len(study.batches)
            * len(study.image_sizes) * len(study.all_strategies()))


def study_points(study: StudyConfig) -> list[dict[str, Any]]:
    """Every configuration: model x topology x GPUs x batch x image size x strategy (strategy fastest)."""
    from dicesim.topology import get_topology, world_size

    points = []
    for model in study.models:
        for topo in study.topologies:
            sizes = study.world_sizes or (world_size(get_topology(topo)),)
            for ws in sizes:
                for batch in study.batches:
                    for image in study.image_sizes:
                        points += [{"model": model, "topology": topo, "world_size": ws, "batch": batch,
                                    "image_size": image, "strategy": s} for s in study.all_strategies()]
    return points


def _topology_cache() -> TopologyCache:
    from dicesim.topology.cache import TopologyCache  # the topology package loads with the first simulation

    return TopologyCache()


@dataclass(frozen=True)
class StudyEvaluator:
    """Simulate one configuration; keep the headline metrics, the quality model's prediction and
    the busiest link (picklable). Its plans are reused across the configurations it evaluates."""

    plans: PlanCache = field(default_factory=PlanCache, compare=False)
    #: its topologies and their routes, built once and shared by the configurations (read-only)
    topologies: TopologyCache = field(default_factory=lambda: _topology_cache(), compare=False)

    def __call__(self, scenario: Scenario) -> dict[str, Any]:
        from dicesim.report.run_report import link_name
        from dicesim.sim.api import resolve_profile, simulate
        from dicesim.sim.metrics import busiest_links
        from dicesim.trust import assess_run

        G = self.topologies.graph(scenario.topology)
        profile = resolve_profile(None, scenario, G)
        result = simulate(scenario, graph=G, profile=profile, record=False, plans=self.plans,
                          topologies=self.topologies)
        summary = result.summary()
        out: dict[str, Any] = headline_metrics(summary, result.per_step)
        links = busiest_links(result.links)  # ranked once for the trust assessment and the busiest link
        trust = assess_run(scenario, G, profile, summary, result.links, topologies=self.topologies,
                           ranked=links)
        out.update(step_latency_low_s=trust.band.low_s, step_latency_high_s=trust.band.high_s,
                   band_covers=trust.band.covers, band_family=trust.band.family or "",
                   network_expert_traffic=trust.facts.crosses_network, lag_of=scenario.strategy.lag_subject)
        out["exposed_comm_share_frac"] = (out["exposed_comm_step_s"] / out["step_latency_s"]
                                          if out["step_latency_s"] > 0 else 0.0)
        if len(links):
            top = links.iloc[0]
            alike = links[(links["link_class"] == top["link_class"])
                          & (links["utilisation"] >= 0.99 * top["utilisation"])]
            out.update(busiest_link=link_name(top["src"], top["dst"]),
                       busiest_link_class=str(top["link_class"]),
                       busiest_link_utilisation=float(top["utilisation"]), busiest_link_count=float(len(alike)))
        plan = self.plans.get(scenario.strategy, scenario.preset().depth, scenario.steps)  # the run's own
        if result.lag_table is plan.lags:  # a pure function of the plan and the router share: predicted once
            out.update(self.plans.derived(plan, ("quality", scenario.routing.top1_share),
                                          lambda: predicted_quality(scenario, plan.lags)))
        else:
            out.update(predicted_quality(scenario, result.lag_table))
        out["parallelism"] = parallelism(scenario)
        # which profile timed the row, and what it rests on (topologies of one study may differ)
        out.update(profile=str(result.meta["profile"]), profile_basis=str(result.meta["profile_basis"]))
        return out


def parallelism(scenario: Scenario) -> str:
    """How a configuration splits the work: ``data_parallel`` when no rank exchanges anything with
    another (every rank holds the whole model and its own images), else its strategy's family."""
    from dicesim.plan import layout_for

    layout = layout_for(scenario.strategy, scenario.world_size, scenario.preset().num_experts,
                        group_layout=scenario.placement)
    return "data_parallel" if all(len(g) == 1 for g in layout.groups()) else type(scenario.strategy).family


def run_study(study: StudyConfig, out_dir: str | Path, *, workers: int | None = 0, scheduler: str | None = None,
              processes: bool = True,
              on_chunk: Callable[[Path, list[dict]], None] | None = None,
              ticker: Ticker = NO_PROGRESS) -> SweepOutcome:
    """Evaluate every configuration of ``study`` not already in ``out_dir`` (resumable)."""
    base = make_scenario(steps=study.steps, placement=study.placement)
    return run_points(base, study_points(study), out_dir, workers=workers, scheduler=scheduler,
                      processes=processes, chunk_size=study.chunk_size, evaluate=StudyEvaluator(),
                      on_chunk=on_chunk, ticker=ticker)


def study_table(table: pd.DataFrame) -> pd.DataFrame:
    """The successful rows with ``speedup`` over ``sync`` on the same model and scenario."""
    from dicesim.report.sweep_report import with_speedup

    return with_speedup(table)[lambda d: d["status"] == "ok"].reset_index(drop=True)
