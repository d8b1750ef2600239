"""Does the answer survive what is not measured? Vary each uncalibrated parameter on the bottleneck.

A :class:`Knob` is one parameter and a stated range (factors on its value):

- a link class on the bottleneck whose figure is not measured: x0.5 .. x2 of its bandwidth;
- the collective library's efficiency on a bottleneck transport (fitted on published figures):
  within its family's largest held-out error, never above line rate;
- the compute throughput of a datasheet profile: x0.5 .. x2 (peak FLOP/s and memory bandwidth);
- the assumed compute slow-down while communicating: x0.5 .. x2.

:func:`sensitivity` simulates every strategy at five points of each range (the ends, their
geometric midpoints to the nominal value, the nominal run itself) and, where the fastest
strategy changes between two points, bisects the factor (four halvings on the log scale,
simulating the two strategies that swap) to name the value at which the order flips. Each
point is a full simulation on a modified copy of the graph or profile; nothing is
interpolated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import networkx as nx

from dicesim.evidence import Assumption, Evidence, Status
from dicesim.scenario import Scenario
from dicesim.sim.costs.profile import HardwareProfile
from dicesim.sim.network.nccl import NcclModel, link_transport
from dicesim.strategy import Strategy, make_strategy
from dicesim.trust.facts import TRANSPORT_FAMILY
from dicesim.trust.provenance import link_status

#: ties between strategies closer than this (relative) share the win
TIE = 1e-9
_BISECT_STEPS = 4


@dataclass(frozen=True, kw_only=True)
class Knob:
    """One varied parameter: what it scales and over which factors."""

    key: str  # "link:upi@upi" (class@source), "eff:shm", "compute", "interference"
    label: str
    base: float  # value at factor 1, in ``unit``
    unit: str
    status: Status
    low: float
    high: float
    #: the largest factor the parameter may take (an efficiency stays <= line rate)
    cap: float = math.inf

    def factor(self, f: float) -> float:
        return min(f, self.cap)

    def value(self, f: float) -> str:
        v = self.base * self.factor(f)
        return f"{v:,.0f} {self.unit}".strip() if abs(v) >= 100 else f"{v:.3g} {self.unit}".strip()

    def grid(self) -> tuple[float, ...]:
        """The ends of the range and their geometric midpoints to 1, without 1 (ascending)."""
        pts = {self.low, math.sqrt(self.low), math.sqrt(self.high), self.high}
        return tuple(sorted(self.factor(p) for p in pts if p != 1.0))

    def describe(self) -> str:
        return (f"{self.label} ({self.status}, {self.value(1.0)}): x{self.factor(self.low):.3g}..x"
                f"{self.factor(self.high):.3g} = {self.value(self.low)}..{self.value(self.high)}")

    def apply(self, G: nx.DiGraph, profile: HardwareProfile, f: float) -> tuple[nx.DiGraph, HardwareProfile]:
        """``G`` and ``profile`` with this parameter scaled by ``f`` (copies; inputs untouched)."""
        f = self.factor(f)
        kind, _, name = self.key.partition(":")
        if kind == "compute":
            return G, profile.with_updates(peak_tflops=profile.peak_tflops * f, mem_bw_GBps=profile.mem_bw_GBps * f)
        if kind == "interference":
            return G, profile.with_updates(interference=profile.interference * f)
        H = G.copy()
        p2p = bool(G.graph.get("p2p", True))
        cls_name, _, source = name.partition("@")
        for _, _, d in H.edges(data=True):
            cls = str(d.get("link", ""))
            if (kind == "link" and cls == cls_name and (not source or d.get("source") == source)) or (
                    kind == "eff" and link_transport(cls, p2p) == name):
                d["bw_Bps"] = float(d["bw_Bps"]) * f
        return H, profile


def knobs_for(assumptions: Sequence[Assumption], G: nx.DiGraph, profile: HardwareProfile, nccl: NcclModel,
              evidence: Evidence, bottleneck: Sequence[tuple[str, str]]) -> list[Knob]:
    """The knobs of a run: its bottleneck's unmeasured links (each (class, citation) one parameter) and
    efficiencies, compute and interference when they are not measured (ranges: the module docstring)."""
    knobs: list[Knob] = []
    p2p = bool(G.graph.get("p2p", True))
    classes = {c for c, _ in bottleneck}
    for cls, src in bottleneck:
        item = next((a for a in assumptions if a.parameter == f"{cls} link bandwidth" and a.source == src), None)
        if item is not None and item.status == "measured":
            continue
        bws = [float(d["bw_Bps"]) for _, _, d in G.edges(data=True) if d.get("link") == cls and d.get("source") == src]
        several = sum(1 for c, _ in bottleneck if c == cls) > 1
        knobs.append(Knob(key=f"link:{cls}@{src}", label=f"{cls} bandwidth" + (f" ({src})" if several else ""),
                          base=max(bws) / 1e9, unit="GB/s", status=item.status if item else link_status(G, src),
                          low=0.5, high=2.0))
    for t in dict.fromkeys(t for c in sorted(classes) if (t := link_transport(c, p2p)) is not None):
        fam = evidence.collective.families.get(TRANSPORT_FAMILY.get(t, "")) if evidence.collective else None
        e = fam.max_abs_err if fam is not None and fam.held_out else 0.5
        eff = nccl.bw_eff[t]  # type: ignore[index]
        knobs.append(Knob(key=f"eff:{t}", label=f"NCCL efficiency on {t}", base=eff, unit="of line rate",
                          status="fitted" if fam is not None else "assumed", low=1 / (1 + e), high=1 + e,
                          cap=1.0 / eff))
    comp = next((a for a in assumptions if a.parameter.startswith("compute throughput")), None)
    if comp is not None and comp.status != "measured":
        knobs.append(Knob(key="compute", label="compute throughput", base=profile.peak_tflops, unit="TFLOP/s peak",
                          status=comp.status, low=0.5, high=2.0))
    inter = next((a for a in assumptions if a.parameter.startswith("compute slow-down")), None)
    if inter is not None and inter.status != "measured" and profile.interference > 0:
        knobs.append(Knob(key="interference", label="compute slow-down while communicating",
                          base=profile.interference * 100, unit="% longer compute", status=inter.status,
                          low=0.5, high=2.0))
    return knobs


@dataclass(frozen=True, kw_only=True)
class Flip:
    """Where the fastest strategy changes along one knob."""

    knob: str
    factor: float
    value: str
    winner: str

    def sentence(self, nominal: str) -> str:
        return f"{self.winner} overtakes {nominal} at {self.knob} ~ {self.value} (x{self.factor:.2f})"


@dataclass(frozen=True, kw_only=True)
class KnobResult:
    """One knob: every strategy's step latency at each grid factor, and the flips found."""

    knob: Knob
    latency: dict[float, dict[str, float]]
    flips: tuple[Flip, ...] = ()

    def winners(self, f: float) -> tuple[str, ...]:
        return fastest(self.latency[f])


@dataclass(frozen=True, kw_only=True)
class Sensitivity:
    """Every knob's result and the verdict on the nominal fastest strategy."""

    nominal: str
    results: tuple[KnobResult, ...]
    strategies: tuple[str, ...] = field(default=())

    @property
    def robust(self) -> bool:
        return not any(r.flips for r in self.results)

    def spans(self) -> list[str]:
        """Per knob, the nominal strategy's step latency at the ends of the range."""
        out = []
        for r in self.results:
            lat = [r.latency[f][self.nominal] for f in sorted(r.latency)]
            out.append(f"{r.knob.label} {r.knob.value(min(r.latency))}..{r.knob.value(max(r.latency))}: "
                       f"{lat[0] * 1e3:.1f}..{lat[-1] * 1e3:.1f} ms")
        return out

    def verdict(self) -> str:
        """One sentence: robust over the stated ranges, or where it flips (one strategy: how far its
        step latency moves)."""
        if not self.results:
            return "Sensitivity: no unmeasured parameter on the bottleneck to vary."
        if len(self.strategies) == 1:
            return f"Sensitivity of {self.nominal}'s step latency: " + "; ".join(self.spans()) + "."
        ranges = "; ".join(r.knob.describe() for r in self.results)
        if self.robust:
            return f"Sensitivity: {self.nominal} stays fastest over every range varied ({ranges}): robust."
        flips = "; ".join(f.sentence(self.nominal) for r in self.results for f in r.flips)
        return f"Sensitivity: {self.nominal} is not robust: {flips} (ranges varied: {ranges})."

    def rows(self) -> list[dict]:
        """One row per knob and factor: the factor, the value, the fastest strategy and each latency."""
        out = []
        for r in self.results:
            for f in sorted(r.latency):
                out.append({"parameter": r.knob.label, "status": r.knob.status, "factor": round(r.knob.factor(f), 3),
                            "value": r.knob.value(f), "fastest": " = ".join(r.winners(f)),
                            **{f"{s}_step_latency_s": v for s, v in r.latency[f].items()}})
        return out


def fastest(latency: dict[str, float]) -> tuple[str, ...]:
    """The strategies tied for the lowest latency (within :data:`TIE`), in their given order."""
    best = min(latency.values())
    return tuple(s for s, v in latency.items() if v <= best * (1 + TIE))


Evaluate = Callable[[tuple[Scenario, nx.DiGraph, HardwareProfile]], float]


def _step_latency(job: tuple[Scenario, nx.DiGraph, HardwareProfile]) -> float:
    from dicesim.sim.api import simulate

    sc, G, profile = job
    return float(simulate(sc, graph=G, profile=profile, record=False).summary()["step_latency_s"])


def sensitivity(scenario: Scenario, strategies: Sequence[str] | Mapping[str, Strategy], nominal: dict[str, float],
                knobs: Sequence[Knob], G: nx.DiGraph, profile: HardwareProfile, *, workers: int = 1,
                evaluate: Evaluate | None = None) -> Sensitivity:
    """Vary each knob over its grid for every strategy (preset names, or names mapped to strategies;
    ``nominal``: their step latencies at factor 1)."""
    evaluate = evaluate or _step_latency
    by_name = dict(strategies) if isinstance(strategies, Mapping) else {s: make_strategy(s) for s in strategies}
    names = list(by_name)
    winner = fastest({s: nominal[s] for s in names})[0]
    jobs, keys = [], []
    for k in knobs:
        for f in k.grid():
            H, P = k.apply(G, profile, f)
            for s in names:
                jobs.append((scenario.with_strategy(by_name[s]), H, P))
                keys.append((k.key, f, s))
    values = _run(jobs, evaluate, workers)
    table: dict[str, dict[float, dict[str, float]]] = {k.key: {1.0: {s: nominal[s] for s in names}} for k in knobs}
    for (kk, f, s), v in zip(keys, values):
        table[kk].setdefault(f, {})[s] = v
    results = []
    for k in knobs:
        lat = table[k.key]
        flips = _flips(k, lat, winner, scenario, G, profile, evaluate, by_name)
        results.append(KnobResult(knob=k, latency=dict(sorted(lat.items())), flips=tuple(flips)))
    return Sensitivity(nominal=winner, results=tuple(results), strategies=tuple(names))


def _run(jobs: list, evaluate: Evaluate, workers: int) -> list[float]:
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            return list(pool.map(evaluate, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    return [evaluate(j) for j in jobs]


def _flips(k: Knob, lat: dict[float, dict[str, float]], winner: str, scenario: Scenario, G: nx.DiGraph,
           profile: HardwareProfile, evaluate: Evaluate, by_name: Mapping[str, Strategy]) -> list[Flip]:
    """Walk outward from factor 1 on each side; at the first grid point where ``winner`` is no longer
    among the fastest, bisect (log scale) between it and the last point where it was."""
    factors = sorted(lat)
    mid = factors.index(1.0)
    out = []
    for side in (factors[mid + 1:], factors[:mid][::-1]):
        inside = 1.0
        for f in side:
            wins = fastest(lat[f])
            if winner in wins:
                inside = f
                continue
            rival = wins[0]
            lo, hi = inside, f
            for _ in range(_BISECT_STEPS):
                m = math.sqrt(lo * hi)
                H, P = k.apply(G, profile, m)
                pair = {s: evaluate((scenario.with_strategy(by_name[s]), H, P)) for s in (winner, rival)}
                if winner in fastest(pair):
                    lo = m
                else:
                    hi = m
            at = math.sqrt(lo * hi)
            out.append(Flip(knob=k.label, factor=k.factor(at), value=k.value(at), winner=rival))
            break
    return out
