"""``dicesim accuracy --published``: the collective level (fit the NCCL model on part of the published set,
predict the rest), its cross-validation, and the step level."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

DEFAULT_DIR = Path("traces/published")


def _command(paths: list[Path], fit_on: str, out: Path | None, write_model: Path | None, nccl_page: Path | None,
             cross_validation: bool) -> str:
    parts = ["dicesim accuracy --published", *map(str, paths), "--fit-on", shlex.quote(fit_on)]
    parts += [] if cross_validation else ["--no-cross-validation"]
    for flag, p in (("--out", out), ("--write-model", write_model), ("--nccl-page", nccl_page)):
        parts += [flag, str(p)] if p is not None else []
    return " ".join(parts)


def run_published(paths: list[Path], *, fit_on: str, out: Path | None, write_model: Path | None,
                  nccl_page: Path | None = None, cross_validation: bool = True, as_json: bool = False,
                  write_accuracy: Path | None = None) -> None:
    """Load, fit, predict; print both levels (or JSON); write the docs sections and the model if asked."""
    from dicesim.calibrate.published.doc import (nccl_markdown, published_markdown, write_nccl_section,
                                                 write_published_section)
    from dicesim.calibrate.published.run import run_published as run
    from dicesim.calibrate.published.set import load_published
    from dicesim.progress import progress_bar
    from dicesim.sim.network.nccl import save_nccl_model

    from dicesim.report.marked import read_page

    for page in (out, nccl_page):  # a page whose sections could not be kept is refused before the work
        if page is not None:
            read_page(page)
    figs = load_published(paths or [DEFAULT_DIR])
    with progress_bar("published set", unit="figures predicted") as ticker:
        # the step level reads the same places: a given directory's `steps/` (or the directory), or files
        step_paths = None if not paths else [p / "steps" if (p / "steps").is_dir() else p for p in paths]
        rep = run(figs, fit_on, cross_validation=cross_validation, step_paths=step_paths, ticker=ticker)
    command = _command(paths, fit_on, out, write_model, nccl_page, cross_validation)
    if out is not None:
        write_published_section(published_markdown(rep, command=command), out)
    if nccl_page is not None:
        write_nccl_section(nccl_markdown(rep, command=command), nccl_page)
    c = rep.collective
    if write_model is not None:
        save_nccl_model(c.model, write_model)
    if write_accuracy is not None:
        record_published_levels(rep, write_accuracy, command + f" --write-accuracy {write_accuracy}")
    if as_json:
        from dicesim.calibrate.published.step_level import outcome_rows

        s = c.summary
        print(json.dumps({
            "summary": {"figures": len(c.rows), "fit": len(c.split.fit), "held_out": s.figures, "runs": s.runs,
                        "sources": s.sources, "excluded": len(c.split.excluded), "median_abs_err": s.median_abs,
                        "max_abs_err": s.max_abs, "per_family": s.per_family, "meets_target": s.met},
            "levels": {"collective": {"line": s.line(), "met": s.met},
                       "step": None if rep.step is None else {"line": rep.step.line(), "met": rep.step.met}},
            "model": c.model.model_dump(mode="json"),
            "params": [{"name": p.name, "value": p.value, "se": p.se, "figures": list(p.figures),
                        "sources": list(p.sources)} for p in c.fit.params],
            "rows": json.loads(c.rows.to_json(orient="records")),
            "cross_validation": None if rep.crossval is None else json.loads(rep.crossval.to_json(orient="records")),
            "step_rows": None if rep.step_rows is None else json.loads(rep.step_rows.to_json(orient="records")),
            "outcome_rows": None if rep.step_rows is None
            else json.loads(outcome_rows(step_paths).to_json(orient="records")),
        }, allow_nan=False))
        return
    _print(rep, fit_on, step_paths)
    for p in (out, nccl_page, write_model, write_accuracy):
        if p is not None:
            print(f"wrote {p}")


def _print(rep, fit_on: str, step_paths: list[Path] | None = None) -> None:
    from dicesim.calibrate.published.doc import by_source, param_value
    from dicesim.calibrate.published.step_level import NOT_YET, outcome_rows, ran_rows, step_lines
    from dicesim.calibrate.published.step_memory import memory_lines

    c = rep.collective
    print(f"collective level: NCCL model fitted on {fit_on!r} ({len(c.split.fit)} figures); "
          f"{c.summary.figures} held out, {len(c.split.excluded)} excluded, {len(c.split.statements)} statements")
    print(f"{'figure':40s} {'split':9s} {'published':>17s} {'predicted':>14s} {'error':>8s}")
    for r in c.rows.itertuples():
        print(f"{r.id:40s} {r.split:9s} {r.published:12.4g} {r.unit:4s} {r.predicted:9.4g} {r.unit:4s} "
              f"{r.error:+8.1%}")
    print("fitted NCCL model (value; the value each independent source it rests on gives alone):")
    for p in c.fit.params:
        print(f"  {p.name:24s} {param_value(p.name, p.value):>10s}  {by_source(p)}")
    for fam, v in c.summary.per_family.items():
        print(f"  {fam:14s} {v['figures']:3d} held out: median |error| {v['median_abs']:.1%}, "
              f"max {v['max_abs']:.1%}")
    if rep.crossval is not None:
        print("cross-validation (other fitted/held-out splits):")
        for r in rep.crossval.itertuples():
            print(f"  {r.split:24s} fitted {r.fitted:2d}, held out {r.held_out:2d}: median {r.median_abs:.1%}, "
                  f"max {r.max_abs:.1%} ({'met' if r.met else 'not met'})"
                  + (f"; on one source: {r.one_source_params}" if r.one_source_params else ""))
    print(c.summary.line())
    if rep.step_rows is not None:
        for line in step_lines(rep.step_rows):
            print(line)
        for line in memory_lines(outcome_rows(step_paths), ran_rows(step_paths)):
            print(line)
    print(rep.step.line() if rep.step is not None else NOT_YET)


#: the step level's interconnect families under the names error bands use (dicesim/trust/facts.py);
#: a one-GPU figure ("none") crosses no interconnect and has no band family
STEP_FAMILY = {"pcie": "consumer-pcie", "nvlink": "nvswitch"}


def record_published_levels(rep, path: Path, command: str) -> None:
    """The collective level (and the step level once it is predicted) of the accuracy file that error
    bands read: held-out |errors| overall and per family."""
    from dicesim.evidence import make_level, record_level

    for name, s, names in (("collective", rep.collective.summary, {}), ("step", rep.step, STEP_FAMILY)):
        if s is None or not s.figures:
            continue
        fams = {names.get(f, f): {"held_out": v["figures"], "median_abs_err": v["median_abs"],
                                  "max_abs_err": v["max_abs"]}
                for f, v in s.per_family.items() if f != "none"}
        record_level(path, name, make_level({"held_out": s.figures, "median_abs_err": s.median_abs,
                                             "max_abs_err": s.max_abs}, fams, command=command))
