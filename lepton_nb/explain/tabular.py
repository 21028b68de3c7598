"""The tabular case: scikit-learn's bundled breast-cancer data (Wisconsin diagnostic, 569 tumours,
30 named measurements; no network needed), a small Keras MLP that outputs logits, and
:class:`KerasClassifier`, the Keras model as a fitted scikit-learn classifier so that
``sklearn.inspection`` (permutation importance, partial dependence) runs on it unchanged.

The :class:`~lepton_nb.data.Dataset` returned holds standardized feature rows (N, 30) instead of
images, so :func:`lepton_nb.training.train` trains on it unchanged; the raw (unscaled) rows are kept
so that a surrogate tree reads in the original units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

__all__ = ["KerasClassifier", "TabularData", "breast_cancer", "build_tabular_mlp"]


@dataclass(frozen=True, eq=False)
class TabularData:
    """A split tabular data set.

    Attributes:
        dataset: standardized rows as a :class:`lepton_nb.data.Dataset` (x: (N, F) float32).
        feature_names: one plain name per column.
        raw_train, raw_test: the same rows in original units (for trees and tables).
        mean, scale: the standardization, fitted on the training rows only.
    """

    dataset: object
    feature_names: tuple[str, ...]
    raw_train: np.ndarray
    raw_test: np.ndarray
    mean: np.ndarray
    scale: np.ndarray


def breast_cancer(*, test_fraction: float = 0.3, seed: int = 0) -> TabularData:
    """scikit-learn's breast-cancer data, split stratified, standardized on the training rows.

    Classes: 0 "malignant", 1 "benign" (scikit-learn's coding).
    """
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from lepton_nb.data import Dataset

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction}: use a value in (0, 1)")
    bunch = load_breast_cancer()
    x = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    mean, scale = xtr.mean(axis=0), xtr.std(axis=0)
    scale = np.where(scale > 0, scale, 1).astype(np.float32)
    ds = Dataset(((xtr - mean) / scale).astype(np.float32), ytr, ((xte - mean) / scale).astype(np.float32), yte,
                 tuple(str(c) for c in bunch.target_names), "breast-cancer", "sklearn.datasets.load_breast_cancer")
    return TabularData(ds, tuple(str(f) for f in bunch.feature_names), xtr, xte, mean, scale)


def build_tabular_mlp(num_features: int, num_classes: int = 2, *, hidden: Sequence[int] = (32, 16),
                      dropout: float = 0.1, name: str = "tabular_mlp"):
    """Dense ReLU layers then logits: input (B, num_features), output (B, num_classes)."""
    import tensorflow as tf

    inputs = tf.keras.Input((num_features,), name="features")
    h = inputs
    for i, units in enumerate(hidden):
        h = tf.keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(h)
        if dropout:
            h = tf.keras.layers.Dropout(dropout, name=f"dropout_{i}")(h)
    outputs = tf.keras.layers.Dense(num_classes, name="logits")(h)
    return tf.keras.Model(inputs, outputs, name=name)


class KerasClassifier(ClassifierMixin, BaseEstimator):
    """A trained Keras logits model as a fitted scikit-learn classifier (``predict``,
    ``predict_proba``, ``score``; ``classes_`` are 0..K-1). ``fit`` is refused: train with
    :func:`lepton_nb.training.train`.
    """

    def __init__(self, model=None, batch_size: int = 1024):
        self.model = model
        self.batch_size = batch_size

    def __sklearn_is_fitted__(self) -> bool:
        return self.model is not None

    @property
    def classes_(self) -> np.ndarray:
        return np.arange(int(self.model.output_shape[-1]))

    def fit(self, X, y=None):
        raise NotImplementedError("KerasClassifier wraps a trained model; train it with lepton_nb.training.train")

    def predict_proba(self, X) -> np.ndarray:
        from lepton_nb.explain import _common

        return _common.softmax(_common.predict_logits(self.model, np.asarray(X, np.float32), self.batch_size))

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)
