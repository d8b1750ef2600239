"""Machines made from a preset by a few changes, and the name a topology goes by.

``dicesim topology derive 8x-rtx4090-pcie --gpu l40s --p2p --name my-box`` keeps the preset's
layout (sockets, switches, links) and changes what is named: the GPU model (which picks the
built-in compute profile), whether GPUs talk peer-to-peer (which decides the routes) and,
with ``--bw CLASS=GB/s``, the bandwidth of every link of one class. Each changed figure is
cited as what it is: a value the user supplied, an assumption until measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import networkx as nx

from dicesim.errors import ConfigError, DicesimError
from dicesim.topology.graph import GPU_KEYS
from dicesim.topology.presets import PRESETS, SCALED, _SCALED_RE, get_topology
from dicesim.topology.validate import validate_topology


def derive_topology(base: nx.DiGraph, *, name: str, gpu: str | None = None, p2p: bool | None = None,
                    bandwidths_GBps: Mapping[str, float] | None = None, command: str = "") -> nx.DiGraph:
    """A validated copy of ``base`` with a new name and, where given, GPU model, peer-to-peer flag and
    per-class link bandwidths (GB/s per direction; every edge of the class gets the figure)."""
    if not name or not name.strip():
        raise ConfigError("--name", "must not be empty")
    if gpu is not None and gpu not in GPU_KEYS:
        raise ConfigError("--gpu", f"unknown GPU {gpu!r}", GPU_KEYS)
    G = base.copy()
    classes = {str(d.get("link", "")) for _, _, d in G.edges(data=True)}
    sources = dict(G.graph.get("sources", {}))
    changes = []
    for cls, gbps in (bandwidths_GBps or {}).items():
        if cls not in classes:
            raise ConfigError("--bw", f"no link of class {cls!r} in {base.graph.get('name', 'the topology')}",
                              sorted(classes))
        if not gbps > 0:
            raise ConfigError("--bw", f"{cls}={gbps:g}: bandwidth must be > 0 GB/s")
        key = f"user-{cls}"
        by = command or "dicesim topology derive"
        sources[key] = (f"{gbps:g} GB/s per direction for every {cls} link, set by `{by}`"
                        f": a value supplied by the user, an assumption until measured (was: "
                        f"{_old_bw(G, cls)}).")
        for _, _, d in G.edges(data=True):
            if d.get("link") == cls:
                d["bw_Bps"], d["source"] = gbps * 1e9, key
        changes.append(f"{cls} {gbps:g} GB/s")
    if gpu is not None:
        G.graph["gpu"] = gpu
        changes.append(f"GPU {gpu}")
    if p2p is not None:
        G.graph["p2p"] = bool(p2p)
        changes.append("peer-to-peer " + ("on" if p2p else "off"))
    sources["derived"] = (f"derived from {base.graph.get('name', '?')} by `{command or 'dicesim topology derive'}`"
                          f" ({', '.join(changes) or 'renamed only'}); every other figure keeps its source.")
    G.graph["sources"] = sources
    G.graph["name"] = name.strip()
    validate_topology(G)
    return G


def _old_bw(G: nx.DiGraph, cls: str) -> str:
    values = sorted({float(d["bw_Bps"]) for _, _, d in G.edges(data=True) if d.get("link") == cls})
    return ", ".join(f"{v / 1e9:g} GB/s" for v in values)


def parse_bandwidths(items: list[str] | None) -> dict[str, float]:
    """``["upi=40", "pcie4=25"]`` -> ``{"upi": 40.0, "pcie4": 25.0}`` (GB/s); bad items are one-line errors."""
    out: dict[str, float] = {}
    for item in items or []:
        cls, sep, value = item.partition("=")
        try:
            out[cls.strip()] = float(value)
        except ValueError:
            cls = ""
        if not sep or not cls.strip():
            raise ConfigError("--bw", f"{item!r} is not CLASS=GB/s", "e.g. upi=40")
    return out


def machine_name(topology: str | Path) -> str:
    """The name a topology goes by in titles and labels: a preset's own name, a file's graph name."""
    key = str(topology)
    if key in PRESETS:
        return key
    m = _SCALED_RE.match(key)
    if m is not None and m.group(2) in SCALED:
        return key
    try:
        return str(get_topology(key).graph.get("name") or Path(key).stem)
    except DicesimError:  # a label must not fail; the run itself reports a bad file
        return Path(key).stem or key
