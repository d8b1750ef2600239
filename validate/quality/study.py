"""What each strategy's staleness costs in image quality, on the trained ``digits`` DiT-MoE.

For every strategy of :data:`STUDY` and every seed, the sampling loop runs with exactly the
strategy's plan (:func:`validate.executor.worker.run_emulated`: the single-process twin of the
distributed executor, same numerics), from the same noise and labels as the ``sync`` run of
that seed. The samples are scored with :mod:`validate.quality.image_metrics`: Fréchet distance to
the real training digits in the classifier's feature space, class accuracy under the asked
label, and deviation from the ``sync`` samples. Seeds give mean and spread; because every
strategy of a seed shares its noise, the FD change against ``sync`` is taken per seed
(paired) before averaging.

:func:`distributed_check` runs some strategies through the real executor on gloo ranks
(:func:`validate.launch.launch`) and compares samples and metrics with the emulation.

Strategies are built only through :func:`dicesim.strategy.make_strategy` from a preset and
overrides, and the same (preset, overrides) pairs go into the measurement table, so the
simulator's quality model rebuilds the very plans that were measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from dicesim.errors import ConfigError
from dicesim.limits import MAX_EXECUTOR_RANKS, MAX_STEPS, check_range
from dicesim.plan import build_plan
from dicesim.plan.staleness import lag_means
from dicesim.progress import NO_PROGRESS, Ticker
from dicesim.strategy import Strategy, make_strategy
from validate.digits.classifier import DigitClassifier
from validate.digits.data import DIGITS_SIDE_PX
from validate.quality.image_metrics import FeatureStats, class_accuracy, deviation, feature_stats, frechet_distance
from validate.executor.families import run_emulated
from validate.executor.worker import RunSpec, build_model, global_inputs


@dataclass(frozen=True)
class StudyStrategy:
    """One row of the study: a label, the preset it starts from and the fields it changes."""

    label: str
    preset: str
    overrides: dict = field(default_factory=dict)

    def build(self, seed: int) -> Strategy:
        """The strategy for one seed (the seed also fixes the ``random`` policy's choices, where the
        strategy's family has one)."""
        strategy = make_strategy(self.preset, **self.overrides)
        seeded = {"seed": seed} if "seed" in type(strategy).model_fields else {}
        return strategy.model_copy(update={"name": self.label, **seeded})


COND = {"cond_interval": 2}
STUDY: tuple[StudyStrategy, ...] = (
    StudyStrategy("sync", "sync"),
    StudyStrategy("displaced", "displaced"),
    StudyStrategy("interweaved", "interweaved"),
    StudyStrategy("displaced-deep", "displaced-deep"),
    StudyStrategy("interweaved-deep", "interweaved-deep"),
    StudyStrategy("interweaved-shallow", "interweaved", {"sync_layers": "shallow"}),
    StudyStrategy("interweaved-alternate", "interweaved", {"sync_layers": "alternate"}),
    StudyStrategy("interweaved-cond-low", "interweaved", {**COND, "cond_policy": "low"}),
    StudyStrategy("interweaved-cond-high", "interweaved", {**COND, "cond_policy": "high"}),
    StudyStrategy("interweaved-cond-random", "interweaved", {**COND, "cond_policy": "random"}),
    StudyStrategy("dice", "dice"),
    # sequence parallelism: stale K/V instead of stale expert outputs (QualityStudyConfig.sp_world_size)
    StudyStrategy("sp", "sp"),
    StudyStrategy("distrifusion", "distrifusion"),
    StudyStrategy("ulysses", "ulysses"),  # fresh K/V (its heads' share of every token): sp's samples to float rounding
    StudyStrategy("ring", "ring"),  # fresh K/V blocks merged by log-sum-exp: sp's samples to float rounding
    StudyStrategy("usp", "usp"),  # Ulysses in groups of 2, rings across: fresh, sp's samples to float rounding
)


@dataclass(frozen=True, kw_only=True)
class QualityStudyConfig:
    """Sampling settings shared by every strategy and seed."""

    checkpoint: str
    steps: int = 20
    guidance_scale: float = 1.5
    images: int = 200  # per seed
    seeds: tuple[int, ...] = (0, 1, 2)
    #: ranks a sequence-parallel strategy is emulated on: its staleness depends on them (DistriFusion's K/V of
    #: the other W-1 ranks' slices are stale), an expert-parallel one's does not (emulated on one)
    sp_world_size: int = 4

    def spec(self, strategy: Strategy, seed: int, *, world_size: int = 1) -> RunSpec:
        if self.images % world_size:
            raise ValueError(f"{self.images} images do not split over {world_size} ranks")
        return RunSpec(strategy=strategy, model="digits", steps=self.steps, batch=self.images // world_size,
                       image_size=DIGITS_SIDE_PX, seed=seed, guidance_scale=self.guidance_scale, trace=False,
                       checkpoint=self.checkpoint)

    def emulated_ranks(self, strategy: Strategy) -> int:
        """Ranks the study emulates ``strategy`` on: :attr:`sp_world_size` where the strategy's layout splits
        every image's tokens over the ranks, else one."""
        return self.sp_world_size if self.spec(strategy, 0).layout(self.sp_world_size).token_split > 1 else 1

    def check(self, *, check_steps: Sequence[int] = (), world_sizes: Sequence[int] = ()) -> None:
        """Refuse settings out of range and a checkpoint that is unreadable or does not fit the
        ``digits`` model with one ConfigError, before any sampling (a study takes minutes)."""
        spec = self.spec(make_strategy("sync"), self.seeds[0] if self.seeds else 0)
        spec.check(1)  # ranges, then the checkpoint file: format, dtypes, finite weights
        build_model(spec, None, torch.device("cpu"))  # its names and shapes fit the model
        for steps in check_steps:
            check_range("check_steps", steps, 1, MAX_STEPS)
        for world_size in world_sizes:
            check_range("world_sizes", world_size, 1, MAX_EXECUTOR_RANKS)
        check_range("sp_world_size", self.sp_world_size, 1, MAX_EXECUTOR_RANKS)
        if self.images % self.sp_world_size:
            raise ConfigError("images", f"{self.images} must be divisible by sp_world_size {self.sp_world_size}")
        for name in ("sp", "ulysses", "ring", "usp"):  # Ulysses (USP) also needs the heads to split (over u)
            self.spec(make_strategy(name), 0, world_size=self.sp_world_size).check(self.sp_world_size)


@dataclass(frozen=True)
class Scorer:
    """The classifier and the real images' feature statistics every sample set is scored against."""

    classifier: DigitClassifier
    reference: FeatureStats

    def score(self, samples_BCSS: torch.Tensor, y_B: torch.Tensor, sync_BCSS: torch.Tensor) -> dict[str, float]:
        return {"fd": frechet_distance(feature_stats(self.classifier, samples_BCSS), self.reference),
                "accuracy": class_accuracy(self.classifier, samples_BCSS, y_B),
                "deviation": deviation(samples_BCSS, sync_BCSS)}


def plan_mean_lag(strategy: Strategy, num_layers: int, num_steps: int, top_k: int) -> float:
    """Mean lag over token-expert copies, the simulator's ``mean_lag`` (from the plan; sequence parallelism:
    of the other ranks' K/V)."""
    return lag_means(build_plan(strategy, num_layers, num_steps).lags, top_k, share_kept=0.5)["mean_lag"]


def top1_probe() -> tuple[Callable[..., None], Callable[[], float]]:
    """A runner probe that sums router scores by copy, and a reader of the top-1 share.

    With the default ``low`` policy role 0 is the higher-scored copy, so the share is
    sum(score of copy 0) / sum(both scores) over every token, layer and step.
    """
    sums = np.zeros(2)

    def probe(*, score_NK: torch.Tensor, **_: object) -> None:
        sums[0] += float(score_NK[:, 0].sum())
        sums[1] += float(score_NK.sum())

    return probe, lambda: float(sums[0] / sums[1])


def run_study(cfg: QualityStudyConfig, scorer: Scorer, strategies: Sequence[StudyStrategy] = STUDY, *,
              echo: Callable[[str], None] = print, ticker: Ticker = NO_PROGRESS
              ) -> tuple[pd.DataFrame, dict[str, torch.Tensor], float]:
    """One row per (strategy, seed); the samples of the first seed per strategy; the top-1 share.

    ``sync`` runs first for every seed: it is the reference of deviation and FD change.
    ``ticker`` hears of each (strategy, seed) sampled.
    """
    rows, grids = [], {}
    ordered = sorted(strategies, key=lambda s: s.label != "sync")
    if ordered[0].label != "sync":
        raise ValueError("the study needs the sync strategy as its reference")
    top1_share = float("nan")
    ticker.expect(len(cfg.seeds) * len(ordered))
    for seed in cfg.seeds:
        sync_x = None
        for st in ordered:
            strategy = st.build(seed)
            ranks = cfg.emulated_ranks(strategy)
            spec = cfg.spec(strategy, seed, world_size=ranks)
            probe, share = top1_probe() if st.label == "sync" else (None, None)
            x = run_emulated(spec, ranks, probe=probe).samples_BCLL
            _, y = global_inputs(spec, cfg.images)
            if sync_x is None:
                sync_x = x
                if seed == cfg.seeds[0]:
                    top1_share = share()
            preset = spec.preset
            row = {"strategy": st.label, "seed": seed,
                   "mean_lag": plan_mean_lag(strategy, preset.depth, cfg.steps, preset.top_k),
                   **scorer.score(x, y, sync_x)}
            rows.append(row)
            if seed == cfg.seeds[0]:
                grids[st.label] = x
            echo(f"  seed {seed} {st.label:24s} FD {row['fd']:7.3f}  accuracy {row['accuracy']:.3f}  "
                 f"deviation {row['deviation']:.4f}")
            ticker.advance()
    table = pd.DataFrame(rows)
    sync_fd = table[table.strategy == "sync"].set_index("seed")["fd"]
    table["fd_change"] = table["fd"] - table["seed"].map(sync_fd)
    return table, grids, top1_share


def summarize(per_seed: pd.DataFrame, strategies: Sequence[StudyStrategy] = STUDY) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) over seeds per strategy, in study order."""
    metrics = ["fd", "fd_change", "accuracy", "deviation"]
    agg = per_seed.groupby("strategy")[metrics].agg(["mean", "std"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    agg["mean_lag"] = per_seed.groupby("strategy")["mean_lag"].first()
    order = [s.label for s in strategies if s.label in agg.index]
    return agg.loc[order].reset_index()


def distributed_check(cfg: QualityStudyConfig, scorer: Scorer, labels: Sequence[str], world_sizes: Sequence[int],
                      emulated: dict[str, torch.Tensor], *, timeout_s: float = 120.0) -> pd.DataFrame:
    """Run ``labels`` (first seed) on gloo ranks and compare with the emulated samples ``emulated``.

    One row per (world size, strategy): max |difference| of the samples and both runs' metrics.
    """
    from validate.executor.launch import launch

    by_label = {s.label: s for s in STUDY}
    seed = cfg.seeds[0]
    rows = []
    for world in world_sizes:
        specs = [cfg.spec(by_label[label].build(seed), seed, world_size=world) for label in labels]
        outcomes = launch(specs, world_size=world, timeout_s=timeout_s)
        _, y = global_inputs(specs[0], cfg.images)
        for label, outcome in zip(labels, outcomes):
            got = torch.cat([r.samples_BCLL for r in sorted(outcome.ranks, key=lambda r: r.rank)])
            ref = emulated[label]
            dist_m = scorer.score(got, y, emulated["sync"])
            emu_m = scorer.score(ref, y, emulated["sync"])
            rows.append({"world_size": world, "strategy": label, "max_abs_diff": float((got - ref).abs().max()),
                         **{f"{k}_distributed": v for k, v in dist_m.items()},
                         **{f"{k}_emulated": v for k, v in emu_m.items()}})
    return pd.DataFrame(rows)


def real_scores(scorer: Scorer, heldout_x: torch.Tensor, heldout_y: torch.Tensor, count: int, seed: int = 0
                ) -> dict[str, float]:
    """FD and accuracy of ``count`` real held-out digits, and FD of as many noise images: the
    floor and a ceiling that put the generated numbers in scale."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(heldout_x.shape[0], generator=gen)[:count]
    noise = torch.randn((len(idx), *heldout_x.shape[1:]), generator=gen)
    real = heldout_x[idx]
    return {"count": len(idx), "fd_real": frechet_distance(feature_stats(scorer.classifier, real), scorer.reference),
            "accuracy_real": class_accuracy(scorer.classifier, real, heldout_y[idx]),
            "fd_noise": frechet_distance(feature_stats(scorer.classifier, noise), scorer.reference)}

