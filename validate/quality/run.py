"""``python -m validate quality --model digits``: measure, record, fit, and write docs/quality.md.

Steps: score the real digits (floor and noise ceiling), run the strategy study on the
trained checkpoint (:mod:`validate.quality.study`), check the lag/T scaling at other step
counts, run ``sync`` and ``dice`` through the real gloo executor on 2 and 4 ranks, then
write (each atomically) the measurement table the simulator's quality model is fitted from
(``dicesim/data/quality/digits.toml``), the sample grid (PNG) and the page.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import tomli_w
import torch

from dicesim.atomic import write_all_atomic
from dicesim.models import get_model
from dicesim.progress import NO_PROGRESS, Ticker
from dicesim.quality_model import load_quality_table
from validate.digits.classifier import load_classifier
from validate.digits.data import CLASSIFIER_FILE, DATA_DIR, TRAIN_LOG_FILE, load_digits_split
from validate.quality.image_grid import labelled_blocks
from validate.quality.image_metrics import feature_stats
from validate.quality.doc import quality_markdown
from validate.quality.study import (
    STUDY, QualityStudyConfig, Scorer, StudyStrategy, distributed_check, real_scores, run_study, summarize,
)

REPO = Path(__file__).resolve().parents[2]
STEPS_CHECK_LABELS = ("interweaved", "dice")
GRID_IMAGES = 20


@dataclass(frozen=True, kw_only=True)
class QualityPaths:
    """Where the command writes (repository-relative defaults)."""

    doc: Path = REPO / "docs" / "quality.md"
    figure: Path = REPO / "docs" / "figures" / "quality-samples.png"
    table: Path = REPO / "dicesim" / "data" / "quality" / "digits.toml"
    data_dir: Path = DATA_DIR  # read: classifier and training log


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def measurement_toml(cfg: QualityStudyConfig, summary: pd.DataFrame, checks: pd.DataFrame, top1_share: float,
                     command: str) -> str:
    """The table :mod:`dicesim.quality_model` reads: one row per strategy, preset + overrides."""
    by_label = {s.label: s for s in STUDY}  # the study's strategies are always a subset of STUDY

    def row(label: str, values: dict) -> dict:
        st = by_label[label]
        out = {"label": label, "preset": st.preset}
        if st.overrides:
            out["overrides"] = dict(st.overrides)
        out.update({k: float(v) for k, v in values.items()})
        return out

    doc = {
        "meta": {"model": "digits", "num_layers": get_model("digits").depth, "num_steps": cfg.steps, "guidance_scale": cfg.guidance_scale,
                 "images_per_seed": cfg.images, "seeds": len(cfg.seeds), "top1_share": round(top1_share, 6),
                 "sp_world_size": cfg.sp_world_size,
                 "checkpoint": _rel(Path(cfg.checkpoint)), "command": command,
                 "metrics": "fd: Frechet distance to the real training digits in the digit classifier's 64 features; "
                            "fd_change: fd minus the same seed's sync fd; deviation: relative L2 from the sync "
                            "samples; accuracy: classifier agrees with the asked label; *_std over seeds (ddof 1)"},
        "strategy": [row(r["strategy"], {k: v for k, v in r.items() if k != "strategy"})
                     for r in summary.to_dict(orient="records")],
        "steps_check": [row(r["strategy"], {k: v for k, v in r.items() if k not in ("strategy", "steps")})
                        | {"steps": int(r["steps"])} for r in checks.to_dict(orient="records")],
    }
    return "# written by python -m validate quality --model digits; do not edit by hand\n" + tomli_w.dumps(doc)


def run_quality(cfg: QualityStudyConfig, paths: QualityPaths, *, check_steps: Sequence[int], world_sizes: Sequence[int],
                command: str, echo: Callable[[str], None] = print,
                strategies: Sequence[StudyStrategy] = STUDY, ticker: Ticker = NO_PROGRESS) -> dict:
    """Everything the command does; returns the numbers the page was written from.
    ``strategies`` (a subset of :data:`STUDY` with ``sync``, ``interweaved`` and ``dice``) is for tests."""
    # one thread: the numbers on the page do not depend on the machine's core count, and a
    # shared machine does not stall a second thread
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_digits_split()
    classifier = load_classifier(paths.data_dir / CLASSIFIER_FILE)
    scorer = Scorer(classifier=classifier, reference=feature_stats(classifier, data.train_x))
    real = real_scores(scorer, data.test_x, data.test_y, min(cfg.images, data.test_x.shape[0]))
    echo(f"real held-out digits: FD {real['fd_real']:.3f}, accuracy {real['accuracy_real']:.3f}; "
         f"noise: FD {real['fd_noise']:.1f}")
    echo(f"strategies ({len(cfg.seeds)} seeds x {cfg.images} images, {cfg.steps} steps):")
    per_seed, grids, top1_share = run_study(cfg, scorer, strategies, echo=echo, ticker=ticker)
    summary = summarize(per_seed, strategies)
    checks = []
    for steps in check_steps:
        echo(f"lag/T check at {steps} steps:")
        sub = [s for s in STUDY if s.label in ("sync", *STEPS_CHECK_LABELS)]
        rows, _, _ = run_study(replace(cfg, steps=steps), scorer, sub, echo=echo, ticker=ticker)
        checks.append(summarize(rows, sub).query("strategy != 'sync'").assign(steps=steps))
    checks_df = pd.concat(checks, ignore_index=True) if checks else pd.DataFrame()
    echo(f"distributed executor on {', '.join(map(str, world_sizes))} gloo ranks:")
    dist = distributed_check(cfg, scorer, ["sync", "dice"], world_sizes, grids)
    for r in dist.itertuples():
        echo(f"  {r.world_size} ranks {r.strategy}: max |sample difference| {r.max_abs_diff:.2e}")
    train_log = json.loads((paths.data_dir / TRAIN_LOG_FILE).read_text(encoding="utf-8"))
    table_text = measurement_toml(cfg, summary, checks_df, top1_share, command)
    grid = labelled_blocks([("real (held-out)", data.test_x[:GRID_IMAGES])]
                           + [(label, x[:GRID_IMAGES]) for label, x in grids.items()], cols=GRID_IMAGES)
    png = io.BytesIO()
    grid.save(png, format="PNG", optimize=True)
    write_all_atomic([(paths.table, lambda tmp: tmp.write_text(table_text, encoding="utf-8")),
                      (paths.figure, lambda tmp: tmp.write_bytes(png.getvalue()))])
    wall_s = time.perf_counter() - t0
    text = quality_markdown(summary=summary, per_seed=per_seed, real=real, dist=dist, train_log=train_log,
                            table=load_quality_table(paths.table), cfg=cfg, command=command, wall_s=wall_s,
                            figure=_rel(paths.figure), doc_dir=paths.doc.parent, figure_path=paths.figure,
                            checkpoint=_rel(Path(cfg.checkpoint)))
    write_all_atomic([(paths.doc, lambda tmp: tmp.write_text(text, encoding="utf-8"))])
    echo(f"wrote {_rel(paths.doc)}, {_rel(paths.figure)}, {_rel(paths.table)} in {wall_s:.0f} s")
    return {"summary": summary, "per_seed": per_seed, "real": real, "dist": dist, "checks": checks_df}
