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
from dicesim.errors import ConfigError, DicesimError
from dicesim.inputs import read_bytes_bounded
from dicesim.limits import MAX_TEXT_FILE_BYTES

_ANY = re.compile(r"<!-- (?P<name>[a-z][a-z0-9_-]*):begin\b.*?<!-- (?P=name):end -->", re.S)


def markers(name: str, writer: str) -> tuple[str, str]:
    """The begin and end comment lines of section ``name`` written by ``writer``."""
    return (f"<!-- {name}:begin (written by `{writer}`; edits here are overwritten) -->", f"<!-- {name}:end -->")


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- {re.escape(name)}:begin\b.*?<!-- {re.escape(name)}:end -->", re.S)


def carry_sections(text: str) -> str:
    """Every marked section of ``text`` (markers included, in page order), or ''."""
    return "".join(m.group(0) + "\n" for m in _ANY.finditer(text))


def read_page(md_path: str | Path) -> str:
    """The text of the page a command is about to rewrite ('' when there is none yet); a page
    that is too large or not UTF-8 text is refused, since its sections could not be kept."""
    p = Path(md_path)
    if not p.exists():
        return ""

    def fail(problem: str) -> DicesimError:
        return ConfigError(f"--out {p}", problem)

    raw = read_bytes_bounded(p, MAX_TEXT_FILE_BYTES, fail, what="Markdown page")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not a UTF-8 text page (byte 0x{raw[exc.start]:02x} at offset {exc.start}), so its marked "
                   "sections cannot be kept; choose another --out") from None


def replace_section(name: str, section: str, md_path: str | Path) -> Path:
    """Replace section ``name`` of ``md_path`` with ``section`` (or append it), atomically."""
    p = Path(md_path)
    old = read_page(p)
    block = _block(name)
    if block.search(old):
        new = block.sub(lambda _m: section.rstrip("\n"), old, count=1)
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + section
    write_text_atomic(new if new.endswith("\n") else new + "\n", p)
    return p
