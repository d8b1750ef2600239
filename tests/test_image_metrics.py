"""Image-quality metrics: FD in closed form, and the committed classifier separates real digits
from noise (FD real-vs-real far below real-vs-noise, held-out accuracy >= 95%)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from validate.digits.classifier import accuracy, load_classifier
from validate.digits.data import CLASSIFIER_FILE, DATA_DIR, load_digits_split
from validate.quality.image_metrics import FeatureStats, class_accuracy, deviation, feature_stats, frechet_distance

torch.set_num_threads(1)


def test_frechet_distance_of_diagonal_gaussians_in_closed_form():
    a = FeatureStats(mu=np.array([0.0, 1.0, 2.0]), cov=np.diag([1.0, 4.0, 9.0]), count=10)
    b = FeatureStats(mu=np.array([1.0, 1.0, 0.0]), cov=np.diag([4.0, 4.0, 1.0]), count=10)
    # |mu_a - mu_b|^2 + sum (sqrt(s_a) - sqrt(s_b))^2 for commuting covariances
    expected = (1 + 0 + 4) + ((1 - 2) ** 2 + 0 + (3 - 1) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_deviation_is_relative_l2():
    ref = torch.ones(2, 1, 8, 8)
    assert deviation(ref * 1.1, ref) == pytest.approx(0.1, rel=1e-6)
    assert deviation(ref, ref) == 0.0


@pytest.fixture(scope="module")
def classifier():
    path = DATA_DIR / CLASSIFIER_FILE
    if not path.is_file():
        pytest.skip("classifier not trained yet")
    return load_classifier(path)


def test_classifier_separates_real_digits_from_noise(classifier):
    data = load_digits_split()
    assert accuracy(classifier, data.test_x, data.test_y) >= 0.95
    reference = feature_stats(classifier, data.train_x)
    real = data.test_x[:200]
    noise = torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    fd_real = frechet_distance(feature_stats(classifier, real), reference)
    fd_noise = frechet_distance(feature_stats(classifier, noise), reference)
    assert fd_real < 0.1 * fd_noise, (fd_real, fd_noise)
    assert class_accuracy(classifier, real, data.test_y[:200]) >= 0.95
    # noise is not a digit of any asked class more often than chance would allow
    assert class_accuracy(classifier, noise, data.test_y[:200]) < 0.3
