"""scikit-learn's bundled handwritten digits as the training and reference data of the
``digits`` model: 1,797 grey 8x8 images of the digits 0-9 (UCI optical recognition of
handwritten digits), shipped inside the scikit-learn package, so nothing is downloaded.

Images stay at their native 8x8: upsampling to 16x16 would add no information, cost four
times the tokens (so a quarter of the optimizer steps in the same training budget) and
give the classifier interpolated pixels to judge instead of real ones.

Pixels (0..16 in the data set) map linearly to [-1, 1], the range the diffusion model
denoises to and the classifier reads. One seeded split serves everything: the DiT-MoE and
the classifier train on ``train``; ``test`` is held out for the classifier's accuracy.

Shape legend: B images, C = 1 channel, S = 8 pixels per side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DIGITS_SIDE_PX = 8
NUM_CLASSES = 10
PIXEL_MAX = 16.0  # the data set's grey levels are 0..16
SPLIT_SEED = 0
HOLDOUT_FRAC = 0.2
#: the committed files `python -m validate train-small` writes and the quality study reads
DATA_DIR = Path(__file__).parent.parent / "data" / "digits"
CHECKPOINT_FILE, CLASSIFIER_FILE, TRAIN_LOG_FILE = "dit_moe_digits.pt", "classifier.pt", "train_log.json"


@dataclass(frozen=True)
class DigitsSplit:
    """Images x_BCSS in [-1, 1] (float32) and labels y_B (int64), train and held-out."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def to_model_range(pixels: np.ndarray) -> torch.Tensor:
    """Grey levels 0..16 -> float32 in [-1, 1] with a channel axis (B x 1 x 8 x 8)."""
    x = torch.from_numpy(np.asarray(pixels, dtype=np.float32)) / (PIXEL_MAX / 2) - 1.0
    return x.reshape(-1, 1, DIGITS_SIDE_PX, DIGITS_SIDE_PX)


def load_digits_split(seed: int = SPLIT_SEED, holdout_frac: float = HOLDOUT_FRAC) -> DigitsSplit:
    """The whole data set, permuted by ``seed`` and cut into train / held-out."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    n_test = int(round(len(order) * holdout_frac))
    test, train = order[:n_test], order[n_test:]
    x = to_model_range(data.images)
    y = torch.from_numpy(data.target.astype(np.int64))
    return DigitsSplit(train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test])
