"""Faithfulness that can fail: deletion / insertion (Petsiuk et al. 2018, "RISE: Randomized Input
Sampling for Explanation of Black-box Models") and MuFidelity (Bhatt et al. 2020, "Evaluating and
Aggregating Feature-based Model Explanations"), each at several fills and beside two controls.

- **Fills** (what a removed pixel becomes; where insertion starts): ``zero``, ``mean`` (the training
  set's mean image), ``blur`` (a Gaussian blur of the image itself, sigma 3) and ``nli`` (ROAD's
  noisy linear imputation, Rong et al. 2022: each removed pixel is the weighted mean of its 8
  neighbours, solved jointly, plus a little noise; slow, for full mode). Half of the Fashion-MNIST
  pixels are exactly 0, so with the zero fill "deleting" them changes nothing and any map that
  ranks ink first looks good: one fill alone decides nothing.
- **Controls** in every table: ``random`` (a uniformly random map) and ``input`` (the image itself
  used as the map: "brightest pixels first"). A method is called **faithful at a fill** only where
  it beats both controls -- deletion AUC lower and insertion AUC higher than each control's (or a
  higher MuFidelity), by more than 2 standard errors of the paired difference.

Our deletion/insertion engine computes what Xplique's ``Deletion``/``Insertion`` compute (the
means agree to 1e-7 on a tie-free map, tests/test_explain_xplique.py) and is kept because Xplique
returns only the mean over images (no per-image AUC, so no standard error) and breaks ties by
reversed pixel index (many equal values in ReLU'd CAMs and at zero pixels); here ties are broken
at random. MuFidelity is Xplique's, run on **centred** maps (each map minus its mean): Xplique draws
each grid cell into the removed subset independently, so the subset's size varies and the sum of
*any* positive map over it tracks the drop (a random positive map scores about +0.3 as shipped).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["CONTROLS", "FILLS", "deletion_insertion", "faithfulness_table", "fill_images", "gaussian_blur",
           "mufidelity_table", "nli_impute", "verdicts"]

FILLS = ("zero", "mean", "blur", "nli")
CONTROLS = ("random", "input")


def gaussian_blur(images, sigma: float = 3.0):
    """Gaussian blur of images (..., H, W, C) over H and W, as ``scipy.ndimage.gaussian_filter`` with
    ``sigma=(sigma, sigma, 0)`` and its default 'reflect' border, in TensorFlow (so that it also runs
    inside Xplique's compiled perturbation functions). Returns a float32 tensor of the input's shape.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(x)
    h, w, c = x.shape[-3], x.shape[-2], x.shape[-1]
    r = int(4.0 * sigma + 0.5)
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    g = (g / g.sum()).astype(np.float32)
    flat = tf.reshape(x, (-1, h, w, c))
    flat = tf.pad(flat, [[0, 0], [r, r], [r, r], [0, 0]], mode="SYMMETRIC")
    kr = tf.constant(np.tile(g.reshape(-1, 1, 1, 1), (1, 1, c, 1)))
    kc = tf.constant(np.tile(g.reshape(1, -1, 1, 1), (1, 1, c, 1)))
    out = tf.nn.depthwise_conv2d(flat, kr, (1, 1, 1, 1), "VALID")
    out = tf.nn.depthwise_conv2d(out, kc, (1, 1, 1, 1), "VALID")
    return tf.reshape(out, shape)


def fill_images(x: np.ndarray, fill: str, *, mean_image: np.ndarray | None = None, blur_sigma: float = 3.0
                ) -> np.ndarray:
    """What each image (N, H, W, C) becomes when every pixel is removed, for a value fill."""
    if fill == "zero":
        return np.zeros_like(x)
    if fill == "mean":
        if mean_image is None:
            raise ValueError("fill='mean' needs mean_image, the training set's mean image (H, W, C)")
        return np.broadcast_to(np.asarray(mean_image, np.float32), x.shape).copy()
    if fill == "blur":
        return gaussian_blur(x, blur_sigma).numpy()
    raise ValueError(f"fill={fill!r}: choose one of {FILLS}")


# ------------------------------------------------------------------------------------ ROAD fill


def _neighbour_matrix(h: int, w: int):
    import scipy.sparse as sp

    idx = np.arange(h * w).reshape(h, w)
    rows, cols, vals = [], [], []
    for dr, dc, wt in [(-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
                       (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)]:
        r0, r1, c0, c1 = max(0, -dr), h - max(0, dr), max(0, -dc), w - max(0, dc)
        rows.append(idx[r0:r1, c0:c1].ravel())
        cols.append(idx[r0 + dr:r1 + dr, c0 + dc:c1 + dc].ravel())
        vals.append(np.full(rows[-1].size, wt))
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w))
    return a, np.asarray(a.sum(axis=1)).ravel()


def nli_impute(image: np.ndarray, removed: np.ndarray, *, noise: float = 0.01, rng=None) -> np.ndarray:
    """ROAD's noisy linear imputation (Rong et al. 2022) of the ``removed`` pixels of one (H, W) image.

    Each removed pixel is the weighted mean of its 8 neighbours (direct 1/6, diagonal 1/12,
    renormalized at the border), all removed pixels solved jointly with the kept ones fixed, plus
    N(0, ``noise``^2). With every pixel removed nothing is known: the result is all zeros.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    h, w = image.shape
    if not removed.any():
        return image.copy()
    if removed.all():
        return np.zeros_like(image)
    a, deg = _neighbour_matrix(h, w)
    u, k = np.flatnonzero(removed.ravel()), np.flatnonzero(~removed.ravel())
    lhs = sp.diags(deg[u]) - a[u][:, u]
    sol = spsolve(lhs.tocsc(), a[u][:, k] @ image.ravel()[k])
    out = image.ravel().astype(np.float64)
    out[u] = sol + (rng or np.random.default_rng(0)).normal(0, noise, len(u))
    return out.reshape(h, w).astype(image.dtype)


# ----------------------------------------------------------------------------- deletion/insertion


def _ranks(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """rank[i, p]: position of pixel p in image i's order (0 = most important), ties at random."""
    flat = np.asarray(maps, np.float64).reshape(len(maps), -1)
    order = np.lexsort((rng.random(flat.shape), -flat), axis=1)
    rank = np.empty_like(order)
    rank[np.arange(len(flat))[:, None], order] = np.arange(flat.shape[1])[None]
    return rank


def deletion_insertion(model, images, maps, targets=None, *, fill: str = "zero", steps: int = 28,
                       mean_image: np.ndarray | None = None, seed: int = 0, batch_size: int = 4096) -> dict:
    """Per-image deletion and insertion curves of the target's softmax probability.

    Pixels are removed (deletion: replaced by the fill) or revealed (insertion: starting from the
    fill) in the order ``maps`` ranks them, in ``steps`` equal chunks.

    Args:
        model: a Keras logits model; images: (N, H, W, C); maps: (N, H, W), higher = more important.
        targets: class followed per image (default: predicted).
        fill: one of :data:`FILLS`; ``mean_image`` (H, W, C) for "mean".

    Returns:
        dict with ``fractions`` (steps+1,), ``deletion``/``insertion`` curves (N, steps+1),
        their trapezoid AUCs ``deletion_auc``/``insertion_auc`` (N,) and ``targets`` (N,).
    """
    from lepton_nb.explain import _common

    x = _common.as_batch(model, images)
    hm = np.asarray(maps)
    if x.ndim != 4 or hm.shape != x.shape[:3]:
        raise ValueError(f"maps must be (N, H, W) = {x.shape[:3]} to match the images, got {hm.shape}")
    if steps < 1 or fill not in FILLS:
        raise ValueError(f"steps={steps}, fill={fill!r}: use steps >= 1 and a fill in {FILLS}")
    t = _common.resolve_targets(model, x, targets)
    n, h, w, c = x.shape
    rank = _ranks(hm, np.random.default_rng(seed))
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(int)
    changed = (rank[:, None, :] < counts[None, :, None]).reshape(n, steps + 1, h, w, 1)
    if fill == "nli":
        if c != 1:
            raise ValueError("fill='nli' is implemented for one-channel images")
        rng = np.random.default_rng(seed + 1)
        dele = np.stack([[nli_impute(x[i, ..., 0], changed[i, s, ..., 0], rng=rng) for s in range(steps + 1)]
                         for i in range(n)])[..., None]
        ins = np.stack([[nli_impute(x[i, ..., 0], ~changed[i, s, ..., 0], rng=rng) for s in range(steps + 1)]
                        for i in range(n)])[..., None]
    else:
        base = fill_images(x, fill, mean_image=mean_image)
        dele = np.where(changed, base[:, None], x[:, None])
        ins = np.where(changed, x[:, None], base[:, None])
    out = {"fractions": counts / (h * w), "targets": t}
    for kind, batch in (("deletion", dele), ("insertion", ins)):
        logits = _common.predict_logits(model, batch.reshape(-1, h, w, c).astype(np.float32), batch_size)
        p = _common.softmax(logits).reshape(n, steps + 1, -1)[np.arange(n), :, t]
        out[kind] = p
        out[kind + "_auc"] = np.trapz(p, out["fractions"], axis=1)
    return out


def _with_controls(images: np.ndarray, maps: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    x = np.asarray(images, np.float32)
    out = {k: np.asarray(v) for k, v in maps.items()}
    clash = set(out) & set(CONTROLS)
    if clash:
        raise ValueError(f"method names {sorted(clash)} are reserved for the controls; rename them")
    out["random"] = np.random.default_rng(seed + 7).random(x.shape[:3])
    out["input"] = x.mean(axis=-1) if x.ndim == 4 else x
    return out


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def faithfulness_table(model, images, maps: Mapping[str, np.ndarray], targets=None, *,
                       fills: Sequence[str] = ("zero", "mean", "blur"), steps: int = 28,
                       mean_image: np.ndarray | None = None, n_se: float = 2.0, seed: int = 0):
    """Deletion/insertion AUCs of every method and both controls at every fill.

    Returns:
        ``(table, curves)``: a DataFrame with one row per (fill, method): mean ``deletion`` and
        ``insertion`` AUC with standard errors, the paired improvements over each control
        (``deletion_vs_random`` = control's AUC minus the method's, ``insertion_vs_random`` =
        method's minus control's, and ``_se``) and ``faithful`` (both improvements over both
        controls above ``n_se`` standard errors; never for a control); ``curves[fill][method]``
        the :func:`deletion_insertion` dicts.
    """
    import pandas as pd

    from lepton_nb.explain import _common

    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, targets)
    allmaps = _with_controls(x, maps, seed)
    rows, curves = [], {}
    for fill in fills:
        res = {k: deletion_insertion(model, x, v, t, fill=fill, steps=steps, mean_image=mean_image, seed=seed)
               for k, v in allmaps.items()}
        curves[fill] = res
        for k, r in res.items():
            row = {"fill": fill, "method": k}
            ok = k not in CONTROLS
            for kind, sign in (("deletion", -1), ("insertion", 1)):
                a = r[kind + "_auc"]
                row[kind] = float(a.mean())
                row[kind + "_se"] = float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")
                for ctl in CONTROLS:
                    d, se = _paired(sign * a, sign * res[ctl][kind + "_auc"])
                    row[f"{kind}_vs_{ctl}"], row[f"{kind}_vs_{ctl}_se"] = d, se
                    ok &= bool(d > n_se * se)
            row["faithful"] = ok
            rows.append(row)
    return pd.DataFrame(rows), curves


def mufidelity_table(model, images, maps: Mapping[str, np.ndarray], targets=None, *,
                     fills: Sequence[str] = ("zero", "mean", "blur"), mean_image: np.ndarray | None = None,
                     grid_size: int = 7, subset_percent: float = 0.2, nb_samples: int = 64, chunks: int = 4,
                     blur_sigma: float = 3.0, n_se: float = 2.0, seed: int = 0, batch_size: int = 2048):
    """Xplique's MuFidelity (logit of the target) of centred maps, with both controls, per fill.

    The images are cut into ``chunks`` groups; each group gets its own ``MuFidelity`` (the same
    random subsets for every map, ``tf.random.set_seed`` before each evaluation), so the standard
    errors and paired differences are over groups. A ``random, uncentred`` row shows Xplique's
    score of the random map as shipped (positive, see the module docstring).

    Returns:
        A DataFrame with one row per (fill, method): ``mufidelity``, ``se``, paired improvements
        ``vs_random``/``vs_input`` (``_se``) and ``faithful``.
    """
    import pandas as pd
    import tensorflow as tf
    from xplique.metrics import MuFidelity

    from lepton_nb.explain import _common
    from lepton_nb.explain.xplique import one_hot

    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, targets)
    if not 1 <= chunks <= len(x):
        raise ValueError(f"chunks={chunks}: use between 1 and the {len(x)} images")
    allmaps = {k: v.astype(np.float64) - v.reshape(len(v), -1).mean(axis=1)[:, None, None]
               for k, v in _with_controls(x, maps, seed).items()}
    allmaps["random, uncentred"] = np.random.default_rng(seed + 7).random(x.shape[:3])
    oh = one_hot(t, int(model.output_shape[-1]))
    mean_t = None if mean_image is None else tf.constant(np.asarray(mean_image, np.float32))
    baselines = {"zero": 0.0, "mean": lambda p: tf.zeros_like(p) + mean_t,
                 "blur": lambda p: gaussian_blur(p, blur_sigma)}
    groups = np.array_split(np.arange(len(x)), chunks)
    rows = []
    for fill in fills:
        if fill not in baselines:
            raise ValueError(f"fill={fill!r}: MuFidelity runs with {sorted(baselines)}")
        if fill == "mean" and mean_t is None:
            raise ValueError("fill='mean' needs mean_image, the training set's mean image (H, W, C)")
        scores = {k: [] for k in allmaps}
        for g, idx in enumerate(groups):
            metric = MuFidelity(model, x[idx], oh[idx], batch_size=batch_size, grid_size=grid_size,
                                subset_percent=subset_percent, baseline_mode=baselines[fill], nb_samples=nb_samples)
            for k, v in allmaps.items():
                tf.random.set_seed(seed + 1000 * g)
                scores[k].append(metric.evaluate(v[idx].astype(np.float32)))
        for k, s in scores.items():
            s = np.asarray(s)
            row = {"fill": fill, "method": k, "mufidelity": float(s.mean()),
                   "se": float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else float("nan")}
            ok = k not in (*CONTROLS, "random, uncentred")
            for ctl in CONTROLS:
                d, se = _paired(s, scores[ctl])
                row[f"vs_{ctl}"], row[f"vs_{ctl}_se"] = d, se
                ok &= bool(d > n_se * se)
            row["faithful"] = ok
            rows.append(row)
    return pd.DataFrame(rows)


def verdicts(table, value: str = "faithful"):
    """``{method: [fills where faithful]}`` from a :func:`faithfulness_table` or :func:`mufidelity_table`."""
    return {m: list(g.loc[g[value], "fill"]) for m, g in table.groupby("method", sort=False)}
