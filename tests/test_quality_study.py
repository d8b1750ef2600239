"""`quality --model digits` end to end on a small setting: the gloo executor on 2 ranks gives
the emulation's samples and metrics for sync and dice, staleness shows in the metrics, and the
table it writes is what the simulator's quality model reads. Bad options are one line."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from dicesim.quality_model import fit_quality, load_quality_table
from validate.cli import main
from validate.digits.data import CHECKPOINT_FILE, DATA_DIR
from validate.quality.run import QualityPaths, run_quality
from validate.quality.study import STUDY, QualityStudyConfig

SUB = [s for s in STUDY if s.label in ("sync", "displaced", "interweaved", "dice", "sp", "distrifusion")]
pytestmark = pytest.mark.skipif(not (DATA_DIR / CHECKPOINT_FILE).is_file(), reason="checkpoint not trained yet")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    paths = QualityPaths(doc=out / "quality.md", figure=out / "figures" / "samples.png", table=out / "digits.toml")
    cfg = QualityStudyConfig(checkpoint=str(DATA_DIR / CHECKPOINT_FILE), steps=4, images=8, seeds=(0, 1))
    result = run_quality(cfg, paths, check_steps=[2], world_sizes=[2], command="test", echo=lambda _: None,
                         strategies=SUB)
    torch.set_num_threads(1)
    return paths, result


@pytest.mark.slow
def test_distributed_executor_matches_the_emulation(run):
    dist = run[1]["dist"]
    assert sorted(dist.strategy) == ["dice", "sync"] and set(dist.world_size) == {2}
    for r in dist.itertuples():
        assert r.max_abs_diff < 1e-5, r
        for m in ("fd", "accuracy", "deviation"):
            assert getattr(r, f"{m}_distributed") == pytest.approx(getattr(r, f"{m}_emulated"), abs=1e-4)
    assert dist.set_index("strategy").loc["dice", "deviation_distributed"] > 0


@pytest.mark.slow
def test_sync_is_the_reference_and_staleness_moves_the_samples(run):
    t = run[1]["per_seed"].set_index(["strategy", "seed"])
    for seed in (0, 1):
        assert t.loc[("sync", seed), "deviation"] == 0 and t.loc[("sync", seed), "fd_change"] == 0
        assert t.loc[("displaced", seed), "deviation"] > t.loc[("dice", seed), "deviation"] > 0
    summary = run[1]["summary"]
    assert list(summary.strategy) == [s.label for s in SUB] and (summary.fd_std >= 0).all()


@pytest.mark.slow
def test_written_table_feeds_the_quality_model_and_the_page(run):
    paths, result = run
    table = load_quality_table(paths.table)
    assert [p.label for p in table.points] == [s.label for s in SUB]
    assert table.meta["num_steps"] == 4 and 0.5 <= table.top1_share <= 1.0
    assert [(c.label, c.num_steps) for c in table.checks] == [("interweaved", 2), ("dice", 2)]
    assert min(fit_quality(table, "deviation").coef) >= 0
    text = paths.doc.read_text()
    assert all(f"| {s.label} |" in text for s in SUB) and "figures/samples.png" in text
    with Image.open(paths.figure) as img:
        assert img.width > 100 and img.height > 100


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "1"], "seeds"), (["--images", "7"], "divisible"), (["--check-steps", "a"], "check_steps"),
    (["--check-steps", "20000"], "check_steps: 20000 is out of range"),
    (["--images", "130", "--world-sizes", "2,65"], "world_sizes: 65 is out of range (allowed: integers 1..64)"),
    (["--steps", "0"], "steps: 0 is out of range"),
])
def test_bad_digits_options_are_one_line(args, needle, capsys):
    assert main(["quality", "--model", "digits", *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert captured.out == ""  # refused before the real digits were even scored


def test_checkpoint_of_another_model_is_refused_before_sampling(tmp_path, capsys):
    from fuzz_cases import make_checkpoint

    ckpt = tmp_path / "tiny.pt"
    make_checkpoint(ckpt)
    assert main(["quality", "--model", "digits", "--checkpoint", str(ckpt), "--out", str(tmp_path / "q.md")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: checkpoint: ") and "missing" in captured.err and captured.out == ""
    assert not (tmp_path / "q.md").exists()

