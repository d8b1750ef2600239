"""How each number a prediction rests on is known: measured, fitted, cited or assumed.

One function per kind of number, each reading the provenance the number already carries:

- a topology link: its citation key (``dicesim.topology.hardware.source_status``);
- the NCCL model's per-transport efficiency: its ``fitted`` note (fitted on published figures,
  or a prior no figure moved);
- the compute profile: :func:`profile_basis`, the one place that decides whether a profile is
  *measured* (fitted on traces) or *datasheet* (public figures and stated assumptions).
"""

from __future__ import annotations

from typing import Literal

import networkx as nx

from dicesim.evidence import Status
from dicesim.sim.costs.profile import HardwareProfile
from dicesim.sim.network.nccl import NcclModel
from dicesim.topology.hardware import source_status

Basis = Literal["measured", "datasheet"]


def profile_basis(profile: HardwareProfile) -> Basis:
    """``measured`` when the profile was fitted on traced runs, ``datasheet`` otherwise.

    An explicit ``basis`` field on the profile wins; without one the profile's own provenance
    decides: calibration writes the sizes it was fitted on into ``fitted_range``, built-in
    datasheet profiles say ``not fitted``."""
    explicit = getattr(profile, "basis", None)
    if explicit in ("measured", "datasheet"):
        return explicit  # type: ignore[return-value]
    return "datasheet" if profile.fitted_range.strip() in ("", "not fitted") else "measured"


def link_status(G: nx.DiGraph, source_key: str) -> Status:
    """How the figure of a link citing ``source_key`` in ``G`` is known."""
    text = str(G.graph.get("sources", {}).get(source_key, ""))
    return source_status(source_key, text)  # type: ignore[return-value]


def efficiency_status(model: NcclModel, transport: str) -> tuple[Status, str]:
    """``(status, note)`` of the NCCL model's bandwidth efficiency on ``transport``."""
    note = model.fitted.get(f"bw_eff.{transport}", "")
    if note.startswith("fitted"):
        return "fitted", f"{note} (published set, dicesim/data/nccl.toml)"
    return "assumed", note or "no fitted figure"


def compute_status(profile: HardwareProfile) -> tuple[Status, str]:
    """``(status, source)`` of the profile's compute figures as a whole."""
    if profile_basis(profile) == "measured":
        return "measured", f"{profile.name}: {profile.source} ({profile.date})"
    return "assumed", (f"{profile.name}: datasheet peak {profile.peak_tflops:g} TFLOP/s and {profile.mem_bw_GBps:g} "
                       "GB/s, per-op efficiencies assumed (its citations; docs/hardware.md)")


def interference_status(profile: HardwareProfile) -> tuple[Status, str]:
    """``(status, source)`` of the compute slow-down while communication is in flight."""
    cite = next((v for k, v in profile.citations.items() if k.endswith("interference")), "")
    if profile_basis(profile) == "measured" and "assum" not in cite.lower():
        return "fitted", cite or profile.source
    return "assumed", cite or "no citation"
