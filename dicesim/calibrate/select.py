"""``--fit-on`` expressions: which runs a calibration is fitted on (the others are held out).

A small, safe subset of Python expressions over a run's fields (:meth:`TraceRun.fields`:
``model, batch, world_size, strategy, family, steps, image_size, backend, device, stem``; ``family``
is the strategy's family: ``expert_parallel`` or ``sequence``):
comparisons (``== != < <= > >=``, ``in``, ``not in``), ``and``/``or``/``not``, parentheses,
numbers, strings and tuples/lists of them. Examples: ``batch in (1, 4)``,
``world_size == 2 and strategy != "dice"``, ``family == "expert_parallel" and batch in (1, 4)``. Nothing else is evaluated (no calls, no
attributes), and every problem is a one-line ConfigError.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable
from typing import Any

from dicesim.errors import ConfigError
from dicesim.limits import MAX_EXPRESSION_CHARS
from dicesim.strategy import family_names

FIELDS = ("model", "batch", "world_size", "strategy", "family", "steps", "image_size", "backend", "device", "stem")
DEFAULT_FIT_ON = "batch in (1, 4)"
_CMP: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


_ALLOWED_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare,
                  ast.Name, ast.Load, ast.Constant, ast.Tuple, ast.List, ast.Set, *(_CMP))


def _bad(expr: str, why: str, fields: tuple[str, ...] = FIELDS) -> ConfigError:
    return ConfigError("fit-on", f"{expr!r}: {why}", f"comparisons of {', '.join(fields)} joined by and/or/not")


def _check_values(expr: str, node: ast.Compare, choices: dict[str, tuple[str, ...]]) -> None:
    """A string compared with a field of known values (``family``) must be one of them: a misspelt family
    would otherwise select nothing, or everything with ``!=``."""
    operands = [node.left, *node.comparators]
    names = [o.id for o in operands if isinstance(o, ast.Name) and o.id in choices]
    for name in names:
        for o in operands:
            elts = o.elts if isinstance(o, (ast.Tuple, ast.List, ast.Set)) else [o]
            for e in elts:
                if isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value not in choices[name]:
                    raise ConfigError("fit-on", f"{expr!r}: unknown {name} {e.value!r}", choices[name])


def compile_selector(expr: str, fields: tuple[str, ...] = FIELDS,
                     choices: dict[str, tuple[str, ...]] | None = None) -> Callable[[dict[str, Any]], bool]:
    """A predicate over a field dict (default: a run's :data:`FIELDS`); ConfigError outside the grammar.

    ``choices``: fields whose string values are known (a run's ``family``); comparing one with any
    other string is a ConfigError naming the allowed values."""
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise _bad(expr[:40] + "...", f"{len(expr)} characters, longer than the {MAX_EXPRESSION_CHARS} allowed",
                   fields)
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise _bad(expr, f"not an expression ({exc.msg})", fields) from None
    except (RecursionError, MemoryError):
        raise _bad(expr[:40] + "...", "nested too deeply", fields) from None

    def ev(node: ast.AST, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body, env)
        if isinstance(node, ast.BoolOp):
            vals = (ev(v, env) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand, env)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand, env)
        if isinstance(node, ast.Compare):
            left = ev(node.left, env)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp, env)
                if type(op) not in _CMP:
                    raise _bad(expr, f"operator {type(op).__name__} is not allowed", fields)
                try:
                    if not _CMP[type(op)](left, right):
                        return False
                except TypeError:
                    raise _bad(expr, f"cannot compare {left!r} with {right!r}", fields) from None
                left = right
            return True
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise _bad(expr, f"unknown name {node.id!r}", fields)
            return env[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return tuple(ev(e, env) for e in node.elts)
        raise _bad(expr, f"{type(node).__name__} is not allowed", fields)

    for n in ast.walk(tree):  # the whole tree is checked up front, not only the branches evaluated
        if isinstance(n, ast.Name) and n.id not in fields:
            raise _bad(expr, f"unknown name {n.id!r}", fields)
        if not isinstance(n, _ALLOWED_NODES):
            raise _bad(expr, f"{type(n).__name__} is not allowed", fields)
        if choices and isinstance(n, ast.Compare):
            _check_values(expr, n, choices)

    def predicate(values: dict[str, Any]) -> bool:
        try:
            return bool(ev(tree, values))
        except RecursionError:
            raise _bad(expr[:40] + "...", "nested too deeply", fields) from None

    return predicate


def run_selector(expr: str) -> Callable[[dict[str, Any]], bool]:
    """The predicate of a ``--fit-on`` / ``--where`` expression over a run's :data:`FIELDS` (``family``
    values checked against the registered families); a ConfigError before any trace is read."""
    return compile_selector(expr, choices={"family": family_names()})


def split_runs(runs: Iterable[Any], expr: str = DEFAULT_FIT_ON) -> tuple[list[Any], list[Any]]:
    """``(fit, held_out)``: runs whose fields satisfy ``expr``, and the rest."""
    pred = run_selector(expr)
    fit, held = [], []
    for r in runs:
        (fit if pred(r.fields()) else held).append(r)
    return fit, held
