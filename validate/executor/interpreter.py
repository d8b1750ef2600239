"""Run one plan on one rank: every action through the one handler registered for its kind.

A family's executor (the expert-parallel one: :class:`validate.executor.runner.PlanRunner`)
subclasses :class:`PlanInterpreter` and registers one handler per action kind it runs
(:meth:`PlanInterpreter.handlers`); a plan holding a kind without a handler is refused when the
runner is built, not when the step reaches it. The interpreter owns what every family does the
same way: the sampler hook (:meth:`PlanInterpreter.denoise`), the step's wall time and trace
end, and the buffers the plan frees right after an action (:attr:`dicesim.plan.Plan.gc_frees`),
handed to the family's store. No strategy rule is re-derived here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

import torch

from dicesim.plan import Action, ActionKind, Plan

#: one action kind's handler: ``handler(action, step)``; the ``final`` handler returns the step's output
Handler = Callable[[Action, int], Any]


class PlanInterpreter:
    """One rank's run of ``plan``; ``denoise`` plugs into :func:`validate.model.sampler.sample`.

    Subclasses provide :meth:`handlers`, :meth:`begin_step`, :meth:`end_step` and :meth:`free`;
    ``sync_step`` ends a GPU step (default: ``torch.cuda.synchronize``).
    """

    def __init__(self, plan: Plan, *, sync_step: Callable[[], None] | None = None):
        self.plan = plan
        self.sync_step = sync_step or torch.cuda.synchronize
        self._handlers = dict(self.handlers())
        missing = sorted({str(a.kind) for _, acts in plan for a in acts if a.kind not in self._handlers})
        if missing:
            raise ValueError(f"{type(self).__name__} has no handler for plan action kind(s) {', '.join(missing)}")
        self._frees = plan.gc_frees

    def handlers(self) -> Mapping[StrEnum, Handler]:
        """Action kind -> its handler (one per kind the family's plans use)."""
        raise NotImplementedError

    def begin_step(self, x_BCLL: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor, t: int) -> None:
        """Take the step's inputs before its first action."""

    def free(self, what: StrEnum, layer: int, tok_step: int) -> None:
        """Free a buffer the plan frees early (``--auto-gc``)."""
        raise NotImplementedError

    def end_step(self, t: int, latency_s: float) -> None:
        """Bookkeeping after the step's last action (``latency_s``: its wall time)."""

    @torch.no_grad()
    def denoise(self, x_BCLL: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor, step_index: int) -> torch.Tensor:
        """Run step ``step_index`` of the plan on this rank's network batch."""
        t = step_index
        start = time.perf_counter()
        self.begin_step(x_BCLL, t_B, y_B, t)
        out = None
        handlers, frees = self._handlers, self._frees
        for i, action in enumerate(self.plan.steps[t]):
            result = handlers[action.kind](action, t)
            if action.kind == ActionKind.FINAL:
                out = result
            for layer, what, tok_step in frees.get((t, i), ()):
                self.free(what, layer, tok_step)
        if x_BCLL.is_cuda:
            self.sync_step()
        self.end_step(t, time.perf_counter() - start)
        return out
