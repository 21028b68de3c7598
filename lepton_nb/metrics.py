"""Classification metrics: accuracy, macro recall / precision / F1, confusion matrix, per class.

Implemented with NumPy (the tests check them against scikit-learn). Macro averages weight every
class equally, as in the seed article's table; a class never predicted gets precision 0 (and a
class absent from ``y_true`` is left out of the macro averages).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["SEED_CLAIM", "compare_with_claim", "confusion_matrix", "per_class_table", "report", "right_and_wrong",
           "top_confusions"]

#: The seed article's claimed figures for its 2x128 MLP on "medical images", in percent.
SEED_CLAIM = {"accuracy": 96.5, "recall_macro": 94.2, "f1_macro": 95.7}


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:  # probabilities or logits -> predicted class
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise ValueError(f"{name}: expected class indices (N,) or scores (N, classes), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{name}: labels must be integers")
        y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, found {int(y.min())}")
    return y.astype(np.int64)


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Counts (num_classes, num_classes): rows are true classes, columns predicted classes."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    k = num_classes or int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if t.max(initial=-1) >= k or p.max(initial=-1) >= k:
        raise ValueError(f"labels exceed num_classes={k}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def report(y_true, y_pred, *, class_names: Sequence[str] | None = None,
           num_classes: int | None = None) -> dict:
    """All figures of one evaluation.

    Args:
        y_true: true class indices (N,).
        y_pred: predicted class indices (N,), or scores/logits (N, classes) (argmax is taken).

    Returns:
        dict with ``accuracy``, ``recall_macro``, ``precision_macro``, ``f1_macro`` (fractions in
        [0, 1]), ``confusion`` (list of lists), ``per_class`` (list of dicts: name, precision,
        recall, f1, support) and ``n``.
    """
    num_classes = num_classes or (len(class_names) if class_names else None)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    k = cm.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "recall_macro": float(recall[present].mean()),
        "precision_macro": float(precision[present].mean()),
        "f1_macro": float(f1[present].mean()),
        "confusion": cm.tolist(),
        "per_class": [
            {"class": names[i], "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i])}
            for i in range(k)
        ],
    }


def per_class_table(rep: dict):
    """The per-class figures of :func:`report` as a pandas DataFrame (percent)."""
    import pandas as pd

    df = pd.DataFrame(rep["per_class"]).set_index("class")
    df[["precision", "recall", "f1"]] = (df[["precision", "recall", "f1"]] * 100).round(1)
    return df


def compare_with_claim(results: dict[str, dict], claim: dict[str, float] = SEED_CLAIM):
    """Measured accuracy / macro recall / macro F1 of each model beside the seed's claim (percent).

    ``results`` maps a model name to a :func:`report` dict. Returns a DataFrame with a row for the
    claim, one per model, and the difference of each model from the claim in points.
    """
    import pandas as pd

    keys = list(claim)
    rows = {"seed article (claimed)": {k: claim[k] for k in keys}}
    for name, rep in results.items():
        rows[name] = {k: round(100 * rep[k], 1) for k in keys}
        rows[f"  {name} - claim (points)"] = {k: round(100 * rep[k] - claim[k], 1) for k in keys}
    return pd.DataFrame.from_dict(rows, orient="index")[keys]


def top_confusions(rep: dict, k: int = 3) -> list[tuple[str, str, int]]:
    """The ``k`` largest off-diagonal cells of a report's confusion matrix: (true, predicted, count)."""
    cm = np.asarray(rep["confusion"])
    names = [r["class"] for r in rep["per_class"]]
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:k]
    return [(names[i], names[j], int(off[i, j])) for i, j in zip(*np.unravel_index(order, cm.shape)) if off[i, j] > 0]


def right_and_wrong(y_true: Sequence[int], y_pred: Sequence[int], k: int, *, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of up to ``k`` right and ``k`` wrong predictions, spread over the true classes.

    Classes are visited in a seeded random order, one example each per pass, so the picks cover
    as many classes as possible rather than the most frequent one.

    Args:
        y_true, y_pred: class indices (N,).
        k: how many of each kind.

    Returns:
        ``(right, wrong)``: int arrays of at most ``k`` indices each (fewer when the model makes
        fewer errors, or is right fewer times).

    Raises:
        ValueError: mismatched lengths or ``k < 1``.
    """
    t, p = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    if k < 1:
        raise ValueError(f"k={k}: pick at least one example of each kind")
    rng = np.random.default_rng(seed)

    def spread(mask: np.ndarray) -> np.ndarray:
        pools = {c: list(rng.permutation(np.flatnonzero(mask & (t == c)))) for c in rng.permutation(np.unique(t))}
        out: list[int] = []
        while len(out) < k and any(pools.values()):
            for c, pool in pools.items():
                if pool and len(out) < k:
                    out.append(int(pool.pop()))
        return np.asarray(out, dtype=np.int64)

    return spread(t == p), spread(t != p)
