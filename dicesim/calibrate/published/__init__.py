"""Published figures as checks of the whole model (never fitted on, except the NCCL model's split).

- :mod:`~dicesim.calibrate.published.schema`, :mod:`~dicesim.calibrate.published.set`: one figure and the
  collective set (``traces/published/*.toml``);
- :mod:`~dicesim.calibrate.published.rules`: which figures a split fits, holds out and leaves out;
- :mod:`~dicesim.calibrate.published.fit`: the NCCL-model least-squares fit;
- :mod:`~dicesim.calibrate.published.collective`, :mod:`~dicesim.calibrate.published.crossval`: the collective
  level and its cross-validation; :mod:`~dicesim.calibrate.published.step_level`: the step level's hook;
- :mod:`~dicesim.calibrate.published.levels`, :mod:`~dicesim.calibrate.published.run`: both levels and targets;
- :mod:`~dicesim.calibrate.published.doc`: their page sections;
- :mod:`~dicesim.calibrate.published.paper`: the DICE paper's own figures (``traces/acceptance/``).
"""
