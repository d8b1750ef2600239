"""The strategy families and their presets: one registry instead of ``if`` chains.

Built-in families are listed in :data:`BUILTIN_FAMILIES`; a family added later registers
itself with :func:`register_family` (its plan rules register in :mod:`dicesim.plan`). The
registry holds immutable definitions only and is written once per family, never during a
run, so two configurations in one process never share state through it.

:func:`make_strategy` builds a named preset (with overrides); :func:`parse_strategy` reads the
fields a file holds, where a missing ``family`` means ``expert_parallel``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.strategy import expert, sequence
from dicesim.strategy.base import DEFAULT_FAMILY, FamilyConfig, Strategy

BUILTIN_FAMILIES: tuple[FamilyConfig, ...] = (expert.FAMILY, sequence.FAMILY)
_FAMILIES: dict[str, FamilyConfig] = {f.name: f for f in BUILTIN_FAMILIES}

#: the built-in presets, in the order tables list them
STRATEGY_NAMES: tuple[str, ...] = tuple(p for f in BUILTIN_FAMILIES for p in f.presets)
#: strategies `dicesim compare`, the default study and `recommend` put side by side: each built-in
#: family's comparison presets (:meth:`FamilyConfig.compare_presets`), so a family's presets join
#: as soon as it is built in
COMPARE_DEFAULT: tuple[str, ...] = tuple(p for f in BUILTIN_FAMILIES for p in f.compare_presets())


def register_family(family: FamilyConfig) -> None:
    """Add a family and its presets; ValueError if its name or a preset name is taken."""
    if family.name in _FAMILIES:
        raise ValueError(f"strategy family {family.name!r} is already registered")
    taken = sorted(set(family.presets) & set(strategy_names()))
    if taken:
        raise ValueError(f"strategy preset {taken[0]!r} is already registered")
    if family.config.family != family.name:
        raise ValueError(f"config class {family.config.__name__} says family {family.config.family!r}, "
                         f"not {family.name!r}")
    _FAMILIES[family.name] = family


def unregister_family(name: str) -> None:
    """Remove a family added by :func:`register_family` (tests); the built-in ones stay."""
    if any(f.name == name for f in BUILTIN_FAMILIES):
        raise ValueError(f"strategy family {name!r} is built in")
    _FAMILIES.pop(name, None)


def family_names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def family_config(name: str) -> FamilyConfig:
    """The registered family ``name``; ConfigError naming the known ones otherwise."""
    fam = _FAMILIES.get(name) if isinstance(name, str) else None
    if fam is None:
        raise ConfigError("strategy.family", f"unknown strategy family {name!r}", family_names())
    return fam


def strategy_names() -> tuple[str, ...]:
    """Every registered preset, built-in ones first."""
    return tuple(p for f in _FAMILIES.values() for p in f.presets)


def _preset(name: str) -> tuple[FamilyConfig, Mapping[str, object]]:
    for fam in _FAMILIES.values():
        if name in fam.presets:
            return fam, fam.presets[name]
    raise ConfigError("strategy", f"unknown strategy {name!r}", strategy_names())


def _build(cls: type[Strategy], fields: dict) -> Strategy:
    try:
        return cls(**fields)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, "strategy", cls.allowed, model=cls) from None


def make_strategy(name: str | None = None, **overrides: object) -> Strategy:
    """A named preset (``dice``, ``displaced``, ...) with field overrides, validated.

    Without a name, ``family`` picks the config class (default ``expert_parallel``); a
    preset already names its family, and a different ``family`` is an error.
    """
    family = overrides.pop("family", None)
    base: dict = {}
    if name is not None:
        fam, fields = _preset(name)
        if family is not None and family != fam.name:
            raise ConfigError("strategy.family", f"preset {name!r} belongs to family {fam.name!r}", (fam.name,))
        base = dict(fields, name=name)
    else:
        fam = family_config(DEFAULT_FAMILY if family is None else family)  # type: ignore[arg-type]
    given = {k: v for k, v in overrides.items() if v is not None}
    fields = {**base, **given}
    if given and name is not None:
        fields["name"] = str(given.get("name") or f"{name}*")
    return _build(fam.config, fields)


def parse_strategy(data: Mapping[str, object], where: str = "strategy") -> Strategy:
    """A strategy from the fields a file holds; no ``family`` reads as ``expert_parallel``."""
    fields = dict(data)
    fam = family_config(fields.pop("family", DEFAULT_FAMILY))  # type: ignore[arg-type]
    try:
        return fam.config(**fields)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, where, fam.config.allowed, model=fam.config) from None


def as_strategy(value: object) -> object:
    """Pydantic before-validator: a mapping becomes its family's config; anything else passes."""
    return parse_strategy(value) if isinstance(value, Mapping) else value
