"""Strategies: which family a strategy belongs to, its validated config and the named presets.

- :mod:`~dicesim.strategy.base`: what every family's config shares (:class:`Strategy`);
- :mod:`~dicesim.strategy.expert`: the expert-parallel family (:class:`ExpertParallelStrategy`);
- :mod:`~dicesim.strategy.sequence`: the sequence-parallel family (:class:`SequenceParallelStrategy`: sp, DistriFusion);
- :mod:`~dicesim.strategy.registry`: families and presets (:func:`make_strategy`, :func:`parse_strategy`).

The rules that turn a strategy into what every rank runs are :mod:`dicesim.plan`.
"""

from dicesim.strategy.base import DEFAULT_FAMILY, FamilyConfig, Strategy
from dicesim.strategy.expert import REFERENCE_SEMANTICS, ExpertParallelStrategy
from dicesim.strategy.sequence import SequenceParallelStrategy
from dicesim.strategy.registry import (
    COMPARE_DEFAULT, STRATEGY_NAMES, as_strategy, family_config, family_names, make_strategy, parse_strategy,
    register_family, strategy_names, unregister_family,
)

__all__ = [
    "COMPARE_DEFAULT", "DEFAULT_FAMILY", "REFERENCE_SEMANTICS", "STRATEGY_NAMES", "ExpertParallelStrategy",
    "SequenceParallelStrategy",
    "FamilyConfig", "Strategy", "as_strategy", "family_config", "family_names", "make_strategy", "parse_strategy",
    "register_family", "strategy_names", "unregister_family",
]
