"""The executor: one strategy plan run on torch.distributed ranks (or emulated in one process).

- :mod:`~validate.executor.interpreter`: a plan's actions through one handler per action kind;
- :mod:`~validate.executor.runner`: the expert-parallel family's handlers and measurements;
- :mod:`~validate.executor.stale`: what a rank keeps between steps, behind one store protocol;
- :mod:`~validate.executor.dispatcher`: count exchange, dispatch and combine all-to-alls;
- :mod:`~validate.executor.worker`, :mod:`~validate.executor.launch`: one rank's run; spawning;
- :mod:`~validate.executor.tracing`, :mod:`~validate.executor.summary`: events, summaries, traces;
- :mod:`~validate.executor.hoststaged`, :mod:`~validate.executor.copypath`: the host-staged mode.
"""
