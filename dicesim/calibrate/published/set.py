"""The published-measurement validation set (``traces/published/*.toml``): schema and loader.

One file per hardware family; each ``[[figure]]`` is one published number: the hardware
(GPU, count, nodes, interconnect, and the ``topology`` it is simulated on: a published machine
of :mod:`dicesim.topology.machines` or a preset), the operation (an nccl-tests collective and
its message size, or a DeepEP dispatch/combine and its setting), the metric as the benchmark
defines it, the figure with its unit, the exact text it was read from (``quote``) and its
source (kind, title, URL or locator, date). ``role`` names the built-in split: the NCCL model
shipped with dicesim is fitted on the ``role = "fit"`` figures and predicts the ``"check"``
ones. The schema is ``dicesim-published/1``; docs/accuracy.md lists every figure.

Everything is validated when read; a problem is one line naming the file, the figure and the
field, with the allowed values.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.limits import MAX_EXPERTS, physical_problem
from dicesim.sim.microbench.collective_ops import OPERATIONS
from dicesim.sim.microbench.deepep import DeepEPConfig
from dicesim.tomlio import read_toml

SCHEMA = "dicesim-published/1"
NCCL_OPS = ("all_to_all", "all_reduce")
#: metric -> (unit, operations it applies to); nccl-tests busbw/algbw/time and DeepEP's logical bandwidths
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "busbw": ("GB/s", NCCL_OPS), "algbw": ("GB/s", NCCL_OPS), "time": ("us", NCCL_OPS),
    "deepep_nvl": ("GB/s", ("deepep_dispatch", "deepep_combine")),
    "deepep_rdma": ("GB/s", ("deepep_dispatch", "deepep_combine")),
}
#: fields a ``--fit-on`` expression may name
FIELDS = ("id", "role", "family", "gpu", "gpus", "nodes", "operation", "metric", "topology", "kind")
DEFAULT_FIT_ON = 'role == "fit"'
_ID = r"^[a-z0-9][a-z0-9._-]*$"
_DATE = r"^\d{4}(-\d{2}(-\d{2})?)?$"


class Source(BaseModel):
    """Where a figure was published: kind, title, URL (or a locator where none resolves), date."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["issue", "blog", "readme", "docs"]
    title: str = Field(min_length=1)
    url: str = Field(min_length=1)
    locator: str = Field(min_length=1)
    date: str = Field(pattern=_DATE)
    date_note: str = ""


class DeepEPSetting(BaseModel):
    """The DeepEP benchmark setting of a dispatch/combine figure (see :class:`DeepEPConfig`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # DeepEP's benchmarks use 4096 tokens, hidden 7168, top-8 of 256 experts: the bounds keep
    # every byte count of the setting far inside float64 and int64
    tokens: int = Field(gt=0, le=1 << 24)
    hidden: int = Field(gt=0, le=1 << 16)
    topk: int = Field(gt=0, le=MAX_EXPERTS)
    experts: int = Field(gt=0, le=MAX_EXPERTS)
    topk_groups: int = Field(default=0, ge=0, le=MAX_EXPERTS)
    dispatch_dtype: Literal["fp8", "bf16"] = "fp8"

    def config(self) -> DeepEPConfig:
        elem = {"fp8": 1 + 4 / 128, "bf16": 2.0}[self.dispatch_dtype]
        return DeepEPConfig(tokens=self.tokens, hidden=self.hidden, topk=self.topk, experts=self.experts,
                            topk_groups=self.topk_groups, dispatch_elem_nbytes=elem)


class Figure(BaseModel):
    """One published number and everything needed to simulate and cite it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_ID)
    role: Literal["fit", "check"]
    family: Literal["consumer-pcie", "nvswitch", "infiniband"]
    gpu: str = Field(min_length=1)
    gpus: int = Field(ge=1)
    nodes: int = Field(ge=1)
    interconnect: str = Field(min_length=1)
    topology: str = Field(min_length=1)
    operation: Literal["all_to_all", "all_reduce", "deepep_dispatch", "deepep_combine"]
    nbytes: int = Field(default=0, ge=0)
    metric: Literal["busbw", "algbw", "time", "deepep_nvl", "deepep_rdma"]
    value: float = Field(gt=0)
    unit: Literal["GB/s", "us"]
    value_range: tuple[float, float] | None = None
    quote: str = Field(min_length=1)
    notes: str = ""
    source: Source
    deepep: DeepEPSetting | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Figure":
        unit, ops = METRICS[self.metric]
        if self.operation not in ops:
            raise ValueError(f"metric {self.metric!r} does not apply to {self.operation!r} (allowed: {', '.join(ops)})")
        if self.unit != unit:
            raise ValueError(f"unit of {self.metric!r} must be {unit!r}, got {self.unit!r}")
        # the figure, its range and its message size within their physical ranges
        # (dicesim.limits.PHYSICAL): a value of 1e308 GB/s overflowed to inf in SI units
        quantity = "published_GBps" if self.unit == "GB/s" else "published_us"
        for name, v in (("value", self.value), *zip(("value_range[0]", "value_range[1]"), self.value_range or ())):
            problem = physical_problem(quantity, v)
            if problem:
                raise ValueError(f"{name}: {problem}")
        if self.nbytes and physical_problem("message_nbytes", self.nbytes):
            raise ValueError(f"nbytes: {physical_problem('message_nbytes', self.nbytes)}")
        is_deepep = self.operation.startswith("deepep")
        if is_deepep and self.deepep is None:
            raise ValueError(f"{self.operation} needs a [figure.deepep] table")
        if not is_deepep and self.deepep is not None:
            raise ValueError("[figure.deepep] only applies to deepep operations")
        if not is_deepep and self.nbytes <= 0:
            raise ValueError("nbytes must be > 0 for an nccl-tests operation")
        if self.value_range is not None and not self.value_range[0] <= self.value <= self.value_range[1]:
            raise ValueError(f"value {self.value} is outside value_range {list(self.value_range)}")
        return self

    def fields(self) -> dict[str, Any]:
        """The values a ``--fit-on`` expression can test (:data:`FIELDS`)."""
        return {"id": self.id, "role": self.role, "family": self.family, "gpu": self.gpu, "gpus": self.gpus,
                "nodes": self.nodes, "operation": self.operation, "metric": self.metric,
                "topology": self.topology, "kind": self.source.kind}

    @property
    def value_si(self) -> float:
        """The figure in SI units: bytes/s for bandwidths, seconds for times."""
        return self.value * (1e9 if self.unit == "GB/s" else 1e-6)


def _check_machine(fig: Figure, where: str) -> None:
    from dicesim.topology import num_servers, world_size
    from dicesim.topology.machines import get_machine

    try:
        G = get_machine(fig.topology)
    except ConfigError as exc:
        raise ConfigError(f"{where}.topology", str(exc).split(": ", 1)[-1]) from None
    if fig.gpus > world_size(G):
        raise ConfigError(f"{where}.gpus", f"{fig.gpus} GPUs but topology {fig.topology!r} has {world_size(G)}")
    servers = num_servers(G) if fig.operation.startswith("deepep") else 1
    if fig.operation.startswith("deepep") and (fig.gpus != world_size(G) or fig.nodes != servers):
        raise ConfigError(f"{where}.gpus", f"a DeepEP figure uses the whole topology ({world_size(G)} GPUs on "
                                           f"{servers} nodes), got {fig.gpus} GPUs on {fig.nodes} nodes")


def parse_file(path: str | Path) -> list[Figure]:
    """Validate one published TOML file; every problem is one line naming file, figure and field."""
    p = Path(path)
    data = read_toml(p, what="published set", error=lambda problem: ConfigError(str(p), problem))
    if data.get("schema") != SCHEMA:
        raise ConfigError(f"{p}: schema", f"must be {SCHEMA!r}, got {data.get('schema')!r}")
    extra = sorted(set(data) - {"schema", "figure"})
    if extra:
        raise ConfigError(f"{p}: {extra[0]}", "unknown top-level key", ("schema", "figure"))
    items = data.get("figure")
    if not isinstance(items, list) or not items or not all(isinstance(x, dict) for x in items):
        raise ConfigError(f"{p}: figure", "needs at least one [[figure]] table")
    out = []
    for i, item in enumerate(items):
        where = f"{p}: figure[{i}]" + (f" ({item['id']})" if isinstance(item.get("id"), str) else "")
        try:
            fig = Figure(**item)
        except ValidationError as exc:
            raise config_error_from_pydantic(exc, where, model=Figure, allowed={"__keys__": tuple(Figure.model_fields),
                                                          "operation": OPERATIONS, "metric": tuple(METRICS)}) from None
        _check_machine(fig, where)
        out.append(fig)
    return out


def load_published(paths: Iterable[str | Path]) -> list[Figure]:
    """Every figure of the given files and directories (``*.toml``, sorted); ids must be unique."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                raise ConfigError(str(p), "directory holds no published *.toml file")
            files += found
        else:
            files.append(p)
    figs: list[Figure] = []
    seen: dict[str, Path] = {}
    for f in files:
        for fig in parse_file(f):
            if fig.id in seen:
                raise ConfigError(f"{f}: figure {fig.id}", f"duplicate id (also in {seen[fig.id]})")
            seen[fig.id] = f
            figs.append(fig)
    return figs
