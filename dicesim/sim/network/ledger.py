"""What every link carried: bytes and busy seconds, and (for a trace) each maximal busy period.

:class:`LinkLedger` is the accounting half of :class:`~dicesim.sim.network.network.FlowNetwork`:
the network walks a component's trajectory up to an offset and the ledger adds what each of
its links carried in each segment. With a busy-period hook, the ledger also keeps the open
period of every link and reports it when the link falls quiet or changes hands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

LinkBusyHook = Callable[[int, float, float, float], None]
"""``on_link_busy(link_id, start_s, end_s, nbytes)``: one maximal busy period of one link."""


class LinkLedger:
    """Per-link totals of one network (``n_links`` links); ``hook`` receives busy periods (or None)."""

    def __init__(self, n_links: int, hook: LinkBusyHook | None):
        self.hook = hook
        self.nbytes_L = np.zeros(n_links)
        self.busy_L = np.zeros(n_links)
        self._open_start_L = np.full(n_links, np.nan)  # busy periods (hook only)
        self._open_bytes_L = np.zeros(n_links)
        self._last_end_L = np.zeros(n_links)

    def account(self, comp: Any, r: float, owner_L: np.ndarray) -> None:
        """Add what component ``comp`` carried since its last accounting, up to offset ``r``
        (``owner_L``: the component holding each link, to tell whose busy period a quiet link closes)."""
        plan, links = comp.plan, comp.table.links_L
        if self.hook is None and comp.acct_k == 0 and comp.acct_r == plan.t_seg[0] and r >= plan.t_end:
            self.nbytes_L[links] += plan.total_bytes_L
            self.busy_L[links] += plan.total_busy_L
            comp.acct_k, comp.acct_r = plan.t_seg.shape[0] - 1, r
            return
        comp.acct_k, pieces = plan.walk(comp.acct_k, comp.acct_r, r)
        comp.acct_r = max(comp.acct_r, r)
        for a, b, busy_L, bytes_L in pieces:
            self.nbytes_L[links] += bytes_L
            self.busy_L[links[busy_L]] += b - a
            if self.hook is not None:
                self._track(comp, links, a, b, busy_L, bytes_L, owner_L)

    def close(self, links_L: np.ndarray) -> None:
        """Report the open busy periods of ``links_L`` (hook only)."""
        for i in links_L[~np.isnan(self._open_start_L[links_L])].tolist():
            self._emit(i)

    def totals(self, links_L: np.ndarray) -> np.ndarray:
        """``(2, len(links_L))``: bytes carried and busy seconds accounted so far."""
        return np.stack((self.nbytes_L[links_L], self.busy_L[links_L]))

    def add_totals(self, links_L: np.ndarray, totals: np.ndarray) -> None:
        """Add ``(2, len(links_L))`` bytes and busy seconds (traffic accounted without simulating it)."""
        self.nbytes_L[links_L] += totals[0]
        self.busy_L[links_L] += totals[1]

    def _track(self, comp: Any, links, a: float, b: float, busy_L, bytes_L, owner_L: np.ndarray) -> None:
        opened, t0 = self._open_start_L, comp.t0_s
        quiet = links[~busy_L]
        quiet = quiet[owner_L[quiet] == comp.cid]  # a link taken over is not ours to close
        for i in quiet[~np.isnan(opened[quiet])].tolist():
            self._emit(i)
        on = links[busy_L]
        opened[on[np.isnan(opened[on])]] = t0 + a
        self._last_end_L[on] = t0 + b
        self._open_bytes_L[links] += bytes_L

    def _emit(self, i: int) -> None:
        start, nbytes = float(self._open_start_L[i]), float(self._open_bytes_L[i])
        self._open_start_L[i] = np.nan
        self._open_bytes_L[i] = 0.0
        self.hook(i, start, float(self._last_end_L[i]), nbytes)
