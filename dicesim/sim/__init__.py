"""The simulator: one scenario's plan run on simpy over a flow network, and its metrics.

- :mod:`~dicesim.sim.costs`: hardware profile, op costs, routed rows;
- :mod:`~dicesim.sim.network`: the flow-level network;
- :mod:`~dicesim.sim.engine`: the plan compiled to generic instructions, run on every rank;
- :mod:`~dicesim.sim.fold`, :mod:`~dicesim.sim.metrics`, :mod:`~dicesim.sim.api`: exact folding of
  equivalent groups, the result tables, ``simulate()``;
- :mod:`~dicesim.sim.hoststaged`: a host-staged one-GPU run; :mod:`~dicesim.sim.microbench`: one
  collective on its own.
"""
