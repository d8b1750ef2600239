"""Shape and size checks of a sweep's ``[axes]`` before any configuration is built.

Kept beside :mod:`dicesim.sweep` so the grid is refused up front: a product past
``MAX_SWEEP_POINTS`` would otherwise be materialised as a list of points first, and an axis
value of the wrong shape would only surface as thousands of skipped rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from dicesim.errors import ConfigError
from dicesim.limits import MAX_SWEEP_POINTS

#: axes whose values are lists (of layer indices); every other axis takes scalars
LIST_AXES = frozenset({"sync_layers"})
_SCALARS = (str, int, float, bool)


def _kind(value: object) -> str:
    return "boolean" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else \
        "text" if isinstance(value, str) else "list"


def check_axis_values(name: str, values: Sequence[object]) -> None:
    """ConfigError unless every value of axis ``name`` is a scalar (or, for ``sync_layers``, a
    preset name or a flat list of integers), and all of one kind: an axis becomes one column of
    the result table, and ``[0, true]`` or ``["\\u0000", 1]`` was simulated and then could not be
    written (a traceback after the work)."""
    for i, v in enumerate(values):
        # a value given twice is the same configuration twice: simulated again, one index lost
        if any(_same(v, w) for w in values[:i]):
            raise ConfigError(f"axes.{name}[{i}]", f"repeats the value {str(v)[:40]!r}", "each value once")
        if isinstance(v, _SCALARS):
            if name not in LIST_AXES and _kind(v) != _kind(values[0]):
                raise ConfigError(f"axes.{name}[{i}]", f"{str(v)[:40]!r} is a {_kind(v)}, the axis's first value "
                                  f"{str(values[0])[:40]!r} a {_kind(values[0])}", "values of one kind")
            continue
        if name in LIST_AXES and isinstance(v, list) and all(type(x) is int for x in v):
            continue
        want = "a preset name or a list of layer indices" if name in LIST_AXES else "a string, number or boolean"
        raise ConfigError(f"axes.{name}[{i}]", f"{type(v).__name__} value {str(v)[:40]}", want)


def _same(a: object, b: object) -> bool:
    """Equal as axis values: 1, 1.0 and true are one value to the scenario they are set in."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 -- values that do not compare are different
        return False


def check_sweep_size(axes: Mapping[str, Sequence[object]]) -> int:
    """The number of configurations; ConfigError past ``MAX_SWEEP_POINTS``."""
    total = math.prod(len(v) for v in axes.values())
    if total > MAX_SWEEP_POINTS:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in axes.items())
        raise ConfigError("axes", f"{sizes} = {total:,} configurations, more than the {MAX_SWEEP_POINTS:,} a sweep "
                          "may hold; split it into several sweeps", "see docs/limits.md")
    return total
