"""Plans kept for reuse by one owner: a study, a search, an evaluator.

A plan is a pure function of (strategy, layers, steps), immutable once built, and the figures
derived from it (lags, held buffers) are computed once on first use. A sweep, a study or a
recommendation simulates hundreds of configurations with a handful of distinct plans (the
default study: 180 configurations, 10 plans); building and replaying each plan again for every
configuration was half of a configuration's cost. The owner makes a :class:`PlanCache` and hands it
to :func:`dicesim.sim.api.simulate`; nothing is cached at module level, so two owners never see
each other's plans, and a cache sent to another process arrives empty.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from dicesim.plan.family import build_plan
from dicesim.plan.vocabulary import Plan

#: plans kept per cache (the oldest goes first); a plan of a 50-step, 40-layer run is ~1 MB
MAX_PLANS = 64
#: figures derived from plans kept per cache (compiled programs, window searches; the oldest goes first)
MAX_DERIVED = 256


class PlanCache:
    """Memo of :func:`~dicesim.plan.family.build_plan` for one owner."""

    def __init__(self, max_plans: int = MAX_PLANS):
        self.max_plans = int(max_plans)
        self._plans: dict[tuple, Plan] = {}
        #: (id(plan), key) -> (plan, figure): the plan is kept with its figure, so its id stays its own
        self._derived: dict[tuple, tuple[Plan, Any]] = {}
        #: actions shared by its plans (frozen values: equal ones are one object; most of a build
        #: was making them, and a search's plans share most of theirs)
        self._actions: dict[tuple, Any] = {}
        self.hits = self.misses = 0

    def get(self, strategy: Any, num_layers: int, num_steps: int) -> Plan:
        """The plan of ``strategy`` for ``num_layers`` layers and ``num_steps`` steps (built once)."""
        key = (type(strategy), strategy, int(num_layers), int(num_steps))
        plan = self._plans.get(key)
        if plan is not None:
            self.hits += 1
            return plan
        self.misses += 1
        plan = build_plan(strategy, num_layers, num_steps, actions=self._actions)
        if len(self._plans) >= self.max_plans:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan
        return plan

    def keep_at_least(self, n_plans: int) -> None:
        """Keep ``n_plans`` plans before the oldest goes (a search whose classes are each read three
        times: their metrics, the quality model, the simulation; ~1 MB a plan)."""
        self.max_plans = max(self.max_plans, int(n_plans))

    def derived(self, plan: Plan, key: Hashable, build: Callable[[], Any]) -> Any:
        """What ``build()`` derives from ``plan`` for ``key``, built once per (plan, key).

        For users of plans that compile or search them (the simulator's engine: :mod:`dicesim.sim.engine.skeleton`);
        ``key`` names everything besides the plan the figure depends on, and the figure must not be changed."""
        k = (id(plan), key)
        hit = self._derived.get(k)
        if hit is not None and hit[0] is plan:
            return hit[1]
        figure = build()
        if len(self._derived) >= MAX_DERIVED:
            self._derived.pop(next(iter(self._derived)))
        self._derived[k] = (plan, figure)
        return figure

    def __getstate__(self) -> dict:
        """Pickled (to a Dask worker) without its plans: they are rebuilt where they are used."""
        return {"max_plans": self.max_plans}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_plans"])
