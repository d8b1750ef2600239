"""Image-quality metrics for generated digits, in the digit classifier's feature space.

- Fréchet distance (FD): the FID recipe (Heusel et al. 2017) with the domain classifier of
  :mod:`validate.digits.classifier` in place of Inception-v3: fit a Gaussian to each image set's
  64 penultimate features and take
  ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.
  Lower is better; it is biased upwards for small sets, so only sets of equal size are compared.
- class accuracy: share of generated images the classifier assigns the label they were
  asked for.
- deviation: relative L2 distance of a strategy's samples from the ``sync`` samples drawn
  from the same noise and labels.

Generated samples are clamped to the data range [-1, 1] first, as when they are saved as
images. Shape legend: B images, C channels, S pixels per side, F features.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from validate.digits.classifier import DigitClassifier


@dataclass(frozen=True)
class FeatureStats:
    """Mean mu_F and covariance cov_FF of a set of feature vectors (float64)."""

    mu: np.ndarray
    cov: np.ndarray
    count: int


def to_images(samples_BCSS: torch.Tensor) -> torch.Tensor:
    """Samples clamped to the pixel range [-1, 1] (float32)."""
    return samples_BCSS.float().clamp(-1.0, 1.0)


@torch.no_grad()
def feature_stats(classifier: DigitClassifier, images_BCSS: torch.Tensor) -> FeatureStats:
    """Gaussian statistics of the classifier's features over ``images_BCSS``."""
    f_BF = classifier.features(to_images(images_BCSS)).double().numpy()
    return FeatureStats(mu=f_BF.mean(axis=0), cov=np.cov(f_BF, rowvar=False), count=f_BF.shape[0])


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two Gaussians (FID's formula); the matrix root's tiny
    imaginary part from round-off is dropped, as in the reference implementation."""
    diff = a.mu - b.mu
    with warnings.catch_warnings():  # a near-singular product is handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(a.cov @ b.cov)
    if not np.isfinite(root).all():  # near-singular product: regularise as pytorch-fid does
        eps = np.eye(a.cov.shape[0]) * 1e-6
        root = scipy.linalg.sqrtm((a.cov + eps) @ (b.cov + eps))
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * np.trace(root.real))


@torch.no_grad()
def class_accuracy(classifier: DigitClassifier, images_BCSS: torch.Tensor, y_B: torch.Tensor) -> float:
    """Share of images classified as the label they were generated for."""
    return float((classifier(to_images(images_BCSS)).argmax(dim=1) == y_B).float().mean())


def deviation(samples_BCSS: torch.Tensor, reference_BCSS: torch.Tensor) -> float:
    """Relative L2 distance ||x - ref|| / ||ref|| over the whole set."""
    return float((samples_BCSS - reference_BCSS).norm() / reference_BCSS.norm().clamp_min(1e-30))
