"""The verdict sentence of a comparison: which strategy is fastest, by how much, within which band,
and whether its lead is larger than the bands (the order is resolved) or not.

Bands of strategies on one machine share their errors (same links, same profile), so overlap is
a conservative test: an order the bands resolve holds for any error inside them; an order they
do not resolve may still hold, and the sensitivity analysis says where it would flip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dicesim.evidence import ErrorBand


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The fastest strategy, the ones whose bands overlap it, and the sentence."""

    fastest: str
    contenders: tuple[str, ...]
    resolved: bool
    sentence: str


def _ms(t_s: float) -> str:
    return f"{t_s * 1e3:.1f} ms"


def band_text(band: ErrorBand | None) -> str:
    """``655.2-978.3 ms (communication only)`` or ``no measured band``."""
    if band is None or band.covers == "none":
        return "no measured band"
    what = "whole step" if band.covers == "step" else "communication only"
    if band.covers == "communication" and band.high_s <= band.low_s:
        return f"{_ms(band.low_s)} (no communication to be wrong about; the whole-step error is unmeasured)"
    return f"{band.low_s * 1e3:.1f}-{band.high_s * 1e3:.1f} ms ({what})"


def order_verdict(rows: Sequence[tuple[str, float, ErrorBand | None]], *, baseline_s: float | None = None,
                  baseline: str = "sync") -> Verdict:
    """``rows``: (strategy, step latency in s, band). The fastest, which bands overlap its own, one sentence."""
    ordered = sorted(rows, key=lambda r: r[1])
    name, step_s, band = ordered[0]
    speed = f", {baseline_s / step_s:.2f}x over {baseline}" if baseline_s and name != baseline and step_s > 0 else ""
    head = f"{name} is fastest: {_ms(step_s)} per step{speed} (band {band_text(band)})."
    if len(ordered) == 1:
        return Verdict(fastest=name, contenders=(), resolved=True, sentence=head)
    second, second_s, _ = ordered[1]
    lead = second_s / step_s - 1 if step_s > 0 else 0.0
    if band is None or band.covers == "none":
        return Verdict(fastest=name, contenders=(), resolved=False,
                       sentence=f"{head} {second} is next, {lead:.1%} slower; with no measured band the order "
                                "cannot be judged.")
    ties = tuple(n for n, t, _ in ordered[1:] if t <= step_s * (1 + 1e-9))
    if ties:
        head += f" {', '.join(ties)} {'ties' if len(ties) == 1 else 'tie'} with it (the same timing)."
        ordered = [ordered[0], *[r for r in ordered[1:] if r[0] not in ties]]
        if len(ordered) == 1:
            return Verdict(fastest=name, contenders=ties, resolved=False, sentence=head)
        second, second_s, _ = ordered[1]
        lead = second_s / step_s - 1 if step_s > 0 else 0.0
    rivals = tuple(n for n, _, b in ordered[1:] if b is not None and band.overlaps(b))
    if not rivals:
        return Verdict(fastest=name, contenders=(), resolved=True,
                       sentence=f"{head} It leads {second} by {lead:.1%}, outside both bands: the order is resolved.")
    return Verdict(fastest=name, contenders=rivals, resolved=False,
                   sentence=f"{head} {second} is {lead:.1%} slower and the bands of {', '.join(rivals)} overlap "
                            f"{name}'s: the order is not resolved.")
