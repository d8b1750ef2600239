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


def config_error_from_pydantic(exc: object, prefix: str, allowed: dict[str, object] | None = None) -> ConfigError:
    """The first problem of a ``pydantic.ValidationError`` as a one-line :class:`ConfigError`.

    ``allowed`` maps a field name to its allowed values, shown after the problem.
    """
    err = exc.errors()[0]  # type: ignore[attr-defined]
    # pydantic appends union-member tags such as "literal['none',...]" to the location
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("literal[", "tuple[", "function-"))]
    field = ".".join(p for p in [prefix, *loc] if p) or "config"
    if err["type"] == "extra_forbidden":
        return ConfigError(field, "unknown key", (allowed or {}).get("__keys__"))
    if err["type"] == "missing":
        return ConfigError(field, "is required")
    leaf = loc[-1] if loc else ""
    got = err.get("input")
    return ConfigError(field, f"{err['msg']} (got {got!r})", (allowed or {}).get(leaf))
