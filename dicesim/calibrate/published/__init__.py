"""Published figures as checks of the whole model (never fitted on, except the NCCL model's split).

- :mod:`~dicesim.calibrate.published.set`: the published validation set (``traces/published/``);
- :mod:`~dicesim.calibrate.published.fit`: the NCCL-model fit on a named split, every figure predicted;
- :mod:`~dicesim.calibrate.published.doc`: its docs/accuracy.md section;
- :mod:`~dicesim.calibrate.published.paper`: the DICE paper's own figures (``traces/acceptance/``).
"""
