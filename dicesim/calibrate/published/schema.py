"""One published collective figure: the schema ``dicesim-published/2`` (``/1`` read as a subset).

A figure is one published number: the hardware (GPU, count, nodes, interconnect, and the
``topology`` it is simulated on: a machine of :mod:`dicesim.topology.machines` or a preset), the
operation (an nccl-tests collective and its message size, DeepEP's normal dispatch/combine or its
low-latency kernels and their setting), the metric as the benchmark defines it, the figure with
its unit, the exact text it was read from (``quote``) and its source (kind, title, URL or locator,
date). Schema ``/2`` adds what the fitted/held-out rules need (:mod:`.rules`):

- ``evidence``: ``measurement`` or ``statement`` (a sentence such as "should achieve up to 48-49 GB/s");
  statements get ``role = "statement"`` and never enter an error statistic;
- ``group``: the run the figure comes from, ``<source>:<run>``; the part before ``:`` is the
  independence unit (a fitted parameter must rest on two of them);
- ``table`` and ``row``: the published table the run is a row (or column) of and its position
  there, so that neighbouring runs are known;
- ``role``: ``fit`` (the built-in split fits on it), ``check`` (held out), ``exclude`` (same run as,
  or the neighbour of, a fitted figure: neither fitted nor counted; ``exclude_reason`` says which)
  or ``statement``;
- ``dup_of``: the figure this one reads a second time (one sentence read at two GPU counts): it
  never counts;
- ``constrains`` (what a fitted figure is meant to pin), ``requires`` (what the prediction lacks,
  shown beside it), ``value_std`` (the source's own spread).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dicesim.limits import MAX_EXPERTS, physical_problem
from dicesim.sim.microbench.deepep import DeepEPConfig
from dicesim.sim.microbench.deepep_ll import LowLatencyConfig

SCHEMAS = ("dicesim-published/1", "dicesim-published/2")
SCHEMA = SCHEMAS[-1]
#: the step-level set's figures and its model list (:mod:`.step_level`); they may sit among collective files
STEP_SCHEMA = "dicesim-published-steps/1"
STEP_SCHEMAS = (STEP_SCHEMA, "dicesim-published-models/1")
NCCL_OPS = ("all_to_all", "all_reduce")
DEEPEP_OPS = ("deepep_dispatch", "deepep_combine")
#: low-latency kernels; ``deepep_ll_round`` is a dispatch then a combine, as test_low_latency.py times them together
LL_OPS = ("deepep_ll_dispatch", "deepep_ll_combine", "deepep_ll_round")
#: metric -> (unit, operations it applies to); nccl-tests busbw/algbw/time, DeepEP's logical bandwidths, kernel times
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "busbw": ("GB/s", NCCL_OPS), "algbw": ("GB/s", NCCL_OPS), "time": ("us", NCCL_OPS + LL_OPS),
    "deepep_nvl": ("GB/s", DEEPEP_OPS), "deepep_rdma": ("GB/s", DEEPEP_OPS),
}
#: fields a ``--fit-on`` expression may name
FIELDS = ("id", "role", "family", "gpu", "gpus", "nodes", "operation", "metric", "topology", "kind", "source",
          "evidence")
DEFAULT_FIT_ON = 'role == "fit"'
FAMILIES = ("consumer-pcie", "nvswitch", "infiniband", "roce")
_ID = r"^[a-z0-9][a-z0-9._-]*$"
_DATE = r"^\d{4}(-\d{2}(-\d{2})?)?$"
_GROUP = r"^[^:\s]+:[^:\s]+$"


class Source(BaseModel):
    """Where a figure was published: kind, title, URL (or a locator where none resolves), date."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["issue", "blog", "readme", "docs"]
    title: str = Field(min_length=1)
    url: str = Field(min_length=1)
    locator: str = Field(min_length=1)
    date: str = Field(pattern=_DATE)
    date_note: str = ""

    @property
    def opens(self) -> bool:
        """Whether a reader can open the URL (an http(s) address, not an 'unresolved: ...' note)."""
        return self.url.startswith(("https://", "http://"))


class DeepEPSetting(BaseModel):
    """The DeepEP benchmark setting (normal kernels: :class:`DeepEPConfig`; low-latency: :class:`LowLatencyConfig`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # DeepEP's benchmarks use 4096 tokens, hidden 7168, top-8 of 256 experts: the bounds keep
    # every byte count of the setting far inside float64 and int64
    tokens: int = Field(gt=0, le=1 << 24)
    hidden: int = Field(gt=0, le=1 << 16)
    topk: int = Field(gt=0, le=MAX_EXPERTS)
    experts: int = Field(gt=0, le=MAX_EXPERTS)
    topk_groups: int = Field(default=0, ge=0, le=MAX_EXPERTS)
    dispatch_dtype: Literal["fp8", "bf16"] = "fp8"
    ll_transport: Literal["rdma", "nvlink+rdma"] | None = None

    def config(self) -> DeepEPConfig:
        elem = {"fp8": 1 + 4 / 128, "bf16": 2.0}[self.dispatch_dtype]
        return DeepEPConfig(tokens=self.tokens, hidden=self.hidden, topk=self.topk, experts=self.experts,
                            topk_groups=self.topk_groups, dispatch_elem_nbytes=elem)

    def low_latency(self) -> LowLatencyConfig:
        return LowLatencyConfig(tokens=self.tokens, hidden=self.hidden, topk=self.topk,
                                transport=self.ll_transport or "nvlink+rdma")


class Figure(BaseModel):
    """One published number and everything needed to simulate, cite and place it in a split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_ID)
    role: Literal["fit", "check", "exclude", "statement"]
    evidence: Literal["measurement", "statement"] = "measurement"
    group: str = Field(pattern=_GROUP)
    table: str = ""
    row: int | None = Field(default=None, ge=0)
    constrains: tuple[str, ...] = ()
    exclude_reason: str = ""
    dup_of: str = ""
    requires: tuple[str, ...] = ()
    family: Literal["consumer-pcie", "nvswitch", "infiniband", "roce"]
    gpu: str = Field(min_length=1)
    gpus: int = Field(ge=2, strict=True)  # a collective on one GPU moves nothing (and `true` is no count)
    nodes: int = Field(ge=1, strict=True)
    interconnect: str = Field(min_length=1)
    topology: str = Field(min_length=1)
    operation: Literal["all_to_all", "all_reduce", "deepep_dispatch", "deepep_combine",
                       "deepep_ll_dispatch", "deepep_ll_combine", "deepep_ll_round"]
    nbytes: int = Field(default=0, ge=0)
    metric: Literal["busbw", "algbw", "time", "deepep_nvl", "deepep_rdma"]
    value: float = Field(gt=0)
    value_std: float | None = Field(default=None, ge=0)
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
        # the figure, its spread, its range and its message size within their physical ranges
        # (dicesim.limits.PHYSICAL): a value of 1e308 GB/s overflowed to inf in SI units
        quantity = "published_GBps" if self.unit == "GB/s" else "published_us"
        spread = (("value_std", self.value_std),) if self.value_std else ()
        for name, v in (("value", self.value), *spread,
                        *zip(("value_range[0]", "value_range[1]"), self.value_range or ())):
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
        if self.operation in LL_OPS and self.deepep is not None and self.deepep.ll_transport is None:
            raise ValueError(f"{self.operation} needs deepep.ll_transport ('rdma' or 'nvlink+rdma')")
        if not is_deepep and self.nbytes <= 0:
            raise ValueError("nbytes must be > 0 for an nccl-tests operation")
        if self.value_range is not None and not self.value_range[0] <= self.value <= self.value_range[1]:
            raise ValueError(f"value {self.value} is outside value_range {list(self.value_range)}")
        if (self.role == "statement") != (self.evidence == "statement"):
            raise ValueError("a statement has role = \"statement\" and evidence = \"statement\"; nothing else does")
        if (self.role == "exclude") != bool(self.exclude_reason):
            raise ValueError("exclude_reason is required with role = \"exclude\" and only there")
        if self.dup_of and (self.role != "exclude" or self.dup_of == self.id):
            raise ValueError("dup_of names another figure and goes with role = \"exclude\"")
        if self.constrains and self.role != "fit":
            raise ValueError("constrains only applies to role = \"fit\"")
        if (self.row is None) != (not self.table):
            raise ValueError("table and row go together")
        return self

    @property
    def source_unit(self) -> str:
        """The independence unit: the part of ``group`` before ``:`` (a source or a machine)."""
        return self.group.split(":", 1)[0]

    def fields(self) -> dict[str, Any]:
        """The values a ``--fit-on`` expression can test (:data:`FIELDS`)."""
        return {"id": self.id, "role": self.role, "family": self.family, "gpu": self.gpu, "gpus": self.gpus,
                "nodes": self.nodes, "operation": self.operation, "metric": self.metric,
                "topology": self.topology, "kind": self.source.kind, "source": self.source_unit,
                "evidence": self.evidence}

    @property
    def value_si(self) -> float:
        """The figure in SI units: bytes/s for bandwidths, seconds for times."""
        return self.value * (1e9 if self.unit == "GB/s" else 1e-6)

    @property
    def scale(self) -> float:
        """SI units per display unit (1e9 for GB/s, 1e-6 for us)."""
        return 1e9 if self.unit == "GB/s" else 1e-6
