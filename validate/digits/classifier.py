"""A small digit classifier, the domain network of the image-quality metrics.

FID measures the Fréchet distance between Inception-v3 features of real and generated
images; Inception knows nothing about 8x8 digits, so the same recipe uses this network's
penultimate layer instead (64 features). It is a two-convolution CNN trained on the
training split of :mod:`validate.digits.data` and checked on the held-out split; its weights
are committed (``validate/data/digits/classifier.pt``) so every quality run measures with
the same network.

Shape legend: B images, C = 1 channel, S = 8 pixels per side, F features.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from dicesim.atomic import write_atomic
from validate.digits.data import NUM_CLASSES, DigitsSplit

FEATURES = 64


class DigitClassifier(nn.Module):
    """conv 3x3 (16) -> conv 3x3 (32) -> 2x2 max-pool -> linear 512->64 (features) -> linear 64->10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, FEATURES)
        self.out = nn.Linear(FEATURES, NUM_CLASSES)

    def features(self, x_BCSS: torch.Tensor) -> torch.Tensor:
        """Penultimate activations f_BF (after ReLU): the space the Fréchet distance is taken in."""
        h = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x_BCSS)))), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x_BCSS: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x_BCSS))


def train_classifier(data: DigitsSplit, *, seed: int = 0, epochs: int = 40, batch: int = 64,
                     lr: float = 2e-3) -> DigitClassifier:
    """Adam on cross-entropy, seeded init and data order, small random shifts as augmentation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # nn.Module init draws from the global generator
        model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = data.train_x, data.train_y
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model(_shift(x[idx], gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _shift(x_BCSS: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift the whole batch by -1..1 pixel in each direction (background fill -1)."""
    dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    padded = F.pad(x_BCSS, (1, 1, 1, 1), value=-1.0)
    S = x_BCSS.shape[-1]
    return padded[..., 1 + dy : 1 + dy + S, 1 + dx : 1 + dx + S]


@torch.no_grad()
def accuracy(model: DigitClassifier, x_BCSS: torch.Tensor, y_B: torch.Tensor) -> float:
    """Share of images whose predicted class is ``y_B``."""
    return float((model(x_BCSS).argmax(dim=1) == y_B).float().mean())


def save_classifier(model: DigitClassifier, path: str | os.PathLike[str]) -> None:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_classifier(path: str | os.PathLike[str]) -> DigitClassifier:
    model = DigitClassifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
