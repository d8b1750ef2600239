"""What a collective library really does on a link, where the spec sheet is wrong.

Topologies carry line rates (:mod:`dicesim.topology.hardware`). A :class:`NcclModel` says what
share of them a collective reaches and what each protocol hop costs, per *transport*: the
path the library takes between two GPUs, read off the link class and the graph's ``p2p`` flag:

=================  =====================================================================
``nvlink``          NCCL peer-to-peer over NVLink / NVSwitch
``pcie_p2p``        NCCL peer-to-peer over PCIe (GPUs that allow it)
``shm``             no peer-to-peer: NCCL's SHM transport stages every byte in host memory,
                    so it crosses PCIe up and down and the host bridge twice (the route does
                    that already); the factor is the share of PCIe line rate reached that way
``net``             NIC to NIC (InfiniBand / RoCE), and a NIC's own attachment (its PCIe
                    link carries network-transport bytes, GPUDirect RDMA, not NCCL's
                    peer-to-peer protocol)
``deepep_nvlink``   DeepEP's own NVLink kernels (fewer SMs than NCCL, other chunking)
``deepep_net``      DeepEP's own RDMA kernels (NVSHMEM / IBGDA), NIC to NIC and the NIC's
                    attachment: another library on the same NIC, as ``deepep_nvlink`` is on NVLink
=================  =====================================================================

A library whose kernels, not the link, set its rate on a transport has a *kernel rate*
(``kernel_Bps``): a link of that transport carries at most that many bytes per second, whatever
its line rate. DeepEP's normal kernels on NVLink are such a case (:data:`KERNEL_BOUND`): a fixed
number of SMs copies every token (24 in its benchmark), and they reach 153-160 GB/s per GPU on
H800 (200 GB/s NVLink per direction; DeepEP README, pplx-kernels#10), 125-146 GB/s on the
forwarding leg on H200 and H20 (450 GB/s; DeepEP#493, #137) and 169 GB/s on GB200 (900 GB/s;
DeepEP#394): a rate of the kernel, not a share of the link.

Host memory, socket links and root ports keep their nominal figures (factor 1). Every number
of the built-in model (``dicesim/data/nccl.toml``) is fitted on a named part of the published
set (``dicesim accuracy --published``) or carries a citation; docs/nccl.md explains each one.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Literal

import networkx as nx
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dicesim.atomic import write_atomic
from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.tomlio import read_toml

TRANSPORTS: tuple[str, ...] = ("nvlink", "pcie_p2p", "shm", "net", "deepep_nvlink", "deepep_net")
Transport = Literal["nvlink", "pcie_p2p", "shm", "net", "deepep_nvlink", "deepep_net"]
#: a transport added after models were first saved -> the one an older file's value stands in for
_ADDED: dict[str, str] = {"deepep_net": "net"}
LIBRARIES: tuple[str, ...] = ("nccl", "deepep")
#: transports whose rate is the library kernels' own (``kernel_Bps``), fitted in place of a share of line rate
KERNEL_BOUND: tuple[str, ...] = ("deepep_nvlink",)


class NcclModel(BaseModel):
    """Per-transport bandwidth efficiency and protocol-hop latency, plus one base latency.

    Collective time = ``base_latency_s`` (+ ``a2a_latency_s`` for an all-to-all: its grouped
    send/receive pairs) + hops x (route latency + ``hop_latency_s[transport]``) + the flows'
    drain time over links whose bandwidth is ``bw_eff[transport]`` x line rate, at most ``kernel_Bps[transport]``
    (:mod:`dicesim.sim.microbench.collective_ops`). ``fitted`` maps each parameter to how it was obtained.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source: str
    date: str
    fit_on: str = "not fitted"
    bw_eff: dict[Transport, float]
    base_latency_s: float = Field(ge=0)
    a2a_latency_s: float = Field(default=0.0, ge=0)
    hop_latency_s: dict[Transport, float]
    #: transport -> the most a link of it carries for its library, in bytes/s (the kernels' rate; none: no bound)
    kernel_Bps: dict[Transport, float] = Field(default_factory=dict)
    fitted: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _older_files(cls, data: object) -> object:
        """A model saved before ``deepep_net`` existed gives it its ``net`` values (what it meant then)."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for table in ("bw_eff", "hop_latency_s"):
            t = out.get(table)
            if isinstance(t, dict):
                out[table] = {**{new: t[old] for new, old in _ADDED.items() if new not in t and old in t}, **t}
        return out

    @model_validator(mode="after")
    def _complete(self) -> "NcclModel":
        for table in ("bw_eff", "hop_latency_s"):
            missing = [t for t in TRANSPORTS if t not in getattr(self, table)]
            if missing:
                raise ValueError(f"{table} is missing {missing}")
        if any(not 0 < v <= 1 for v in self.bw_eff.values()):
            raise ValueError("bw_eff values must be in (0, 1]")
        if any(v < 0 for v in self.hop_latency_s.values()):
            raise ValueError("hop_latency_s values must be >= 0")
        if any(not v > 0 for v in self.kernel_Bps.values()):
            raise ValueError("kernel_Bps values must be > 0")
        return self

    def with_updates(self, **fields: object) -> "NcclModel":
        """A validated copy with some fields replaced (fitting uses this)."""
        return nccl_model_from_dict({**self.model_dump(), **fields}, origin="with_updates")


def nccl_model_from_dict(data: dict, origin: str = "nccl model") -> NcclModel:
    """Validate a mapping into a model; problems become one-line ConfigErrors."""
    try:
        return NcclModel(**data)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, "nccl", {"__keys__": tuple(NcclModel.model_fields)}) from None
    except TypeError as exc:
        raise ConfigError("nccl", f"{exc} in {origin}") from None


def load_nccl_model(path: str | os.PathLike) -> NcclModel:
    """Read a model TOML file."""
    data = read_toml(path, what="NCCL model", error=lambda p: ConfigError("nccl", f"{path}: {p}"))
    return nccl_model_from_dict(data, origin=str(path))


def save_nccl_model(model: NcclModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as TOML atomically; returns the path."""
    text = tomli_w.dumps(model.model_dump(mode="json"))
    return write_atomic(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))


def builtin_nccl_model() -> NcclModel:
    """The model shipped with dicesim (fitted on the published set's ``role == "fit"`` figures)."""
    text = (resources.files("dicesim") / "data" / "nccl.toml").read_text(encoding="utf-8")
    return _builtin_from_text(text)


@functools.lru_cache(maxsize=4)
def _builtin_from_text(text: str) -> NcclModel:
    # keyed by the file's content (a pure function of it; the model is frozen): a study builds
    # hundreds of engines, each of which would otherwise parse and validate the same file
    return nccl_model_from_dict(tomllib.loads(text), origin="built-in NCCL model")


def link_transport(link_class: str, p2p: bool, library: str = "nccl", *, nic: bool = False) -> str | None:
    """The transport a link of ``link_class`` carries, or None when no factor applies.

    ``nic``: the link ends at a NIC (its attachment), so it carries the network transport's
    bytes whatever its class. ``library`` ``"memcpy"`` (plain copy-engine copies, as the
    host-staged check makes) gets no factor: its link figures are already measured copy rates."""
    if library == "memcpy":
        return None
    cls = link_class.lower()
    if nic or cls.startswith(("ib", "roce", "net")):
        return "deepep_net" if library == "deepep" else "net"
    if cls.startswith("nvlink"):
        return "deepep_nvlink" if library == "deepep" else "nvlink"
    if cls.startswith("pcie"):
        return "pcie_p2p" if p2p else "shm"
    return None


def edge_transport(G: nx.DiGraph, u: str, v: str, library: str = "nccl") -> str | None:
    """The transport edge ``(u, v)`` of ``G`` carries for ``library`` (see :func:`link_transport`)."""
    nic = G.nodes[u].get("kind") == "nic" or G.nodes[v].get("kind") == "nic"
    return link_transport(str(G.edges[u, v].get("link", "")), bool(G.graph.get("p2p", True)), library, nic=nic)


def effective_graph(G: nx.DiGraph, model: NcclModel, library: str = "nccl") -> nx.DiGraph:
    """A copy of ``G`` whose link bandwidths are what ``library`` reaches on them (share of line rate,
    at most the kernels' rate)."""
    H = G.copy()
    for u, v, d in H.edges(data=True):
        t = edge_transport(G, u, v, library)
        if t is not None:
            d["bw_Bps"] = min(d["bw_Bps"] * model.bw_eff[t], model.kernel_Bps.get(t, float("inf")))
    return H


def route_transports(G: nx.DiGraph, routes: Iterable[tuple], library: str = "nccl") -> set[str]:
    """Transports crossed by any of ``routes`` (tuples of directed edges)."""
    edges = {e for r in routes for e in r}
    return {t for t in (edge_transport(G, u, v, library) for u, v in edges) if t is not None}


def hop_latency_s(model: NcclModel, transports: Iterable[str]) -> float:
    """Protocol latency of one hop that may cross ``transports``: the slowest one's."""
    return max((model.hop_latency_s[t] for t in transports), default=0.0)  # type: ignore[index]
