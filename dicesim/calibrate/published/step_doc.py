"""The step-level subsection of docs/accuracy.md, written by ``dicesim accuracy --published --out``."""

from __future__ import annotations

import pandas as pd

from dicesim.calibrate.published.step_level import (ATTENTION_KERNELS, HARDWARE, baseline_line, outcome_rows,
                                                    ran_rows, step_summaries)
from dicesim.calibrate.published.step_memory import memory_lines


def _pct(v: float) -> str:
    return "-" if v != v else f"{v:+.1%}"


def _md(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns)
    body = "\n".join("| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False))
    return head + "\n" + body


def _families(sums: dict) -> str:
    rows = []
    for name, s in sums.items():
        for fam, v in s.per_family.items():
            rows.append((name, fam, v["figures"], f"{v['median_abs']:.1%}", f"{v['max_abs']:.1%}"))
    return _md(pd.DataFrame(rows, columns=["set", "interconnect family", "measurements", "median abs error",
                                           "max abs error"]))


def _by_run(rows: pd.DataFrame) -> str:
    """Held-out and baseline errors per model and GPU: where the model is weakest."""
    r = rows[rows["split"].isin(["held-out", "baseline"])]
    out = []
    for (model, gpu), g in r.groupby(["model", "gpu"], sort=True):
        held, base = g[g["split"] == "held-out"], g[g["split"] == "baseline"]
        out.append((model, gpu, len(held), "-" if held.empty else f"{held['error'].median():+.1%}",
                    "-" if held.empty else f"{held['error'].abs().max():.1%}",
                    ", ".join(f"{e:+.1%}" for e in base["error"]) or "-"))
    return _md(pd.DataFrame(out, columns=["model", "GPU", "held-out", "median signed error", "max abs error",
                                          "one-GPU baseline error"]))


def by_source_file(rows: pd.DataFrame) -> pd.DataFrame:
    """Held-out and one-GPU baseline errors per step file (one file per source family: a framework's own
    tables, independent reports), so a reader sees which sources the model reproduces."""
    out = []
    for stem, g in rows.groupby("source_file", sort=True):
        held, base = g[g["split"] == "held-out"], g[g["split"] == "baseline"]
        out.append({"step file": f"`{stem}.toml`", "held-out": len(held),
                    "median abs error": held["error"].abs().median() if len(held) else float("nan"),
                    "max abs error": held["error"].abs().max() if len(held) else float("nan"),
                    "median signed error": held["error"].median() if len(held) else float("nan"),
                    "baselines": len(base),
                    "baseline median abs error": base["error"].abs().median() if len(base) else float("nan")})
    return pd.DataFrame(out)


def _by_source(rows: pd.DataFrame) -> str:
    t = by_source_file(rows)
    for c in ("median abs error", "max abs error", "baseline median abs error"):
        t[c] = ["-" if v != v else f"{v:.1%}" for v in t[c]]
    t["median signed error"] = t["median signed error"].map(_pct)
    return _md(t)


def _figures(rows: pd.DataFrame) -> str:
    t = pd.DataFrame({
        "figure": rows["id"],
        "split": [s if not why else f"{s}: {why}" for s, why in zip(rows["split"], rows["reason"])],
        "family": rows["family"],
        "run": [f"{m}, {g} x {gpu}, {meth}" + (" + compile" if c and "compile" not in meth else "")
                for m, g, gpu, meth, c in zip(rows["model"], rows["gpus"], rows["gpu"], rows["method"],
                                              rows["compiled"])],
        "simulated on": [f"`{p}` on `{m}`" if p else "-" for p, m in zip(rows["profile"], rows["machine"])],
        "published": [f"{v:g} s" for v in rows["published"]],
        "predicted": ["-" if v != v else f"{v:.4g} s" for v in rows["predicted"]],
        "error": rows["error"].map(_pct),
        "interference off": rows["error_no_interference"].map(_pct),
        "exposed comm": ["-" if v != v else f"{v:.3g} s" for v in rows["exposed_comm_s"]],
        "source": [f"[{s}]({u})" for s, u in zip(rows["source"], rows["url"])],
    })
    return _md(t)


def _outcomes() -> str:
    o = outcome_rows()
    summary = [line.strip() for line in memory_lines(o, ran_rows())[-2:]]
    t = pd.DataFrame({"figure": o["id"], "kind": o["kind"], "GPUs": o["gpus"].astype(str) + " x " + o["gpu"],
                      "published": o["published"], "predicted": o["predicted"], "verdict": o["verdict"],
                      "source": [f"[{s}]({u})" for s, u in zip(o["source"], o["url"])]})
    return _md(t) + "\n\n" + "\n".join(f"- {line}" for line in summary)


def step_level_markdown(rows: pd.DataFrame) -> str:
    """Summary lines, per-family table, the machines, every figure, the outcomes."""
    sums = step_summaries(rows)
    hw = "\n".join(f"- {needle}: profile `{p}`, machine `{m}` ({why})" for needle, p, m, why in HARDWARE)
    kern = "\n".join(f"- {needle}: `{k}` ({why})" for needle, k, why in ATTENTION_KERNELS)
    return f"""{sums["interference on"].line()}

{sums["interference off"].line()}

{baseline_line(sums["one-GPU baselines"])}

Every latency is predicted by `dicesim.sim.dense` (docs/step-level.md): the model preset's blocks
timed by the roofline of the GPU's built-in profile, the attention core at the published forward
curve of the kernel the figure's framework ran (`dicesim/data/attention_kernels.toml`: FlashAttention-2
or -3 as the list below says, per head dimension and key length, the measuring GPU's own curve or one
scaled by SM count from GPUs of the same architecture), every collective's flows run through the
flow network of the machine with the built-in NCCL model, never fitted on these figures. The
prediction covers the denoising loop and, where the figure times the whole pipeline call, the VAE
decode of the preset's decoder once per call (`dicesim/sim/dense_vae.py`; a `denoise_only` figure times
the loop alone); text encoders are not modelled. A figure whose recorded setting needs more dense FLOP/s per GPU than the
GPU's peak is excluded as inconsistent (its reason says so). Held-out errors per interconnect family, with the profile's
compute-communication interference on and off:

{_families(sums)}

Per source family (one step file each: a framework's own tables, or independent reports):

{_by_source(rows)}

Per model and GPU (signed: negative = predicted faster than published):

{_by_run(rows)}

Hardware (a figure's stated GPU -> what it is simulated on):

{hw}

Attention kernel (a figure's framework -> the kernel whose curve times its attention core):

{kern}

Every figure:

{_figures(rows)}

Refused configurations, out-of-memory runs and peak-memory figures (memory: the dense memory model of
docs/step-level.md, "Memory and out-of-memory runs", in GiB, never fitted):

{_outcomes()}"""
