"""What every strategy shares, whatever its family: a name, its family and a description.

A strategy belongs to a *family*: how the ranks split the work. Expert parallelism
(:mod:`dicesim.strategy.expert`: every rank holds a slice of the experts) is the family built
in today; sequence parallelism (every rank holds the whole model and a slice of each image's
tokens) is the next. Each family is one config class that keeps only its own fields, plus
its presets (:class:`FamilyConfig`); its plan rules live in :mod:`dicesim.plan`.

On disk a strategy is its fields. A config of any family but the default one also carries
``family = "<name>"``; the default family (``expert_parallel``) writes none, so every file
written before families existed reads, and is written, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

#: the family of a strategy whose fields name none (every file written before families existed)
DEFAULT_FAMILY = "expert_parallel"


class Strategy(BaseModel):
    """A validated, immutable strategy config; subclasses are the families' configs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the family this config class belongs to (a key of the family registry)
    family: ClassVar[str] = ""
    #: allowed values per field name, shown by one-line errors (``__keys__``: the field names)
    allowed: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: what a lag of this family measures (tables label lags with it)
    lag_subject: ClassVar[str] = "expert output"

    name: str = "custom"

    @model_serializer(mode="wrap")
    def _tag_family(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if self.family != DEFAULT_FAMILY and isinstance(data, dict):
            return {"family": self.family, **data}
        return data

    @property
    def is_async(self) -> bool:
        """Whether some step may use an output that is older than the step (a stale one)."""
        raise NotImplementedError

    def step_is_sync(self, t: int, num_steps: int) -> bool:
        """Whether step ``t`` of ``num_steps`` runs fully synchronously (every output fresh)."""
        raise NotImplementedError

    def kept_copy(self, top_k: int) -> int | None:
        """Score rank of the copy an exchange that sends one copy per token keeps (None: a fixed
        random one); a family that never drops a copy keeps the top one."""
        return 0

    def check_model(self, num_layers: int) -> None:
        """ConfigError when the strategy cannot run on a model of ``num_layers`` layers."""

    def check_split(self, world_size: int, tokens_per_image: int, *, heads: int) -> None:
        """ConfigError when ``world_size`` ranks cannot split the work of images of ``tokens_per_image`` tokens
        on a model of ``heads`` attention heads."""

    def describe(self) -> str:
        """One line: what the strategy does, for tables and result records."""
        raise NotImplementedError


@dataclass(frozen=True)
class FamilyConfig:
    """What the strategy registry knows of a family: its config class and its named presets."""

    name: str
    config: type[Strategy]
    #: preset name -> the fields that define it (the name itself is added)
    presets: Mapping[str, Mapping[str, object]]
    #: the presets `dicesim compare`, the default study and `recommend` put beside the other
    #: families' (None: every preset)
    compare: tuple[str, ...] | None = None

    def compare_presets(self) -> tuple[str, ...]:
        return tuple(self.presets) if self.compare is None else self.compare
