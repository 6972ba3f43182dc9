"""mlpcore.metrics: regression metrics against direct formulas, accuracy's row counting and
compile's metric names."""
import numpy as np
import pytest

import mlpcore as mc
from mlpcore import metrics, training
from mlpcore.losses import get_loss


def test_regression_metrics_match_the_formulas(rng):
    y = rng.normal(size=(50, 2))
    pred = y + rng.normal(scale=0.3, size=y.shape)
    got = metrics.regression_metrics(pred, y)
    r2 = [1 - np.sum((pred[:, j] - y[:, j]) ** 2) / np.sum((y[:, j] - y[:, j].mean()) ** 2)
          for j in range(2)]
    assert got["mae"] == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-12)
    assert got["r2"] == pytest.approx(np.mean(r2), rel=1e-12)
    constant = np.ones((4, 1))
    assert metrics.regression_metrics(constant, constant)["r2"] == 1.0
    assert metrics.regression_metrics(constant + 1, constant)["r2"] == 0.0


def test_accuracy_counts_one_prediction_per_row_or_per_output():
    labels = np.array([0, 1, 2, 1])
    assert metrics.accuracy(3, 4, get_loss("cross_entropy"), labels) == 0.75
    assert metrics.accuracy(3, 4, get_loss("cross_entropy"), np.eye(4)) == 0.75
    multi_label = np.zeros((4, 3))
    assert metrics.accuracy(6, 4, get_loss("bce_with_logits"), multi_label) == 0.5


def test_check_metrics_names_and_messages():
    assert metrics.check_metrics(None, get_loss("mse")) == []
    assert metrics.check_metrics(["MAE", "r2", "mae"], get_loss("mse")) == ["mae", "r2"]
    with pytest.raises(TypeError, match="metrics must be a list of names, got str"):
        metrics.check_metrics("mae", get_loss("mse"))
    with pytest.raises(ValueError, match="unknown metric 'rmse'"):
        metrics.check_metrics(["rmse"], get_loss("mse"))
    with pytest.raises(ValueError, match="metric 'r2' does not apply to the classification"):
        metrics.check_metrics(["r2"], get_loss("cross_entropy"))


def test_training_keeps_its_old_names():
    assert training.regression_metrics is metrics.regression_metrics
    assert training.METRICS == metrics.METRICS == ("accuracy", "mae", "r2")
    assert training.History is mc.History
