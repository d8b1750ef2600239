"""The flow-level network: max-min fair sharing of directed links, planned in numpy.

- :mod:`~dicesim.sim.network.maxmin`, :mod:`~dicesim.sim.network.flowplan`: rates and trajectories;
- :mod:`~dicesim.sim.network.flowgroup`: transfers compiled once (flows, links, weights);
- :mod:`~dicesim.sim.network.batchplan`: many isolated transfers planned in one batch;
- :mod:`~dicesim.sim.network.linkscale`: time-varying link speed;
- :mod:`~dicesim.sim.network.memo`: memoised and pre-planned trajectories;
- :mod:`~dicesim.sim.network.network`: :class:`FlowNetwork`, the link state inside one simpy run;
- :mod:`~dicesim.sim.network.nccl`: what NCCL reaches on each link class.
"""
