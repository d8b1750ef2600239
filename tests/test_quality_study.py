"""The digits quality study: distributed gloo ranks give the emulation's samples and metrics
for sync and dice (small, 2 ranks), staleness shows up in the metrics, bad options are one line."""

from __future__ import annotations

import pytest
import torch

from validate.classifier import load_classifier
from validate.cli import main
from validate.digits import CHECKPOINT_FILE, CLASSIFIER_FILE, DATA_DIR, load_digits_split
from validate.image_metrics import feature_stats
from validate.quality_study import STUDY, Scorer, StudyConfig, distributed_check, run_study, summarize

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(not (DATA_DIR / CHECKPOINT_FILE).is_file(), reason="checkpoint not trained yet")


@pytest.fixture(scope="module")
def setup():
    clf = load_classifier(DATA_DIR / CLASSIFIER_FILE)
    scorer = Scorer(classifier=clf, reference=feature_stats(clf, load_digits_split().train_x))
    cfg = StudyConfig(checkpoint=str(DATA_DIR / CHECKPOINT_FILE), steps=5, images=8, seeds=(0, 1))
    sub = [s for s in STUDY if s.label in ("sync", "displaced", "dice")]
    per_seed, grids, share = run_study(cfg, scorer, sub, echo=lambda _: None)
    return cfg, scorer, per_seed, grids, share, sub


def test_sync_is_the_reference_and_staleness_moves_the_samples(setup):
    _, _, per_seed, _, share, sub = setup
    t = per_seed.set_index(["strategy", "seed"])
    for seed in (0, 1):
        assert t.loc[("sync", seed), "deviation"] == 0 and t.loc[("sync", seed), "fd_change"] == 0
        assert t.loc[("displaced", seed), "deviation"] > t.loc[("dice", seed), "deviation"] > 0
    assert 0.5 <= share <= 1.0
    summary = summarize(per_seed, sub)
    assert list(summary.strategy) == ["sync", "displaced", "dice"]
    assert (summary.fd_std >= 0).all() and summary.loc[1, "mean_lag"] > summary.loc[2, "mean_lag"] > 0


@pytest.mark.slow
def test_distributed_executor_matches_the_emulation(setup):
    cfg, scorer, _, grids, _, _ = setup
    dist = distributed_check(cfg, scorer, ["sync", "dice"], [2], grids)
    assert len(dist) == 2
    for r in dist.itertuples():
        assert r.max_abs_diff < 1e-5, r
        for m in ("fd", "accuracy", "deviation"):
            assert getattr(r, f"{m}_distributed") == pytest.approx(getattr(r, f"{m}_emulated"), abs=1e-4)
    assert dist.set_index("strategy").loc["dice", "deviation_distributed"] > 0


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "1"], "seeds"), (["--images", "7"], "divisible"), (["--check-steps", "a"], "check_steps"),
])
def test_bad_digits_options_are_one_line(args, needle, capsys):
    assert main(["quality", "--model", "digits", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
