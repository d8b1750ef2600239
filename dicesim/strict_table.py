"""Strict reading of the tables of input files: every key is known, every integer is ASCII.

A key nobody reads is a typo or a misunderstanding (``[profile] fille = ...``), and silently
ignoring it reports a file as fine that does not say what its author meant. Every table of
every input format is read through :func:`take_table` (or a pydantic model with
``extra="forbid"``, which reports the same way), so an unknown key is one line naming the table
and the keys it allows.

Integers written as text (a topology rank in GraphML, a list of layers on the command line) are
read by :func:`ascii_int`: ``str.isdigit`` and ``int`` accept Unicode digits (``"²"`` passes
``isdigit`` and fails ``int``; Arabic-Indic ``"٣"`` reads as 3), so digits must be ASCII.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from dicesim.errors import ConfigError, DicesimError

_ASCII_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)


def take_table(table: Mapping[str, object], allowed: Sequence[str], where: str,
               error: Callable[[str, str, Sequence[str]], DicesimError] | None = None) -> dict[str, object]:
    """``table`` as a dict when all its keys are in ``allowed``; otherwise a one-line error
    naming ``where.<key>`` and the allowed keys (``error(field, problem, allowed)`` builds it)."""
    unknown = [k for k in table if k not in allowed]
    if unknown:
        make = error or (lambda f, p, a: ConfigError(f, p, a))
        raise make(f"{where}.{unknown[0]}", "unknown key", tuple(allowed))
    return dict(table)


def ascii_int(text: str) -> int | None:
    """The integer ``text`` spells in ASCII digits (optional sign, surrounding blanks), else None."""
    t = text.strip()
    return int(t) if _ASCII_INT.fullmatch(t) else None


def ascii_int_list(text: str, field: str, allowed: Sequence[object] | str) -> tuple[int, ...]:
    """``"1,2,3"`` as integers (empty items skipped); ConfigError naming ``field`` otherwise."""
    items = [v for v in text.split(",") if v.strip()]
    values = [ascii_int(v) for v in items]
    if any(v is None for v in values):
        raise ConfigError(field, f"{text[:40]!r} is not a comma-separated list of integers (ASCII digits)", allowed)
    return tuple(v for v in values if v is not None)
