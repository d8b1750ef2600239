"""Errors a user can cause. Each renders as one line; the CLI maps them to exit code 2."""

from __future__ import annotations

from collections.abc import Iterable


class DicesimError(Exception):
    """Base for user-facing errors: bad config, topology, trace or profile file."""

    exit_code = 2

    def one_line(self) -> str:
        return " ".join(str(self).split())

    def __reduce__(self) -> tuple:
        # subclasses take other constructor arguments than the message they store, so the
        # default pickling (cls(*args)) fails: a worker process's error would break its pool
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type, args: tuple, state: dict) -> DicesimError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


def _allowed(allowed: Iterable[object] | str | None) -> str:
    if allowed is None:
        return ""
    if isinstance(allowed, str):
        return f" (allowed: {allowed})"
    return " (allowed: " + ", ".join(str(a) for a in allowed) + ")"


class ConfigError(DicesimError):
    """A scenario, strategy, model or profile field is wrong."""

    def __init__(self, field: str, problem: str, allowed: Iterable[object] | str | None = None):
        self.field = field
        super().__init__(f"{field}: {problem}{_allowed(allowed)}")


class TopologyError(DicesimError):
    """A topology graph or file is unusable."""


class TraceError(DicesimError):
    """A trace file is malformed, truncated or of the wrong schema."""

    def __init__(self, path: object, problem: str):
        super().__init__(f"{path}: {problem}")


def model_keys_at(model: type, loc: Iterable[object]) -> tuple[str, ...] | None:
    """The keys the pydantic ``model`` allows in the table at ``loc`` (a path of field names and
    list indices, as in a validation error), or None where that is not a model's table."""
    import types
    import typing

    from pydantic import BaseModel

    def unwrap(t: object) -> object:
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if typing.get_origin(t) in (typing.Union, types.UnionType) and args:
            return next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), args[0])
        if typing.get_origin(t) is typing.Annotated:
            return unwrap(args[0])
        return t

    t: object = model
    for part in loc:
        t = unwrap(t)
        origin, args = typing.get_origin(t), typing.get_args(t)
        if isinstance(part, int) and origin in (tuple, list) and args:
            t = args[0]
        elif isinstance(t, type) and issubclass(t, BaseModel):
            fields = {f.alias or name: f for name, f in t.model_fields.items()}
            if part not in fields:
                return None
            t = fields[part].annotation  # type: ignore[index]
        elif origin is dict and len(args) == 2:
            t = args[1]
        else:
            return None
    t = unwrap(t)
    if isinstance(t, type) and issubclass(t, BaseModel):
        return tuple(f.alias or name for name, f in t.model_fields.items())
    return None


def config_error_from_pydantic(exc: object, prefix: str, allowed: dict[str, object] | None = None, *,
                               model: type | None = None) -> ConfigError:
    """The first problem of a ``pydantic.ValidationError`` as a one-line :class:`ConfigError`.

    ``allowed`` maps a field name to its allowed values, shown after the problem. With the
    validated ``model``, an unknown key names the keys its table allows, at any depth.
    """
    err = exc.errors()[0]  # type: ignore[attr-defined]
    # pydantic appends union-member tags such as "literal['none',...]" to the location
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("literal[", "tuple[", "function-"))]
    field = ".".join(p for p in [prefix, *loc] if p) or "config"
    if err["type"] == "extra_forbidden":
        raw = [p for p in err["loc"] if not str(p).startswith(("literal[", "tuple[", "function-"))]
        keys = model_keys_at(model, raw[:-1]) if model is not None else None
        return ConfigError(field, "unknown key", keys or (allowed or {}).get("__keys__"))
    if err["type"] == "missing":
        return ConfigError(field, "is required")
    leaf = loc[-1] if loc else ""
    got = err.get("input")
    return ConfigError(field, f"{err['msg']} (got {got!r})", (allowed or {}).get(leaf))
