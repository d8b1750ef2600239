"""``dicesim accuracy --published``: fit the NCCL model on part of the published set, predict the rest."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

DEFAULT_DIR = Path("traces/published")


def run_published(paths: list[Path], *, fit_on: str, out: Path | None, write_model: Path | None,
                  as_json: bool, write_accuracy: Path | None = None) -> None:
    """Load, fit, predict; print a table (or JSON); write the docs section and the model if asked."""
    from dicesim.calibrate.published.set import load_published
    from dicesim.calibrate.published.doc import published_markdown, write_published_section
    from dicesim.calibrate.published.fit import run_published_accuracy
    from dicesim.sim.network.nccl import save_nccl_model

    srcs = paths or [DEFAULT_DIR]
    rep = run_published_accuracy(load_published(srcs), fit_on=fit_on)
    if out is not None:
        parts = ["dicesim accuracy --published", *map(str, paths), "--fit-on", shlex.quote(fit_on),
                 "--out", str(out)] + (["--write-model", str(write_model)] if write_model else [])
        write_published_section(published_markdown(rep, command=" ".join(parts)), out)
    if write_model is not None:
        save_nccl_model(rep.model, write_model)
    if write_accuracy is not None:
        record_collective_level(rep.summary, write_accuracy, paths, fit_on)
    if as_json:
        print(json.dumps({"summary": rep.summary, "model": rep.model.model_dump(mode="json"),
                          "rows": json.loads(rep.rows.to_json(orient="records"))}, allow_nan=False))
        return
    s = rep.summary
    print(f"fit on {fit_on!r}: {s['fit']} published figures; predicting {s['held_out']} held out")
    print(f"{'figure':36s} {'split':8s} {'published':>14s} {'predicted':>14s} {'error':>8s}")
    for r in rep.rows.itertuples():
        print(f"{r.id:36s} {r.split:8s} {r.published:9.4g} {r.unit:4s} {r.predicted:9.4g} {r.unit:4s} "
              f"{r.error:+8.1%}")
    print(f"held-out |error|: median {s['median_abs_err']:.1%}, max {s['max_abs_err']:.1%} "
          f"(target median <= 10%, max <= 25%: {'met' if s['meets_target'] else 'NOT met'})")
    m = rep.model
    print("NCCL model: bw_eff " + ", ".join(f"{t} {v:.3f}" for t, v in m.bw_eff.items())
          + f"; base {m.base_latency_s * 1e6:.2f} us, all-to-all {m.a2a_latency_s * 1e6:.2f} us")
    for p in (out, write_model, write_accuracy):
        if p is not None:
            print(f"wrote {p}")


def record_collective_level(summary: dict, path: Path, paths: list[Path], fit_on: str) -> None:
    """The collective level of the accuracy file (error bands read it): held-out errors overall and per family."""
    from dicesim.evidence import make_level, record_level

    cmd = " ".join(["dicesim accuracy --published", *map(str, paths), "--fit-on", shlex.quote(fit_on),
                    "--write-accuracy", str(path)])
    record_level(path, "collective", make_level(summary, summary["per_family"], command=cmd))
