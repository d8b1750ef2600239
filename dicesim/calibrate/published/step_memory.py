"""The step set's peak-memory figures and out-of-memory runs checked against the dense memory model.

Every ``kind = "memory"`` figure is predicted by :func:`dicesim.sim.dense_memory.dense_memory` under
its model's pipeline (:data:`dicesim.sim.dense_pipelines.PIPELINES`) and compared in GiB with what
the method counts: ``torch.cuda.max_memory_allocated`` (tensors only) where the pipeline says so,
else the whole GPU (runtime, NCCL and slack included). Measurements get a signed error; statements
are reported apart. Every ``kind = "oom"`` figure is checked for "does not fit" on its card, under
the settings the figure states where the code allows them. "Fits where the source ran it": every
latency figure of a modelled pipeline (the same method's own code, no unmodelled optimisation) must
be predicted to fit its card. Nothing here is fitted on these figures.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from dicesim.sim.costs.profile import get_profile
from dicesim.sim.dense import DenseRun
from dicesim.sim.dense_memory import DenseMemory, dense_memory
from dicesim.sim.dense_pipelines import PIPELINES

GiB = 1 << 30
#: a stated card size for a figure whose GPU is "one 80 GB GPU": the H100 SXM's capacity (docs/memory.md)
_STATED_80G = "h100-sxm"
#: frameworks whose code the pipelines describe (latency figures of other frameworks are not checked)
OFFICIAL = ("HunyuanVideo official", "HunyuanVideo + xDiT", "Open-Sora")
#: optimisations the pipelines cover: Open-Sora's '--offload True' is read by no code (PIPELINES basis)
_COVERED = {"--offload True"}


def _capacity(gpu: str, hw: tuple | None) -> tuple[int | None, str]:
    """The card's capacity: the built-in profile of its stated GPU (``hw``: step_level.hardware_for)."""
    prof = hw[0] if hw else (_STATED_80G if "80 GB" in gpu or "80G" in gpu else None)
    if prof is None:
        return None, ""
    return get_profile(prof).memory_capacity_bytes, prof


def _oom_setting(fig: dict, run: DenseRun) -> tuple[dict, str]:
    """The settings an OOM figure states that the code allows: CPU offload only on one GPU
    (HunyuanVideo refuses it in distributed runs: hyvideo/inference.py:161-162), FP8 weights."""
    opts = " ".join(fig.get("optimizations", [])).lower()
    kw: dict = {}
    said = []
    if "fp8" in opts:
        kw["pipeline"] = replace(PIPELINES[run.model.name], dit_weight_nbytes=1)
        said.append("FP8 DiT weights")
    if "offload" in opts:
        if run.parallel.world == 1:
            kw["offload"] = "sequential"
            said.append("sequential CPU offload")
        else:
            said.append("CPU offload refused in distributed runs (hyvideo/inference.py:161-162)")
    return kw, ", ".join(said) or "the pipeline's defaults"


def memory_check(fig: dict, run: DenseRun, hw: tuple | None) -> dict:
    """predicted / verdict / error of one memory or OOM figure (its outcome row's fields)."""
    if run.model.name not in PIPELINES:
        return {"predicted": "-", "verdict": f"not modelled: no pipeline for {run.model.name}", "error": None}
    cap, prof = _capacity(str(fig["gpu"]), hw)
    if fig["kind"] == "oom":
        if cap is None:
            return {"predicted": "-", "verdict": "not checked: the GPU's capacity is not known", "error": None}
        kw, said = _oom_setting(fig, run)
        mem = dense_memory(run, cap, **kw)
        base = dense_memory(run, cap)
        verdict = ("agrees: does not fit" if mem.fits is False else "disagrees: predicted to fit") + f" ({said})"
        if kw:
            verdict += f"; with the defaults: {_gib(base.total_nbytes)} ({'fits' if base.fits else 'does not fit'})"
        return {"predicted": f"{_gib(mem.total_nbytes)} of {_gib(cap)} ({_peak(mem)})", "verdict": verdict,
                "error": None}
    unknown = [o for o in fig.get("optimizations", []) if o not in _COVERED]
    if unknown:
        return {"predicted": "-", "verdict": "not modelled: " + ", ".join(unknown), "error": None}
    mem = dense_memory(run, cap)
    allocated = PIPELINES[run.model.name].counter.startswith("torch.cuda.max_memory_allocated")
    pred = (mem.allocated_nbytes if allocated else mem.total_nbytes) / GiB
    err = pred / float(fig["value"]) - 1
    what = "allocated" if allocated else "whole GPU"
    label = "statement" if fig.get("evidence") == "statement" else "measurement"
    return {"predicted": f"{pred:.1f} GiB ({what}; {_peak(mem)})", "error": err,
            "verdict": f"{label}: {err:+.1%}" + (" (kept out of the statistics)" if label == "statement" else "")}


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def _peak(mem: DenseMemory) -> str:
    h = mem.holders
    return (f"peak in {mem.phase}: DiT {_gib(h['dit'])}, encoders {_gib(h['text_encoders'])}, "
            f"activations {_gib(h['activations'])}, VAE decode {_gib(h['vae_decode'])}")


def fits_where_run(figs: list[dict], dense_run, hardware_for) -> pd.DataFrame:
    """Every latency figure of an official pipeline without an unmodelled optimisation: predicted fits?"""
    rows = []
    for f in figs:
        if f.get("kind") != "latency" or f["model"] not in PIPELINES or f.get("optimizations"):
            continue
        if not str(f.get("framework", "")).startswith(OFFICIAL):
            continue
        cap, prof = _capacity(str(f["gpu"]), hardware_for(str(f["gpu"])))
        if cap is None:
            continue
        mem = dense_memory(dense_run(f), cap)
        rows.append({"id": f["id"], "gpus": int(f["gpus"]), "gpu": prof, "total_GiB": mem.total_nbytes / GiB,
                     "capacity_GiB": cap / GiB, "fits": bool(mem.fits)})
    return pd.DataFrame(rows, columns=["id", "gpus", "gpu", "total_GiB", "capacity_GiB", "fits"])


def memory_lines(outcomes: pd.DataFrame, ran: pd.DataFrame) -> list[str]:
    """What ``dicesim accuracy --published`` prints for the memory figures and OOM runs."""
    out = ["step level, memory (dense memory model, never fitted): peak-memory figures, OOM runs, refusals"]
    for r in outcomes.itertuples():
        out.append(f"  {r.id:40s} {r.published:>9s}  predicted {r.predicted}  -> {r.verdict}")
    mem = outcomes[(outcomes["kind"] == "memory") & outcomes["error"].notna()]
    meas = mem[mem["evidence"] == "measurement"]["error"].abs()
    if len(meas):
        out.append(f"  memory measurements: {len(meas)}, median |error| {meas.median():.1%}, max {meas.max():.1%}")
    if len(ran):
        bad = ran[~ran["fits"]]
        out.append(f"  runs the sources did run (latency figures, official pipelines): {int(ran['fits'].sum())} of "
                   f"{len(ran)} predicted to fit" + (f"; not: {', '.join(bad['id'])}" if len(bad) else ""))
    return out
