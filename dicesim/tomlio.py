"""Reading the project's TOML inputs with one-line errors (scenarios, sweeps, topologies, profiles)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

from dicesim.errors import ConfigError, DicesimError


def read_toml(path: str | Path, *, what: str,
              error: Callable[[str], DicesimError] | None = None) -> dict:
    """Parse ``path``; a missing, undecodable or invalid file raises one line naming it.

    ``what`` names the kind of file in the "not found" message; ``error`` builds the
    exception from the problem text (default: a :class:`ConfigError` for the file name).
    """
    p = Path(path)
    make = error or (lambda problem: ConfigError(p.name, problem))
    if not p.is_file():
        raise make(f"{what} file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise make(f"not valid TOML: {' '.join(str(exc).split())}") from None
