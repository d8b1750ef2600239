"""docs/scenario.md, generated from the typed scenario model and the commands' own flags.

Every field of :class:`dicesim.scenario.Scenario`, :class:`~dicesim.scenario.RoutingConfig` and
each strategy family's config, with its place in a scenario file (``FILE_KEYS``), the flag of
``dicesim simulate`` / ``compare`` that sets it (read off the command's signature), its type,
default, allowed values and meaning (the field's description). ``python tools/write_docs.py
scenario`` writes the page; ``tests/test_scenario_doc.py`` fails when the page is stale, so it
cannot drift from the code.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dicesim.scenario import FILE_KEYS, RoutingConfig, Scenario, make_scenario
from dicesim.strategy.registry import BUILTIN_FAMILIES

#: flags whose parameter name differs from the field they set
_FLAG_FIELDS = {"zipf_alpha": "alpha", "routing": "kind"}


def _flags(command: Callable[..., Any]) -> dict[str, str]:
    """``field -> --flag`` for every option of a typer command function."""
    out = {}
    for name, p in inspect.signature(command).parameters.items():
        decls = getattr(p.default, "param_decls", None) or ()
        flag = next((d for d in decls if d.startswith("--")), None)
        if flag:
            out[_FLAG_FIELDS.get(name, name)] = flag.split("/")[0]
    return out


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "string"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(dict.fromkeys(_type(a) for a in args))
    if origin is tuple:
        return "list of " + _type(typing.get_args(annotation)[0])
    name = getattr(annotation, "__name__", str(annotation))
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(name, name)


def _allowed(info: FieldInfo, extra: tuple[str, ...] = ()) -> str:
    ann = info.annotation
    lits = [a for a in _literals(ann)]
    if lits:
        return ", ".join(f"`{v}`" for v in lits)
    if extra:
        return ", ".join(f"`{v}`" for v in extra)
    bounds = {type(m).__name__: getattr(m, k) for m in info.metadata for k in ("ge", "gt", "le", "lt")
              if hasattr(m, k)}
    lo = f">= {bounds['Ge']}" if "Ge" in bounds else f"> {bounds['Gt']}" if "Gt" in bounds else ""
    hi = f"<= {bounds['Le']:,}" if "Le" in bounds else ""
    return ", ".join(x for x in (lo, hi) if x) or "-"


def _literals(ann: Any) -> list[Any]:
    if typing.get_origin(ann) is typing.Literal:
        return list(typing.get_args(ann))
    out = []
    for a in typing.get_args(ann):
        out += _literals(a)
    return out


def _default(model: BaseModel, name: str) -> str:
    v = getattr(model, name)
    if isinstance(v, BaseModel):
        return getattr(v, "name", "(table)")
    return "none" if v is None else f"`{v}`"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def _table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join([_row(head), "|" + "---|" * len(head), *(_row(r) for r in rows)])


def scenario_markdown(simulate: Callable[..., Any], compare: Callable[..., Any]) -> str:
    """The whole page (``simulate`` and ``compare``: the command functions, for their flags)."""
    flags = {**_flags(compare), **_flags(simulate)}
    default = make_scenario()
    rows = []
    for name, info in Scenario.model_fields.items():
        section, key = FILE_KEYS[name]
        where = f"`[{section}] {key}`" + (" (or `file`)" if name == "topology" else "")
        rows.append([f"`{name}`", where, f"`{flags[name]}`" if name in flags else "-", _type(info.annotation),
                     _default(default, name), _allowed(info, _extra_allowed(name)), info.description or ""])
    routing = RoutingConfig()
    r_rows = [[f"`{n}`", f"`[routing] {n}`", f"`{flags[n]}`" if n in flags else "-", _type(i.annotation),
               _default(routing, n), _allowed(i), i.description or ""] for n, i in RoutingConfig.model_fields.items()]
    head = ["field", "in a scenario file", "flag", "type", "default", "allowed", "meaning"]
    parts = [_HEAD, "## Scenario", _table(head, rows), "## Routing (`[routing]`)", _table(head, r_rows)]
    for fam in BUILTIN_FAMILIES:
        parts += _family(fam)
    parts.append(_TAIL)
    return "\n\n".join(parts) + "\n"


def _extra_allowed(name: str) -> tuple[str, ...]:
    from dicesim.models import MODEL_NAMES
    from dicesim.strategy import strategy_names

    return {"model": MODEL_NAMES, "strategy": strategy_names()}.get(name, ())


def _family(fam) -> list[str]:
    cls = fam.config
    base = cls(name="x") if "name" in cls.model_fields else cls()
    allowed = getattr(cls, "allowed", {})
    rows = [[f"`{n}`", _type(i.annotation), _default(base, n), ", ".join(f"`{a}`" for a in allowed.get(n, ()))
             or _allowed(i)] for n, i in cls.model_fields.items() if n != "name"]
    presets = [[f"`{p}`", ", ".join(f"{k} = `{v}`" for k, v in fields.items())] for p, fields in fam.presets.items()]
    return [f"## Strategy fields, family `{fam.name}` (`[strategy]`)",
            "A `[strategy]` table takes `preset = \"NAME\"` and any of these fields on top of it (`family` for a "
            "family other than the default). What each does: [strategies.md](strategies.md).",
            _table(["field", "type", "default", "allowed"], rows), "Presets:",
            _table(["preset", "fields"], presets)]


_HEAD = """# Scenario reference

<!-- generated by `python tools/write_docs.py scenario` from dicesim/scenario.py, dicesim/strategy/ and the
flags of `dicesim simulate` / `compare`; tests/test_scenario_doc.py fails when it is stale: edit the code,
not this page -->

A scenario is one configuration: model x workload x strategy x machine. Give it as a TOML
file (`dicesim simulate my.toml`, `dicesim check my.toml`), as flags, or both: a flag replaces
the file's value. Every field below is reachable both ways unless the flag column says `-`.

```toml
[model]
name = "XL/2"
num_experts = 16          # a what-if: the preset has 8

[workload]
batch = 16
image_size = 512
steps = 50

[strategy]
preset = "dice"

[topology]
file = "my-box.toml"      # from `dicesim topology derive 8x-rtx4090-pcie --gpu l40s --p2p --name my-box`
world_size = 8
placement = "contiguous"

[routing]
kind = "uniform"
```"""

_TAIL = """## Where the overrides show

Labels and titles name every field set away from its default (`XL/2 (16 experts) x8 my-box
b16 512px 50 steps placement=strided fp32 dice`), and so does `dicesim check FILE`'s line.
When a what-if flag (`--num-experts`, `--placement`, `--dtype`) leaves the step latency where
it was, `simulate` and `compare` say so and why (docs/trust.md)."""
