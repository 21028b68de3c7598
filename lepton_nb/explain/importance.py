"""Feature and region importance: which inputs drive each class, aggregated over many examples.
(Not training-data influence, which is :mod:`lepton_nb.explain.influence`.)

- images: per-class share of the attribution in each region of a grid, from any attribution maps
  (integrated gradients or occlusion) averaged over the test images of each predicted class;
- tabular data: per-feature attributions (integrated gradients, Sundararajan et al. 2017) as mean
  |attribution| and mean signed attribution per class, and the permutation importance (Breiman
  2001) of each named feature from ``sklearn.inspection.permutation_importance`` on the Keras model
  (:class:`lepton_nb.explain.tabular.KerasClassifier`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["feature_table", "permutation_importance", "region_importance", "region_table"]


def region_importance(maps: np.ndarray, labels: np.ndarray, num_classes: int, *, cell: int = 4) -> np.ndarray:
    """Share of the attribution falling in each ``cell x cell`` region, averaged per class.

    Args:
        maps: (N, H, W) non-negative importance (e.g. heatmaps from :func:`attribution.heatmaps`).
        labels: class of each map (N,), usually the predicted class.
        cell: region side; must divide H and W.

    Returns:
        (num_classes, H/cell, W/cell) mean shares (each class's grid sums to 1, NaN for a class
        with no example).
    """
    m = np.asarray(maps, np.float64)
    y = np.asarray(labels)
    if m.ndim != 3 or len(y) != len(m):
        raise ValueError(f"maps must be (N, H, W) with one label each; got {m.shape} and {y.shape}")
    if (m < 0).any():
        raise ValueError("maps must be non-negative importances; pass to_heatmap(maps, 'abs' or 'positive') first")
    n, h, w = m.shape
    if h % cell or w % cell:
        raise ValueError(f"cell={cell} must divide the map size {h}x{w}")
    pooled = m.reshape(n, h // cell, cell, w // cell, cell).sum(axis=(2, 4))
    tot = pooled.reshape(n, -1).sum(axis=1)
    share = np.where(tot[:, None, None] > 0, pooled / np.where(tot > 0, tot, 1)[:, None, None], np.nan)
    out = np.full((num_classes, h // cell, w // cell), np.nan)
    for c in range(num_classes):
        sel = (y == c) & (tot > 0)
        if sel.any():
            out[c] = share[sel].mean(axis=0)
    return out


def region_table(importance: np.ndarray, class_names: Sequence[str], *, cell: int = 4, top: int = 3):
    """The ``top`` regions of each class, as a DataFrame (class, rank, rows, columns, share %)."""
    import pandas as pd

    rows = []
    k, gh, gw = importance.shape
    for c in range(k):
        if np.isnan(importance[c]).all():
            continue
        flat = np.nan_to_num(importance[c]).ravel()
        for rank, i in enumerate(np.argsort(-flat)[:top], start=1):
            r, q = divmod(int(i), gw)
            rows.append({"class": class_names[c], "rank": rank, "rows": f"{r * cell}-{(r + 1) * cell - 1}",
                         "columns": f"{q * cell}-{(q + 1) * cell - 1}", "share %": round(100 * float(flat[i]), 1),
                         "uniform %": round(100 / (gh * gw), 1)})
    return pd.DataFrame(rows)


def feature_table(attributions: np.ndarray, labels: np.ndarray, feature_names: Sequence[str],
                  class_names: Sequence[str], *, top: int | None = 10):
    """Per-feature attribution summary (tabular case), most influential first.

    Args:
        attributions: (N, F) signed attributions toward each example's explained class.
        labels: the explained class of each row (N,).

    Returns:
        A DataFrame indexed by feature: ``mean |attr|`` and the mean signed attribution among the
        examples explained as each class.
    """
    import pandas as pd

    a = np.asarray(attributions, np.float64)
    y = np.asarray(labels)
    if a.ndim != 2 or a.shape[1] != len(feature_names) or len(y) != len(a):
        raise ValueError(f"attributions must be (N, {len(feature_names)}) with one label per row; got {a.shape}, {y.shape}")
    df = pd.DataFrame({"mean |attr|": np.abs(a).mean(axis=0)}, index=list(feature_names))
    for c, name in enumerate(class_names):
        sel = y == c
        df[f"mean attr ({name})"] = a[sel].mean(axis=0) if sel.any() else np.nan
    df.index.name = "feature"
    df = df.sort_values("mean |attr|", ascending=False)
    return df.head(top) if top else df


def permutation_importance(model, x: np.ndarray, y: np.ndarray, feature_names: Sequence[str], *, repeats: int = 30,
                           seed: int = 0, scoring: str = "accuracy"):
    """Drop in ``scoring`` when one feature column is shuffled (Breiman 2001), by scikit-learn.

    ``sklearn.inspection.permutation_importance`` on :class:`~lepton_nb.explain.tabular.KerasClassifier`
    (the Keras model as a fitted scikit-learn classifier). With few repeats the ranking beyond the
    first features is noise: read the standard deviation beside the mean.

    Args:
        model: a Keras logits model on (N, F) rows; x: (N, F); y: true labels (N,).

    Returns:
        A DataFrame indexed by feature with ``accuracy drop`` (points for accuracy) and its ``std``
        over the repeats, largest first.
    """
    import pandas as pd
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    from lepton_nb.explain import _common
    from lepton_nb.explain.tabular import KerasClassifier

    x = _common.as_batch(model, x)
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ValueError(f"x must be (N, {len(feature_names)}) rows of the named features, got {x.shape}")
    r = sk_permutation_importance(KerasClassifier(model), x, np.asarray(y), scoring=scoring, n_repeats=repeats,
                                  random_state=seed)
    scale = 100 if scoring == "accuracy" else 1
    df = pd.DataFrame({f"{scoring} drop": scale * r.importances_mean, "std": scale * r.importances_std},
                      index=list(feature_names))
    df.index.name = "feature"
    return df.sort_values(f"{scoring} drop", ascending=False)
