"""The published collective set (``traces/published/*.toml``): reading and validating it.

One file per hardware family, each a list of ``[[figure]]`` tables (:mod:`.schema`). Files of
schema ``dicesim-published/2`` carry the split metadata (evidence, group, table, role, ...);
files of the older ``dicesim-published/1`` are read through the same model: every figure a
measurement, roles ``fit``/``check`` only, and each figure its own run with its source URL as
the independence unit (so two figures of one page never count as two sources).

Everything is validated when read; a problem is one line naming the file, the figure and the
field, with the allowed values. The fitted/held-out rules that span figures are in :mod:`.rules`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from dicesim.calibrate.published.schema import LL_OPS, METRICS, SCHEMAS, STEP_SCHEMAS, Figure
from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.sim.microbench.collective_ops import OPERATIONS
from dicesim.tomlio import read_toml

#: fields a figure of schema /1 may have (the rest of :class:`Figure` is /2 only)
_V1_FIELDS = ("id", "role", "family", "gpu", "gpus", "nodes", "interconnect", "topology", "operation", "nbytes",
              "metric", "value", "unit", "value_range", "quote", "notes", "source", "deepep")


def _upgrade_v1(item: dict) -> dict:
    """A /1 figure as /2: a measurement, its own run, its source URL as the independence unit."""
    extra = sorted(set(item) - set(_V1_FIELDS))
    if extra:
        raise ValueError(f"{extra[0]}: unknown key in schema dicesim-published/1")
    if item.get("role") not in ("fit", "check"):
        raise ValueError(f"role: must be 'fit' or 'check' in schema dicesim-published/1, got {item.get('role')!r}")
    src = item.get("source") if isinstance(item.get("source"), dict) else {}
    url = re.sub(r"[:\s]+", "-", re.sub(r"^https?://", "", str(src.get("url", "unknown")))) or "unknown"
    return {**item, "evidence": "measurement", "group": f"{url}:{item.get('id', 'figure')}"}


def _check_machine(fig: Figure, where: str) -> None:
    from dicesim.topology import num_servers, world_size
    from dicesim.topology.machines import get_machine

    try:
        G = get_machine(fig.topology)
    except ConfigError as exc:
        raise ConfigError(f"{where}.topology", str(exc).split(": ", 1)[-1]) from None
    if fig.gpus > world_size(G):
        raise ConfigError(f"{where}.gpus", f"{fig.gpus} GPUs but topology {fig.topology!r} has {world_size(G)}")
    if not fig.operation.startswith("deepep"):
        return
    servers = num_servers(G)
    if fig.gpus != world_size(G) or fig.nodes != servers:
        raise ConfigError(f"{where}.gpus", f"a DeepEP figure uses the whole topology ({world_size(G)} GPUs on "
                                           f"{servers} nodes), got {fig.gpus} GPUs on {fig.nodes} nodes")
    nics = any(k == "nic" for _, k in G.nodes(data="kind"))
    if fig.operation in LL_OPS and not nics and (fig.deepep.ll_transport == "rdma" or servers > 1):  # type: ignore
        raise ConfigError(f"{where}.topology", f"{fig.topology!r} has no NIC for the low-latency kernels' RDMA path")


def parse_file(path: str | Path) -> list[Figure]:
    """Validate one published TOML file; every problem is one line naming file, figure and field."""
    p = Path(path)
    data = read_toml(p, what="published set", error=lambda problem: ConfigError(str(p), problem))
    schema = data.get("schema")
    if schema not in SCHEMAS:
        raise ConfigError(f"{p}: schema", f"must be one of {', '.join(map(repr, SCHEMAS))}, got {schema!r}")
    extra = sorted(set(data) - {"schema", "figure"})
    if extra:
        raise ConfigError(f"{p}: {extra[0]}", "unknown top-level key", ("schema", "figure"))
    items = data.get("figure")
    if not isinstance(items, list) or not items or not all(isinstance(x, dict) for x in items):
        raise ConfigError(f"{p}: figure", "needs at least one [[figure]] table")
    out = []
    for i, item in enumerate(items):
        where = f"{p}: figure[{i}]" + (f" ({item['id']})" if isinstance(item.get("id"), str) else "")
        try:
            fig = Figure(**(_upgrade_v1(item) if schema == SCHEMAS[0] else item))
        except ValidationError as exc:
            raise config_error_from_pydantic(exc, where, model=Figure, allowed={"__keys__": tuple(Figure.model_fields),
                                                          "operation": OPERATIONS, "metric": tuple(METRICS)}) from None
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from None
        _check_machine(fig, where)
        out.append(fig)
    return out


def _is_step_file(path: Path) -> bool:
    """Whether ``path`` belongs to the step-level set (:data:`~.schema.STEP_SCHEMAS`)."""
    try:
        return tomllib.loads(path.read_text()).get("schema") in STEP_SCHEMAS
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # parse_file says what is wrong with it


def load_published(paths: Iterable[str | Path]) -> list[Figure]:
    """Every figure of the given files and directories (``*.toml``, sorted); ids must be unique."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                raise ConfigError(str(p), "directory holds no published *.toml file")
            files += found
        else:
            files.append(p)
    figs: list[Figure] = []
    seen: dict[str, Path] = {}
    for f in files:
        if _is_step_file(f):  # the step level's files (step_level.py) may sit among the collective ones
            continue
        for fig in parse_file(f):
            if fig.id in seen:
                raise ConfigError(f"{f}: figure {fig.id}", f"duplicate id (also in {seen[fig.id]})")
            seen[fig.id] = f
            figs.append(fig)
    return figs
