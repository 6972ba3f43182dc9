"""A model frozen for serving (:meth:`mlpcore.Sequential.freeze`): a private copy whose Dense
weights are packed once for the running CPU's matrix kernels."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .losses import PROBABILITY_LOSSES, probabilities


class FrozenModel:
    """What :meth:`Sequential.freeze` returns: ``predict`` (and ``predict_proba`` when the
    model was compiled with a classification loss) on a private copy of the model, which
    nothing can train or change. Pickles as the copy (packed again where it is loaded)."""

    def __init__(self, model, loss_name: Optional[str]):
        self._model = model
        self._loss_name = loss_name
        self.predict = model.predict  # the model's own fast path, unwrapped

    @property
    def in_features(self) -> int:
        return self._model.in_features

    @property
    def out_features(self) -> int:
        return self._model.out_features

    @property
    def dtype(self) -> np.dtype:
        return self._model.dtype

    @property
    def classes_(self) -> Optional[np.ndarray]:
        return self._model.classes_

    def __call__(self, x) -> np.ndarray:
        return self.predict(x)

    def predict_proba(self, x, batch_size: Optional[int] = None) -> np.ndarray:
        """Class probabilities, as :meth:`Sequential.predict_proba` of the frozen model."""
        if self._loss_name not in PROBABILITY_LOSSES:
            raise ValueError(f"predict_proba: the frozen model's loss {self._loss_name!r} does "
                             "not define class probabilities (cross_entropy, bce_with_logits "
                             "and bce do; freeze a model compiled with one); use predict")
        return probabilities(self.predict(x, batch_size=batch_size), self._loss_name)

    def __reduce__(self):
        return (_refreeze, (self._model, self._loss_name))

    def __repr__(self) -> str:
        return (f"FrozenModel({self.in_features} -> {self.out_features}, "
                f"{np.dtype(self.dtype).name}, loss={self._loss_name!r})")


def _refreeze(model, loss_name: Optional[str]) -> FrozenModel:
    frozen = model.freeze()
    frozen._loss_name = loss_name
    return frozen
