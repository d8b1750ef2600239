"""The simpy model of one run: every rank walks the compiled plan on its compute and comm streams.

- :mod:`~dicesim.sim.engine.program`: the plan compiled to generic instructions (issue, wait,
  blocking, compute);
- :mod:`~dicesim.sim.engine.communicator`: in-order collective streams;
- :mod:`~dicesim.sim.engine.groupcomm`: what each collective of a group moves over the network;
- :mod:`~dicesim.sim.engine.streams`: compute slowed by communication, and the reverse;
- :mod:`~dicesim.sim.engine.rank`: one rank's process, the interpreter of the instructions;
- :mod:`~dicesim.sim.engine.recording`: trace events of a recorded run;
- :mod:`~dicesim.sim.engine.reuse`: repeated windows taken from the record;
- :mod:`~dicesim.sim.engine.engine`: :class:`Engine` builds the world and runs it;
- :mod:`~dicesim.sim.engine.runspec`: what one run needs and what it measured.
"""
