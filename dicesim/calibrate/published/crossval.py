"""How the collective headline moves across other fitted/held-out splits (a small cross-validation).

Each split is a ``--fit-on`` expression; the rules of :mod:`.rules` then decide what is held out
and what is excluded, exactly as for the built-in split, and the NCCL model is refitted. The
splits are chosen for what they test, not for their result:

- ``built-in``: the files' roles;
- ``shm-from-rtx5090``: the SHM efficiency fitted on the RTX 5090 runs (NVIDIA/nccl#1639) instead of
  the RTX 4090 blog and the RTX 2080 Ti runs, which are then predicted;
- ``net-from-all-to-all``: NCCL's network efficiency from the pplx-kernels all-to-all columns EP16 and
  EP64 only; the RoCE all-reduce is then predicted;
- ``deepep-net-with-493``: DeepEP's network efficiency also fitted on the DeepEP#493 2-node H200
  run (the built-in split of the last version), whose NICs are not the bound (DeepEP#51).
- ``deepep-net-ll-only``: DeepEP's network efficiency from the low-latency run of DeepEP#28 alone;
  the README's normal-kernel EP64 run is then predicted.

The alternative splits may leave a parameter on one source (the table says which): they show how
the headline moves, they are not fits to ship.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dicesim.calibrate.published.collective import run_collective_accuracy
from dicesim.calibrate.published.fit import Predictor
from dicesim.calibrate.published.schema import DEFAULT_FIT_ON, Figure
from dicesim.errors import ConfigError
from dicesim.progress import NO_PROGRESS, Ticker

#: (name, --fit-on expression, what it tests)
SPLITS: tuple[tuple[str, str, str], ...] = (
    ("built-in", DEFAULT_FIT_ON, "the files' roles"),
    ("shm-from-rtx5090",
     '(role == "fit" and id not in ("rtx4090x8-epyc-shm-allreduce-32m", "rtx2080tix2-shm-allreduce-1g", '
     '"rtx2080tix2-shm-alltoall-1g")) or source == "nccl-1639"',
     "SHM efficiency from the RTX 5090 runs; the RTX 4090 and 2080 Ti bandwidths predicted"),
    ("net-from-all-to-all",
     '(role == "fit" and id != "a100x16-oci-roce-allreduce-10g") or id == "h100x64-pplx-torch-alltoall-128tok"',
     "NCCL network efficiency from the pplx all-to-alls (EP16, EP64); the RoCE all-reduce predicted"),
    ("deepep-net-with-493", 'role == "fit" or id == "h200x16-deepep493-dispatch-fp8"',
     "DeepEP network efficiency also on the 2-node DeepEP#493 H200 run; the README low-latency tables predicted"),
    ("deepep-net-ll-only", 'role == "fit" and id != "h800x64-deepep-dispatch"',
     "DeepEP network efficiency from the DeepEP#28 low-latency run only; the README normal EP64 run predicted"),
)


def cross_validate(figs: Sequence[Figure], splits: Sequence[tuple[str, str, str]] = SPLITS, *,
                   pred: Predictor | None = None, ticker: Ticker = NO_PROGRESS) -> pd.DataFrame:
    """One row per split: its fitted and held-out counts, held-out median and max |error|, target met,
    and the fitted parameters resting on fewer than two independent sources. A split that selects no
    figure to fit, or leaves none to hold out, in ``figs`` (a part of the set) has no row."""
    pred = pred or Predictor()
    rows = []
    ticker.expect(len(splits))
    for name, fit_on, what in splits:
        try:
            acc = run_collective_accuracy(figs, fit_on, pred=pred, predict_all=False)
        except ConfigError:  # the split selects nothing to fit, or nothing to hold out, in this set
            ticker.advance()
            continue
        s = acc.summary
        thin = [p.name for p in acc.fit.params if len(p.sources) < 2]
        rows.append({"split": name, "fit_on": fit_on, "tests": what, "fitted": len(acc.split.fit),
                     "held_out": s.figures, "excluded": len(acc.split.excluded), "median_abs": s.median_abs,
                     "max_abs": s.max_abs, "met": s.met, "one_source_params": ", ".join(thin)})
        ticker.advance()
    return pd.DataFrame(rows, columns=["split", "fit_on", "tests", "fitted", "held_out", "excluded", "median_abs",
                                       "max_abs", "met", "one_source_params"])
