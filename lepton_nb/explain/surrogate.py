"""A decision tree that mimics a classifier (a global surrogate: Craven & Shavlik 1996,
"Extracting Tree-Structured Representations of Trained Networks"; Molnar, "Interpretable Machine
Learning", ch. "Global Surrogate").

The tree is trained on the *model's predictions* (not the labels) from features a person can read:
for images, the mean intensity and the share of "ink" (pixels above a threshold) in the cells of
a grid, the mean intensity of coarser blocks, and both in horizontal and vertical bands; for tabular data, the named columns themselves.
Its quality is its **fidelity**: agreement with the model on held-out examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lepton_nb.reports import Summary

__all__ = ["Region", "Surrogate", "fit_surrogate", "image_regions", "image_surrogate", "model_surrogate",
           "region_features"]


@dataclass(frozen=True)
class Region:
    """A rectangle of the image, rows ``r0:r1``, columns ``c0:c1``, and the statistic read in it.

    ``stat`` is "mean" (mean intensity) or "ink" (share of pixels brighter than the threshold).
    """

    r0: int
    r1: int
    c0: int
    c1: int
    stat: str = "mean"

    @property
    def name(self) -> str:
        what = "mean" if self.stat == "mean" else "ink"
        return f"{what}[r{self.r0}:{self.r1},c{self.c0}:{self.c1}]"


def image_regions(height: int = 28, width: int = 28, *, cell: int = 4, block: int | None = 7,
                  bands: int | None = 4, cell_ink: bool = True) -> list[Region]:
    """The readable features of a ``height x width`` image.

    Args:
        cell: side of the fine grid's square cells (mean intensity each, and ink share with
            ``cell_ink``); must divide both sides.
        block: side of a coarser grid of squares (mean intensity), ``None`` for none.
        bands: height/width of full-width rows and full-height columns, each read as mean intensity
            and as ink share, ``None`` for none.
    """
    for size in (cell, block, bands):
        if size is not None and (size < 1 or height % size or width % size):
            raise ValueError(f"region size {size} must divide the image sides {height}x{width}")
    regs = [Region(r, r + cell, c, c + cell) for r in range(0, height, cell) for c in range(0, width, cell)]
    if cell_ink:
        regs += [Region(r.r0, r.r1, r.c0, r.c1, "ink") for r in regs]
    if block:
        regs += [Region(r, r + block, c, c + block) for r in range(0, height, block) for c in range(0, width, block)]
    if bands:
        for stat in ("mean", "ink"):
            regs += [Region(r, r + bands, 0, width, stat) for r in range(0, height, bands)]
            regs += [Region(0, height, c, c + bands, stat) for c in range(0, width, bands)]
    return regs


def region_features(images: np.ndarray, regions: Sequence[Region], *, ink_threshold: float = 0.1) -> np.ndarray:
    """Features (N, len(regions)) of images (N, H, W[, C]) (channels averaged)."""
    x = np.asarray(images, np.float32)
    if x.ndim == 4:
        x = x.mean(axis=-1)
    if x.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {np.shape(images)}")
    ink = x > ink_threshold
    cols = [(x if r.stat == "mean" else ink)[:, r.r0:r.r1, r.c0:r.c1].mean(axis=(1, 2)) for r in regions]
    return np.stack(cols, axis=1).astype(np.float32)


@dataclass
class Surrogate:
    """A fitted surrogate tree and how faithful it is.

    Attributes:
        tree: the fitted ``sklearn.tree.DecisionTreeClassifier``.
        feature_names: one readable name per feature column.
        class_names: names of the model's classes.
        fidelity: share of held-out examples where the tree predicts the model's class.
        fidelity_train: the same on the examples the tree was fitted on.
        accuracy: the tree's accuracy against true held-out labels (when given), and the model's.
        regions: the image regions behind the features (image surrogates only).
    """

    tree: object
    feature_names: list[str]
    class_names: list[str]
    fidelity: float
    fidelity_train: float
    accuracy: float | None = None
    model_accuracy: float | None = None
    regions: list[Region] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return int(self.tree.get_depth())

    @property
    def leaves(self) -> int:
        return int(self.tree.get_n_leaves())

    def importances(self, top: int | None = 10):
        """Features ranked by the tree's impurity-decrease importance (a pandas DataFrame)."""
        import pandas as pd

        imp = self.tree.feature_importances_
        order = np.argsort(-imp)
        rows = [(self.feature_names[i], float(imp[i])) for i in order if imp[i] > 0]
        return pd.DataFrame(rows[:top] if top else rows, columns=["feature", "importance"])

    def summary(self) -> dict:
        out = {"fidelity": round(100 * self.fidelity, 2), "fidelity_train": round(100 * self.fidelity_train, 2),
               "depth": self.depth, "leaves": self.leaves, "features": len(self.feature_names)}
        if self.accuracy is not None:
            out["tree_accuracy"] = round(100 * self.accuracy, 2)
        if self.model_accuracy is not None:
            out["model_accuracy"] = round(100 * self.model_accuracy, 2)
        return Summary(out)


def fit_surrogate(features_train: np.ndarray, model_pred_train: np.ndarray, features_test: np.ndarray,
                  model_pred_test: np.ndarray, *, feature_names: Sequence[str], class_names: Sequence[str],
                  max_depth: int = 8, max_leaf_nodes: int | None = 64, min_samples_leaf: int = 1,
                  y_test: np.ndarray | None = None, seed: int = 0) -> Surrogate:
    """Fit a CART tree (scikit-learn) to the model's predictions and measure its fidelity.

    Args:
        features_train, features_test: (N, F) readable features.
        model_pred_train, model_pred_test: the model's predicted classes (N,).
        max_depth, max_leaf_nodes: keep the tree small enough to draw and read.
        y_test: true labels of the held-out examples, to report accuracies beside fidelity.
    """
    from sklearn.tree import DecisionTreeClassifier

    ftr, fte = np.asarray(features_train), np.asarray(features_test)
    if ftr.ndim != 2 or fte.ndim != 2 or ftr.shape[1] != fte.shape[1] or ftr.shape[1] != len(feature_names):
        raise ValueError(f"features must be (N, F) with F = {len(feature_names)} named columns; got {ftr.shape} "
                         f"and {fte.shape}")
    if len(ftr) != len(model_pred_train) or len(fte) != len(model_pred_test):
        raise ValueError("need one model prediction per feature row (train and test)")
    if max_depth < 1:
        raise ValueError(f"max_depth={max_depth}: use at least 1")
    tree = DecisionTreeClassifier(max_depth=max_depth, max_leaf_nodes=max_leaf_nodes,
                                  min_samples_leaf=min_samples_leaf, random_state=seed)
    tree.fit(ftr, model_pred_train)
    pte = tree.predict(fte)
    acc = model_acc = None
    if y_test is not None:
        acc = float((pte == np.asarray(y_test)).mean())
        model_acc = float((np.asarray(model_pred_test) == np.asarray(y_test)).mean())
    return Surrogate(tree, list(feature_names), list(class_names), float((pte == model_pred_test).mean()),
                     float((tree.predict(ftr) == model_pred_train).mean()), acc, model_acc)


def model_surrogate(model, x_train: np.ndarray, x_test: np.ndarray, *, features_train: np.ndarray | None = None,
                    features_test: np.ndarray | None = None, feature_names: Sequence[str], class_names: Sequence[str],
                    y_test: np.ndarray | None = None, **tree_options) -> Surrogate:
    """A surrogate tree of ``model``: the model labels ``x_train``/``x_test``, the tree reads the
    readable ``features_*`` of the same rows (default: the inputs themselves, e.g. tabular columns
    in original units when the model sees standardized ones).

    ``tree_options``: ``max_depth``, ``max_leaf_nodes``, ``min_samples_leaf``, ``seed``.
    """
    from lepton_nb.explain import _common

    xtr, xte = _common.as_batch(model, x_train), _common.as_batch(model, x_test)
    ftr = xtr.reshape(len(xtr), -1) if features_train is None else np.asarray(features_train)
    fte = xte.reshape(len(xte), -1) if features_test is None else np.asarray(features_test)
    ptr = _common.predict_logits(model, xtr).argmax(1)
    pte = _common.predict_logits(model, xte).argmax(1)
    return fit_surrogate(ftr, ptr, fte, pte, feature_names=feature_names, class_names=class_names, y_test=y_test,
                         **tree_options)


def image_surrogate(model, x_train: np.ndarray, x_test: np.ndarray, *, class_names: Sequence[str],
                    y_test: np.ndarray | None = None, cell: int = 4, block: int | None = 7, bands: int | None = 4,
                    cell_ink: bool = True, ink_threshold: float = 0.2, max_depth: int = 9,
                    max_leaf_nodes: int | None = 64, seed: int = 0) -> Surrogate:
    """A surrogate tree of an image classifier on region features (see :func:`image_regions`).

    Args:
        model: a Keras logits model; it labels ``x_train`` (the tree's training targets) and
            ``x_test`` (for fidelity).
        x_train, x_test: images (N, H, W, C) in [0, 1].
    """
    from lepton_nb.explain import _common

    xtr, xte = _common.as_batch(model, x_train), _common.as_batch(model, x_test)
    if xtr.ndim != 4:
        raise ValueError("image_surrogate needs images (N, H, W, C); use model_surrogate for tabular rows")
    regions = image_regions(xtr.shape[1], xtr.shape[2], cell=cell, block=block, bands=bands, cell_ink=cell_ink)
    s = model_surrogate(model, xtr, xte, features_train=region_features(xtr, regions, ink_threshold=ink_threshold),
                        features_test=region_features(xte, regions, ink_threshold=ink_threshold), feature_names=[r.name for r in regions],
                        class_names=class_names, y_test=y_test, max_depth=max_depth, max_leaf_nodes=max_leaf_nodes,
                        seed=seed)
    s.regions = regions
    return s
