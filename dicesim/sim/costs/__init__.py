"""What the work costs: the hardware profile, roofline op times, and the rows routing sends.

- :mod:`~dicesim.sim.costs.profile`: hardware profiles (TOML, provenance);
- :mod:`~dicesim.sim.costs.costmodel`: roofline time of each op;
- :mod:`~dicesim.sim.costs.routing`: expert load, routed rows between ranks.
"""
