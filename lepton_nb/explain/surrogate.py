"""Decision trees that mimic a classifier (global surrogates: Craven & Shavlik 1996, "Extracting
Tree-Structured Representations of Trained Networks", TREPAN; Molnar, "Interpretable Machine
Learning", ch. "Global Surrogate").

For images (:func:`distill`):

- **Queries**: the CNN labels the training images and ``copies`` randomly shifted (+-2 px), rotated
  (+-10 degrees) and scaled (+-10 %) copies of each (TREPAN queries the model beyond its training
  set); trees learn the CNN's hard labels or, as a multi-output regression tree, its softmax.
- **Readable features** (:data:`FEATURES`), each a sentence and a picture (a highlighted square,
  band or arrow on a thumbnail, :func:`lepton_nb.explain.plotting.picture_tree`): mean ink of 16
  named squares, ink width of 7 row bands, ink height of 7 column bands, bounding-box height and
  width, ink area, ink runs across rows 16-23 (two trouser legs), centre of mass, left-right
  symmetry, mean intensity of the ink.
- **Ceiling and baselines**: the same trees on the CNN's penultimate layer (not readable: how far
  a tree of that size can follow the CNN at all), a tree on the *true labels* of the same readable
  features (never saw the CNN: how much of the "fidelity" any good classifier gets), and a tree on
  raw pixels.
- **Report**: held-out fidelity with a bootstrap 95 % interval, Cohen's kappa, fidelity on the
  images the CNN gets wrong (does the tree make the CNN's mistakes?), per-class fidelity, and the
  fidelity-vs-leaves frontier of every variant. The drawn tree is the readable variant with the
  best fidelity on a validation tenth of the training images (never the test images).

For tabular rows, :func:`model_surrogate` fits a tree on the named columns themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lepton_nb.reports import Summary

__all__ = ["FEATURES", "Feature", "Surrogate", "augment", "distill", "evaluate", "fit_surrogate", "fit_tree",
           "model_surrogate", "readable_features"]

INK = 0.2
_ROWS = ("top", "upper-middle", "lower-middle", "bottom")
_COLS = ("left", "centre-left", "centre-right", "right")


@dataclass(frozen=True)
class Feature:
    """One readable feature of a 28x28 image: a sentence and what to highlight on a picture.

    ``kind``: "region" (mean intensity in the rectangle), "row_band" (ink width across the rows),
    "col_band" (ink height across the columns), "runs" (separate ink runs across the rows),
    "height", "width", "area", "centre_row", "centre_col", "symmetry", "intensity".
    """

    name: str
    kind: str
    rows: tuple[int, int] = (0, 28)
    cols: tuple[int, int] = (0, 28)


def _features() -> list[Feature]:
    f = [Feature(f"ink in the {_ROWS[r]} {_COLS[c]} square", "region", (7 * r, 7 * r + 7), (7 * c, 7 * c + 7))
         for r in range(4) for c in range(4)]
    f += [Feature(f"ink width of rows {4 * i}-{4 * i + 3}", "row_band", (4 * i, 4 * i + 4)) for i in range(7)]
    f += [Feature(f"ink height of columns {4 * i}-{4 * i + 3}", "col_band", cols=(4 * i, 4 * i + 4)) for i in range(7)]
    f += [Feature("height of the ink", "height"), Feature("width of the ink", "width"),
          Feature("ink area (pixels)", "area"), Feature("ink runs across rows 16-23", "runs", (16, 24)),
          Feature("centre of mass (row)", "centre_row"), Feature("centre of mass (column)", "centre_col"),
          Feature("left-right symmetry", "symmetry"), Feature("mean intensity of the ink", "intensity")]
    return f


#: the 38 readable features, in the column order of :func:`readable_features`
FEATURES: list[Feature] = _features()


def _extent(b: np.ndarray) -> np.ndarray:
    """(n, L) bool -> last - first + 1 of the True entries (0 where none)."""
    any_ = b.any(axis=1)
    first = np.where(any_, b.argmax(axis=1), 0)
    last = np.where(any_, b.shape[1] - 1 - b[:, ::-1].argmax(axis=1), -1)
    return (last - first + 1).astype(np.float32)


def readable_features(images: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` (N, 38) float32 of images (N, 28, 28[, 1]) in [0, 1] (ink: > 0.2)."""
    x = np.asarray(images, np.float32)
    x = x.mean(axis=-1) if x.ndim == 4 else x
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"readable features are defined on 28x28 images, got shape {np.shape(images)}")
    n = len(x)
    ink = x > INK
    band = ink[:, 16:24, :].mean(axis=1) > 0.5
    tot = x.sum(axis=(1, 2)) + 1e-6
    rr, cc = np.mgrid[0:28, 0:28]
    cols = [x.reshape(n, 4, 7, 4, 7).mean(axis=(2, 4)).reshape(n, 16),
            np.stack([_extent(ink[:, 4 * i:4 * i + 4, :].any(axis=1)) for i in range(7)], 1),
            np.stack([_extent(ink[:, :, 4 * i:4 * i + 4].any(axis=2)) for i in range(7)], 1),
            np.stack([_extent(ink.any(axis=2)), _extent(ink.any(axis=1))], 1),
            ink.sum(axis=(1, 2))[:, None],
            ((np.diff(band.astype(np.int8), axis=1) == 1).sum(axis=1) + band[:, 0])[:, None],
            np.stack([(x * rr).sum((1, 2)) / tot, (x * cc).sum((1, 2)) / tot], 1),
            (1 - np.abs(x - x[:, :, ::-1]).sum((1, 2)) / (2 * tot))[:, None],
            (np.where(ink, x, 0).sum((1, 2)) / np.maximum(ink.sum((1, 2)), 1))[:, None]]
    return np.concatenate([np.asarray(c, np.float32) for c in cols], axis=1)


def augment(images: np.ndarray, copies: int, *, seed: int = 0) -> np.ndarray:
    """``copies`` random shift (+-2 px) / rotation (+-10 degrees) / scale (+-10 %) copies of each
    image (N, H, W, 1), copy after copy: (N * copies, H, W, 1) in [0, 1]."""
    from scipy.ndimage import affine_transform

    x = np.asarray(images, np.float32)[..., 0]
    rng = np.random.default_rng(seed)
    out = np.empty((len(x) * copies, *x.shape[1:]), np.float32)
    c0 = (np.array(x.shape[1:]) - 1) / 2
    for k in range(len(out)):
        a, s = np.deg2rad(rng.uniform(-10, 10)), rng.uniform(0.9, 1.1)
        m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) / s
        out[k] = affine_transform(x[k % len(x)], m, offset=c0 - m @ c0 - rng.uniform(-2, 2, 2), order=1, cval=0.0)
    return np.clip(out, 0, 1)[..., None]


def fit_tree(features: np.ndarray, targets: np.ndarray, *, leaves: int, soft: bool = False,
             min_samples_leaf: int = 5, seed: int = 0):
    """A CART tree with at most ``leaves`` leaves: a classifier on hard labels (N,), or a
    multi-output regression tree on probabilities (N, K) (``soft``). Its ``predict_class`` returns
    class indices either way."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    cls = DecisionTreeRegressor if soft else DecisionTreeClassifier
    tree = cls(max_leaf_nodes=leaves, min_samples_leaf=min_samples_leaf, random_state=seed)
    tree.fit(features, targets)
    tree.predict_class = (lambda f: tree.predict(f).argmax(axis=1)) if soft else tree.predict
    return tree


def evaluate(tree_pred: np.ndarray, model_pred: np.ndarray, y_true: np.ndarray, *, num_classes: int,
             bootstrap: int = 1000, seed: int = 0) -> dict:
    """Held-out fidelity (agreement with the model) and what qualifies it.

    Returns:
        dict with ``fidelity``, its bootstrap 95 % interval ``ci95``, Cohen's ``kappa``,
        ``fidelity_on_model_errors`` (agreement where the model is wrong), ``tree_accuracy`` and
        ``per_class_fidelity`` (by the model's predicted class; NaN for a class never predicted).
    """
    from sklearn.metrics import cohen_kappa_score

    agree = np.asarray(tree_pred) == np.asarray(model_pred)
    boots = agree[np.random.default_rng(seed).integers(0, len(agree), (bootstrap, len(agree)))].mean(axis=1)
    err = np.asarray(model_pred) != np.asarray(y_true)
    return {"fidelity": float(agree.mean()), "ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
            "kappa": float(cohen_kappa_score(tree_pred, model_pred)),
            "fidelity_on_model_errors": float(agree[err].mean()) if err.any() else float("nan"),
            "tree_accuracy": float((np.asarray(tree_pred) == np.asarray(y_true)).mean()),
            "per_class_fidelity": [float(agree[model_pred == c].mean()) if (model_pred == c).any() else float("nan")
                                   for c in range(num_classes)]}


#: readable variants of :func:`distill` -> (training rows, targets); "labels" never saw the model
READABLE_VARIANTS = ("CNN labels, training images", "CNN labels, queries", "CNN soft labels, queries",
                     "true labels (baseline)")


@dataclass
class Distilled:
    """What :func:`distill` returns.

    Attributes:
        frontier: a DataFrame, one row per (features, variant, leaves) with the :func:`evaluate`
            figures on the held-out images.
        tree: the drawn tree (readable features, ``leaves`` leaves, best validation variant).
        variant: its variant; leaves: its leaf budget; report: its :func:`evaluate` dict.
        queries: how many inputs the CNN labelled; model_accuracy: the CNN's test accuracy.
        x_test, model_pred_test: the held-out images and the CNN's labels of them (for pictures).
    """

    frontier: object
    tree: object
    variant: str
    leaves: int
    report: dict
    queries: int
    model_accuracy: float
    validation: dict = field(default_factory=dict)
    x_test: np.ndarray | None = None
    model_pred_test: np.ndarray | None = None

    def row(self, features: str, variant: str, leaves: int | None = None) -> dict:
        """The frontier row of (features, variant, leaves) as a dict (default leaves: the drawn tree's)."""
        f = self.frontier
        sel = f[(f["features"] == features) & (f["variant"] == variant) & (f["leaves"] == (leaves or self.leaves))]
        if sel.empty:
            raise KeyError(f"no frontier row for {features!r}, {variant!r}, {leaves or self.leaves} leaves")
        return sel.iloc[0].to_dict()


def distill(model, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *, config=None,
            seed: int = 0) -> Distilled:
    """Distil ``model`` into trees and measure them (see the module docstring).

    Args:
        model: a Keras logits image model with a ``logits`` layer (its input is the penultimate layer).
        x_train, y_train: the images the model trained on (queries start from them) and their labels.
        x_test, y_test: held-out images (fidelity is measured there only).
        config: a :class:`lepton_nb.explain.settings.SurrogateConfig`.
    """
    import pandas as pd

    from lepton_nb.explain import _common
    from lepton_nb.explain.influence import features as penultimate
    from lepton_nb.explain.settings import SurrogateConfig

    cfg = config or SurrogateConfig()
    k = int(model.output_shape[-1])
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(x_train), bool)
    is_val[rng.choice(len(x_train), max(1, len(x_train) // 10), replace=False)] = True
    fit_imgs = x_train[~is_val]
    queries = np.concatenate([fit_imgs, augment(fit_imgs, cfg.copies, seed=seed)]) if cfg.copies else fit_imgs
    nfit = len(fit_imgs)
    soft = _common.softmax(_common.predict_logits(model, queries))
    hard = soft.argmax(axis=1)
    pred_val = _common.predict_logits(model, x_train[is_val]).argmax(axis=1)
    pred_test = _common.predict_logits(model, x_test).argmax(axis=1)
    feats = {"readable": (readable_features(queries), readable_features(x_train[is_val]), readable_features(x_test)),
             "penultimate": (penultimate(model, queries)[0], penultimate(model, x_train[is_val])[0],
                             penultimate(model, x_test)[0]),
             "pixels": (queries.reshape(len(queries), -1), x_train[is_val].reshape(int(is_val.sum()), -1),
                        x_test.reshape(len(x_test), -1))}
    targets = {"CNN labels, training images": (slice(0, nfit), hard[:nfit], False),
               "CNN labels, queries": (slice(None), hard, False), "CNN soft labels, queries": (slice(None), soft, True),
               "true labels (baseline)": (slice(0, nfit), np.asarray(y_train)[~is_val], False)}
    big = max(cfg.frontier)
    plan = {"readable": (READABLE_VARIANTS, sorted(set(cfg.frontier) | {cfg.leaves})),
            "penultimate": (("CNN soft labels, queries", "true labels (baseline)"), sorted({cfg.leaves, big})),
            "pixels": (("CNN labels, queries",), [cfg.leaves])}
    rows, trees, validation = [], {}, {}
    for fname, (variants, leaf_counts) in plan.items():
        ftr, fval, fte = feats[fname]
        for variant in variants:
            sl, tgt, is_soft = targets[variant]
            for leaves in leaf_counts:
                tree = fit_tree(ftr[sl], tgt, leaves=leaves, soft=is_soft, min_samples_leaf=cfg.min_samples_leaf,
                                seed=seed)
                ev = evaluate(tree.predict_class(fte), pred_test, y_test, num_classes=k, bootstrap=cfg.bootstrap,
                              seed=seed)
                rows.append({"features": fname, "variant": variant, "leaves": leaves,
                             **{key: v for key, v in ev.items() if key != "per_class_fidelity"},
                             "per_class_fidelity": ev["per_class_fidelity"]})
                if fname == "readable" and leaves == cfg.leaves and not variant.startswith("true"):
                    trees[variant] = (tree, ev)
                    validation[variant] = float((tree.predict_class(fval) == pred_val).mean())
    best = max(validation, key=validation.get)
    tree, report = trees[best]
    return Distilled(pd.DataFrame(rows), tree, best, cfg.leaves, report, len(queries),
                     float((pred_test == np.asarray(y_test)).mean()), validation, np.asarray(x_test), pred_test)


# --------------------------------------------------------------------------------- tabular rows


@dataclass
class Surrogate:
    """A fitted surrogate tree on named columns and how faithful it is.

    Attributes:
        tree: the fitted ``sklearn.tree.DecisionTreeClassifier``.
        feature_names, class_names: names of the columns and of the model's classes.
        fidelity: share of held-out rows where the tree predicts the model's class
            (``fidelity_train`` the same on the rows it was fitted on).
        accuracy, model_accuracy: the tree's and the model's accuracy on the held-out labels.
    """

    tree: object
    feature_names: list[str]
    class_names: list[str]
    fidelity: float
    fidelity_train: float
    accuracy: float | None = None
    model_accuracy: float | None = None

    @property
    def depth(self) -> int:
        return int(self.tree.get_depth())

    @property
    def leaves(self) -> int:
        return int(self.tree.get_n_leaves())

    def importances(self, top: int | None = 10):
        """Columns ranked by the tree's impurity-decrease importance (a pandas DataFrame)."""
        import pandas as pd

        imp = self.tree.feature_importances_
        rows = [(self.feature_names[i], float(imp[i])) for i in np.argsort(-imp) if imp[i] > 0]
        return pd.DataFrame(rows[:top] if top else rows, columns=["feature", "importance"])

    def summary(self) -> dict:
        out = {"fidelity": round(100 * self.fidelity, 2), "fidelity_train": round(100 * self.fidelity_train, 2),
               "depth": self.depth, "leaves": self.leaves, "features": len(self.feature_names)}
        if self.accuracy is not None:
            out.update(tree_accuracy=round(100 * self.accuracy, 2), model_accuracy=round(100 * self.model_accuracy, 2))
        return Summary(out)


def fit_surrogate(features_train: np.ndarray, model_pred_train: np.ndarray, features_test: np.ndarray,
                  model_pred_test: np.ndarray, *, feature_names: Sequence[str], class_names: Sequence[str],
                  max_depth: int = 8, max_leaf_nodes: int | None = 64, min_samples_leaf: int = 1,
                  y_test: np.ndarray | None = None, seed: int = 0) -> Surrogate:
    """Fit a CART tree (scikit-learn) to the model's predicted classes and measure its fidelity."""
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
                                  min_samples_leaf=min_samples_leaf, random_state=seed).fit(ftr, model_pred_train)
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
