"""What reaches the terminal: untrusted text escaped, any stdout encoding, any terminal width.

- :func:`printable`: text read from files (a topology's name, a result's label, a figure id)
  is shown with its control characters escaped (``\\x1b``, ``\\n``, bidirectional overrides)
  and rich markup disarmed, so a file cannot colour, clear or rewrite the terminal, nor forge
  an ``error:`` line of its own.
- :class:`SafeConsole`: a rich console that escapes control characters in every string it
  renders (table cells, titles), as a second line of defence behind :func:`printable`.
- :func:`prepare_terminal`: stdout and stderr that cannot encode a character (``LANG=C``,
  ``PYTHONIOENCODING=ascii``) write it as an escape instead of raising after the work is done;
  a ``COLUMNS`` that is not a usable width (``0``, ``-5``, ``abc``) is ignored, not obeyed
  (``COLUMNS=0`` made rich print nothing).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

#: C0 and C1 controls, DEL, zero-width and bidirectional formatting characters
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
#: the same without newline and tab, for text that is ours apart from the values in it
_CONTROL_KEEP_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
#: narrowest and widest terminal widths taken from COLUMNS
MIN_COLUMNS, MAX_COLUMNS = 20, 10_000


def _escape_char(m: re.Match[str]) -> str:
    return m.group().encode("unicode_escape").decode("ascii")


def printable(text: object, *, markup: bool = True) -> str:
    """``text`` on one line with every control character escaped; with ``markup`` also safe to
    hand to rich (``[bold]`` in a name stays literal)."""
    shown = _CONTROL.sub(_escape_char, str(text))
    return escape(shown) if markup else shown


class SafeConsole(Console):
    """A rich Console whose strings (cells, titles, printed text) cannot carry control sequences."""

    def render_str(self, text: str, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().render_str(_CONTROL_KEEP_LINES.sub(_escape_char, text), **kwargs)


def _usable_columns(value: str | None) -> bool:
    return value is not None and re.fullmatch(r"[0-9]{1,6}", value, re.ASCII) is not None \
        and MIN_COLUMNS <= int(value) <= MAX_COLUMNS


def prepare_terminal() -> None:
    """Make output safe before a command runs (see the module docstring)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a closed or detached stream: nothing to print to anyway
                pass
    if "COLUMNS" in os.environ and not _usable_columns(os.environ["COLUMNS"]):
        del os.environ["COLUMNS"]  # rich would take COLUMNS=0 as a width of zero and print nothing
