"""Reading the project's TOML inputs with one-line errors (scenarios, sweeps, topologies, profiles).

Every TOML input passes the same bounds before a typed model sees it: at most
``MAX_TEXT_FILE_BYTES``, nesting within ``MAX_NESTING``, integers inside 64 bits and finite
floats only (see :mod:`dicesim.limits`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

from dicesim.errors import ConfigError, DicesimError
from dicesim.inputs import check_data, read_bytes_bounded
from dicesim.limits import MAX_NESTING, MAX_TEXT_FILE_BYTES


def read_toml(path: str | Path, *, what: str,
              error: Callable[[str], DicesimError] | None = None) -> dict:
    """Parse ``path``; a missing, oversized, undecodable or invalid file raises one line naming it.

    ``what`` names the kind of file in the "not found" message; ``error`` builds the
    exception from the problem text (default: a :class:`ConfigError` for the file name).
    """
    p = Path(path)
    make = error or (lambda problem: ConfigError(p.name, problem))
    if not p.exists():
        raise make(f"{what} file not found: {p}")  # a FIFO or a directory: refused by the bounded read
    raw = read_bytes_bounded(p, MAX_TEXT_FILE_BYTES, make, what=f"{what} file")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise make(f"not valid TOML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise make(f"not valid TOML: nested too deeply (limit {MAX_NESTING} levels)") from None
    except ValueError as exc:  # integers of more than 4300 digits
        raise make(f"not valid TOML: {' '.join(str(exc).split())[:120]}") from None
    check_data(doc, make)
    return doc
