"""docs/quality.md from the numbers of one ``python -m validate quality --model digits`` run.

Pure: tables in, markdown out. Every figure on the page comes from the run's data or from
the quality model fitted to the table the run wrote; the prose around them is fixed text
that states the method, never a result.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dicesim.models import get_model
from dicesim.quality_model import (
    METRICS, QualityTable, fit_quality, leave_one_out, rank_agreement, staleness_features,
)
from validate.quality.study import QualityStudyConfig


def _fixed(x: float, digits: int) -> float:
    """``x`` at the printed precision, without a negative zero (float rounding of an exact 0 prints 0.000)."""
    return round(x, digits) + 0.0


def _pm(mean: float, std: float, digits: int = 3) -> str:
    return f"{_fixed(mean, digits):.{digits}f} ± {_fixed(std, digits):.{digits}f}"


def _ordered(summary: pd.DataFrame, metric: str, digits: int) -> pd.DataFrame:
    """The strategies but sync by their mean at the printed precision; ties keep the table's order."""
    s = summary[summary.strategy != "sync"]
    key = s[f"{metric}_mean"].map(lambda x: _fixed(x, digits))
    return s.assign(order_key=key).sort_values("order_key", kind="stable").reset_index(drop=True)


def _ordering(summary: pd.DataFrame, metric: str, digits: int) -> str:
    return " < ".join(f"{r.strategy} ({_pm(getattr(r, metric + '_mean'), getattr(r, metric + '_std'), digits)})"
                      for r in _ordered(summary, metric, digits).itertuples())


def _separable(summary: pd.DataFrame, metric: str, digits: int) -> str:
    """Adjacent pairs of the ordering whose means (at the printed precision) are equal or differ by less than the
    larger spread."""
    s = _ordered(summary, metric, digits)
    close = []
    for i in range(len(s) - 1):
        a, b = s.iloc[i], s.iloc[i + 1]
        gap = b["order_key"] - a["order_key"]
        if gap == 0 or gap < max(a[f"{metric}_std"], b[f"{metric}_std"]):
            close.append(f"{a.strategy} / {b.strategy}")
    if not close:
        return "Every adjacent pair is separated by more than its seed spread."
    return (f"{len(close)} of {len(s) - 1} adjacent pairs are closer than their seed spread (not resolved by "
            "these seeds): " + ", ".join(close) + ".")


def _discordant(loo: list[tuple[str, float, float]], spread: dict[str, float]) -> str:
    """Pairs the left-out predictions order differently from the measurements, and whether
    the measured gap of each is larger than the seed spread (a real disagreement)."""
    real, within = [], []
    for i, (a, ma, pa) in enumerate(loo):
        for b, mb, pb in loo[i + 1 :]:
            if np.sign(ma - mb) != np.sign(pa - pb):
                (real if abs(ma - mb) > max(spread[a], spread[b]) else within).append(f"{a} / {b}")
    if not real and not within:
        return "The predicted order equals the measured order."
    out = []
    if real:
        out.append(f"Ordered differently although the measured gap exceeds the seed spread: {', '.join(real)}.")
    if within:
        out.append(f"Ordered differently within the seed spread (not resolved by the measurement): "
                   f"{', '.join(within)}.")
    return " ".join(out)


def _model_section(table: QualityTable, metric: str) -> list[str]:
    fit = fit_quality(table, metric)
    col = METRICS[metric][0]
    points = table.fitted  # the strategies whose staleness the model covers (expert-output lag)
    feats = {p.label: staleness_features(p.strategy, table.num_layers, p.num_steps, table.top1_share)
             for p in points}
    meas = np.array([p.values[col] for p in points])
    pred = np.array([fit.predict(feats[p.label]) for p in points])
    ss_res, ss_tot = float(((meas - pred) ** 2).sum()), float(((meas - meas.mean()) ** 2).sum())
    loo = leave_one_out(table, metric)
    rho, pairs = rank_agreement([m for _, m, _ in loo], [p for _, _, p in loo])
    spread = {p.label: p.values.get(col.replace("_mean", "_std"), 0.0) for p in points}
    lines = [f"### {metric.replace('_', ' ')} ({METRICS[metric][1]})", "",
             f"Fit on all {len(points)} expert-parallel strategies: {fit.coef[0]:.4g} x shallow + {fit.coef[1]:.4g} x deep "
             f"(features in lag/T; R² = {1 - ss_res / ss_tot if ss_tot > 0 else float('nan'):.3f}).",
             f"Leave-one-out over the {len(loo)} asynchronous strategies: Spearman ρ = {rho:.3f}, "
             f"pairwise order agreement = {pairs:.3f}. {_discordant(loo, spread)}", "",
             "| strategy | shallow lag/T | deep lag/T | measured | fitted (all) | left-out prediction |",
             "|---|---|---|---|---|---|"]
    loo_by = {label: p for label, _, p in loo}
    for p, m, f in zip(points, meas, pred):
        held = loo_by.get(p.label)
        lines.append(f"| {p.label} | {feats[p.label][0]:.4f} | {feats[p.label][1]:.4f} | {m:.4f} | {f:.4f} | "
                     f"{'—' if held is None else f'{held:.4f}'} |")
    if table.checks:
        lines += ["", f"Other step counts (fit at {table.meta['num_steps']} steps applied through lag/T):", "",
                  "| strategy | steps | measured | predicted |", "|---|---|---|---|"]
        for c in table.checks:
            f = fit.predict(staleness_features(c.strategy, table.num_layers, c.num_steps, table.top1_share))
            lines.append(f"| {c.label} | {c.num_steps} | {_pm(c.values[col], c.values[col.replace('_mean', '_std')], 4)}"
                         f" | {f:.4f} |")
    return lines + [""]


def quality_markdown(*, summary: pd.DataFrame, per_seed: pd.DataFrame, real: dict, dist: pd.DataFrame,
                     train_log: dict, table: QualityTable, cfg: QualityStudyConfig, command: str, wall_s: float,
                     figure: str, doc_dir: Path, figure_path: Path, checkpoint: str) -> str:
    """The whole page."""
    last = train_log["curve"][-1]
    clf = train_log["classifier"]
    rel_fig = os.path.relpath(figure_path, doc_dir)
    m = get_model("digits")
    out = [
        "# Image quality: what each strategy's staleness costs", "",
        f"Command: `{command}` ({wall_s:.0f} s on this machine; written by the command, do not edit).", "",
        "## Setup", "",
        f"- Model: the `digits` DiT-MoE preset ({m.depth} layers, hidden {m.hidden}, {m.num_experts} routed SwiGLU "
        f"experts, top-{m.top_k}, shared expert, patch {m.patch} on native 8x8 digits = {m.tokens_per_image(8)} "
        f"tokens), trained by `{train_log['command']}`: "
        f"{train_log['config']['steps']} AdamW steps of {train_log['config']['batch']} images in "
        f"{train_log['seconds']:.0f} s, final held-out velocity MSE (EMA weights) {last['heldout_mse_ema']:.4f}. "
        f"Checkpoint `{checkpoint}` (public DiT-MoE layout); training log beside it.",
        f"- Data: scikit-learn's digits (1,797 images), one seeded split: {train_log['train_images']} for training, "
        f"{train_log['heldout_images']} held out.",
        f"- Classifier (the metrics' domain network): held-out accuracy {clf['heldout_accuracy']:.4f} on "
        f"{clf['heldout_images']} images.",
        f"- Sampling: rectified flow, {cfg.steps} Euler steps, classifier-free guidance {cfg.guidance_scale} "
        f"(the scale DiT reports FID at), {cfg.images} images per seed with random labels, seeds "
        f"{', '.join(map(str, cfg.seeds))}; every strategy of a seed starts from the same noise and labels.",
        f"- Scale: {real['count']} real held-out digits score FD {real['fd_real']:.3f} and accuracy "
        f"{real['accuracy_real']:.3f}; as many Gaussian-noise images score FD {real['fd_noise']:.1f}.",
        f"- The trained router gives the top-1 copy {table.top1_share:.3f} of the two copies' score "
        "(measured on the sync run of the first seed).", "",
        "Choices: digits stay at their native 8x8 (upsampling to 16x16 adds no information and costs 4x the "
        "tokens, so a quarter of the training steps in the same budget); routed experts are 2x wide instead of "
        "DiT-MoE's 4x so the checkpoint stays under 5 MB; training is seeded, single-threaded and uses "
        "deterministic algorithms, so rerunning its command on the same torch build writes the same checkpoint.",
        "",
        "FD = Fréchet distance to the real training digits in the classifier's 64 penultimate features (the FID "
        "recipe on a domain network; lower is better). FD change = FD minus the same seed's `sync` FD. "
        "Deviation = relative L2 distance of the samples from the `sync` samples. Spreads are the standard "
        "deviation over seeds.", "",
        "## Measured", "",
        "| strategy | mean lag (steps) | FD | FD change vs sync | class accuracy | deviation from sync |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples():
        out.append(f"| {r.strategy} | {r.mean_lag:.3f} | {_pm(r.fd_mean, r.fd_std)} | "
                   f"{_pm(r.fd_change_mean, r.fd_change_std)} | {_pm(r.accuracy_mean, r.accuracy_std)} | "
                   f"{_pm(r.deviation_mean, r.deviation_std, 4)} |")
    unfitted = [p.label for p in table.points if p not in table.fitted]
    if unfitted:
        out += ["", f"{', '.join(unfitted)}: sequence parallelism, emulated on {cfg.sp_world_size} ranks sharing every "
                "image's tokens; their lag is that of the other ranks' keys and values (DistriFusion: 1 step after "
                "the first), not of expert outputs, so the simulator's quality model below is not fitted on them and "
                "does not predict them (docs/sequence-parallel.md)."]
    out += ["", "Measured ordering, least to most costly:", "",
            f"- by FD change: {_ordering(summary, 'fd_change', 3)}. {_separable(summary, 'fd_change', 3)}",
            f"- by deviation: {_ordering(summary, 'deviation', 4)}. {_separable(summary, 'deviation', 4)}", "",
            f"![samples per strategy]({rel_fig})", "",
            f"Samples of seed {cfg.seeds[0]} (the first {min(20, cfg.images)} images; same noise and label per "
            "column in every row). Real held-out digits on top for reference.", "",
            "## Distributed executor vs single-process emulation", "",
            "The study runs in one process (`run_emulated`); the same plans on real gloo ranks must give the same "
            "samples and metrics:", "",
            "| ranks | strategy | max abs sample difference | FD (dist / emul) | accuracy (dist / emul) "
            "| deviation (dist / emul) |", "|---|---|---|---|---|---|"]
    for r in dist.itertuples():
        out.append(f"| {r.world_size} | {r.strategy} | {r.max_abs_diff:.2e} | {r.fd_distributed:.4f} / "
                   f"{r.fd_emulated:.4f} | {r.accuracy_distributed:.4f} / {r.accuracy_emulated:.4f} | "
                   f"{r.deviation_distributed:.5f} / {r.deviation_emulated:.5f} |")
    out += ["", "## The simulator's quality model", "",
            "`dicesim/quality_model.py` (torch-free) fits, from the table this command writes "
            f"(`{table.path.name}`), quality change = a_shallow x f_shallow + a_deep x f_deep with non-negative "
            "coefficients and no intercept, where f is the router-score-weighted lag of a layer's two copies "
            "(top-1 share as measured), averaged over steps and over the shallow (< L/2) or deep half of the "
            "layers, divided by the number of steps T. `predict_quality(strategy, num_layers, num_steps)` "
            "returns the prediction with its basis; `dicesim simulate`, `compare` and `sweep` report "
            "`pred_fd_change` and `pred_deviation`, with the router top-1 share of the scenario (`routing.top1_share`, "
            "default 0.6) instead of the measured one, so their numbers for `digits` differ slightly from the fit "
            "below. Each strategy is also predicted by a fit that left it out; "
            "the rank agreement of those predictions with the measurements is the model's held-out check.", ""]
    for metric in METRICS:
        out += _model_section(table, metric)
    out += ["## Limits", "",
            "- One small model on 8x8 digits: the ordering is measured here; magnitudes for XL/2 or G/2 are an "
            "extrapolation of the fitted shape (the basis string says so).",
            f"- {len(cfg.seeds)} seeds of {cfg.images} images: FD from few samples is biased upwards and noisy; "
            "compare FD only between rows of this table (equal sample counts), and read the spreads.",
            "- The model's features come from the plan; the lag/T scaling across step counts is checked above, "
            "not assumed.", ""]
    return "\n".join(out)
