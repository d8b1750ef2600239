"""Marked sections of a generated Markdown page, so each command rewrites only its own.

A section is the text from ``<!-- NAME:begin (written by WRITER; ...) -->`` to
``<!-- NAME:end -->``. docs/accuracy.md has three writers: the CPU held-out accuracy (the
page itself), ``dicesim accuracy --published`` and ``dicesim accuracy --paper``; each keeps
the others' sections when it rewrites the page.
"""

from __future__ import annotations

import re
from pathlib import Path

from dicesim.atomic import write_text_atomic

_ANY = re.compile(r"<!-- (?P<name>[a-z][a-z0-9_-]*):begin\b.*?<!-- (?P=name):end -->", re.S)


def markers(name: str, writer: str) -> tuple[str, str]:
    """The begin and end comment lines of section ``name`` written by ``writer``."""
    return (f"<!-- {name}:begin (written by `{writer}`; edits here are overwritten) -->", f"<!-- {name}:end -->")


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- {re.escape(name)}:begin\b.*?<!-- {re.escape(name)}:end -->", re.S)


def carry_sections(text: str) -> str:
    """Every marked section of ``text`` (markers included, in page order), or ''."""
    return "".join(m.group(0) + "\n" for m in _ANY.finditer(text))


def replace_section(name: str, section: str, md_path: str | Path) -> Path:
    """Replace section ``name`` of ``md_path`` with ``section`` (or append it), atomically."""
    p = Path(md_path)
    old = p.read_text(encoding="utf-8") if p.is_file() else ""
    block = _block(name)
    if block.search(old):
        new = block.sub(lambda _m: section.rstrip("\n"), old, count=1)
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + section
    write_text_atomic(new if new.endswith("\n") else new + "\n", p)
    return p
