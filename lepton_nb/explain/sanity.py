"""Sanity checks that can fail (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS).

- **Cascading model randomization**: the weighted layers are re-initialized from the logits down,
  and each method's maps on the randomized model are compared with those on the trained model. A
  method that explains the model must change already at the first step (logits only).
- **What is compared**: the **foreground** pixels only (image > ``fg_threshold``); the zero
  background that Fashion-MNIST images share makes any two maps that are flat there look alike.
  Three similarities per image: Spearman of |map|, Spearman of the signed map, and SSIM averaged
  over the foreground (scikit-image's SSIM map). A constant map has no ranking: its Spearman is
  undefined and scored 0.
- **Threshold, and why**: the *trained-vs-trained* level -- the same method on an independently
  trained model (another seed) -- is how alike two explanations of equally good models are. A
  method passes the first step (:func:`verdict`) iff (a) that level is at least 0.15 (its maps are
  reproducible: a random map scores about 0, a constant map 0) and (b) randomizing the logits
  layer alone lowers the similarity below that level by more than max(0.15, 3 standard errors of
  the difference) (the input used as its own map never changes, so it fails here). The standard
  errors count the spread between re-initialization draws: one random head is one sample, and
  on Grad-CAM the logits-only similarity moved between -0.1 and 0.45 over six draws here.
- **Re-initialization seed**: offset from any training seed (:data:`RANDOMIZATION_SEED_OFFSET`).
  Re-initializing with the seed the model was trained from rebuilds its *initial* logits layer, to
  which the trained layers are co-adapted: the "randomized" logits keep Pearson ~0.98 with the
  trained ones and every map looks unchanged. :func:`randomized_copy` refuses a copy whose logits
  still correlate above :data:`RECREATED_PEARSON` (0.9) with the model's.
- **Class specificity**: the map for the top-1 class against the map for the top-2 class (low =
  class-specific); Xplique's ``RandomLogitMetric`` (SSIM against a random other class) beside it.

Xplique's ``ModelRandomizationMetric`` is not used for the verdict: it draws U[0, 1) weights (all
positive), compares whole maps, and scores a constant map 0.0, its best possible score.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

__all__ = ["JUDGED_ON", "RANDOMIZATION_SEED_OFFSET", "RECREATED_PEARSON", "cascade", "class_specificity", "foreground_similarity",
           "randomized_copy", "summary", "verdict", "weighted_layers", "xplique_metrics"]

#: fn(model, images (N, H, W, C), targets (N,)) -> signed maps (N, H, W)
MapFn = Callable[[object, np.ndarray, np.ndarray], np.ndarray]

#: added to the seed of every re-initialization, so that it never equals a training seed
RANDOMIZATION_SEED_OFFSET = 0x5A17

#: logits correlation above which a "randomized" copy counts as the re-created initial head: the
#: re-created head kept 0.98 (the spike), while a genuinely fresh head on a once-trained model,
#: checked on 4 images (smoke mode), reached 0.71 by chance, so 0.5 raised false alarms
RECREATED_PEARSON = 0.9

#: the similarity each method is judged on: signed maps by their signed ranking (|IG| keeps the
#: input's |x| pattern whatever the weights), rectified maps by their only ranking
JUDGED_ON = {"gradcam": "spearman_abs", "hirescam": "spearman_abs", "gradcampp": "spearman_abs",
             "rise": "spearman_abs", "constant": "spearman_abs"}


def _spearman_masked(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        m = mask[i].ravel()
        if m.sum() < 3:
            continue
        ra, rb = rankdata(a[i].ravel()[m]), rankdata(b[i].ravel()[m])
        ra, rb = ra - ra.mean(), rb - rb.mean()
        den = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
        if den > 0:
            out[i] = (ra * rb).sum() / den
    return out


def _ssim_masked(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        sa, sb = np.abs(a[i]).max(), np.abs(b[i]).max()
        if sa == 0 or sb == 0 or not mask[i].any():
            continue
        _, full = structural_similarity(a[i] / sa, b[i] / sb, data_range=2.0, full=True, win_size=7)
        out[i] = full[mask[i]].mean()
    return out


def foreground_similarity(a: np.ndarray, b: np.ndarray, images: np.ndarray, *, fg_threshold: float = 0.0
                          ) -> dict[str, np.ndarray]:
    """Per-image similarities of maps ``a`` and ``b`` (N, H, W) on the foreground of ``images``.

    Returns:
        ``{"spearman_abs", "spearman_signed", "ssim"}``, each (N,), NaN where undefined (a map
        constant on the foreground); :func:`summary` scores NaN as 0.
    """
    x = np.asarray(images)
    mask = (x.mean(axis=-1) if x.ndim == 4 else x) > fg_threshold
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.shape != mask.shape:
        raise ValueError(f"maps {a.shape} and {b.shape} must both be (N, H, W) = {mask.shape}")
    return {"spearman_abs": _spearman_masked(np.abs(a), np.abs(b), mask),
            "spearman_signed": _spearman_masked(a, b, mask), "ssim": _ssim_masked(a, b, mask)}


def summary(similarities: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean (NaN scored 0: no ranking is no evidence), standard error and share undefined of each.

    Each value is (N,) per image, or (D, N) for D re-initialization draws of the same images: then
    the standard error adds the spread between the draws' means (one draw shifts every image
    together, so images alone understate it) to the spread between images.
    """
    out = {}
    for k, v in similarities.items():
        v = np.atleast_2d(np.asarray(v, np.float64))
        v0 = np.nan_to_num(v, nan=0.0)
        per_image, per_draw = v0.mean(axis=0), v0.mean(axis=1)
        n, d = len(per_image), len(per_draw)
        se_images = per_image.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
        se_draws = per_draw.std(ddof=1) / np.sqrt(d) if d > 1 else 0.0
        out[k] = float(v0.mean())
        out[k + "_se"] = float(np.hypot(se_images, se_draws))
        out[k + "_undefined"] = float(np.isnan(v).mean())
    return out


def weighted_layers(model) -> list:
    """The layers with weights, bottom to top (the cascade randomizes them top first)."""
    return [layer for layer in model.layers if layer.weights]


def randomized_copy(model, upto: int | None = None, *, seed: int = 0, check_logits: np.ndarray | None = None):
    """A copy of ``model`` whose top ``upto`` weighted layers (all if ``None``) are re-initialized.

    ``tf.keras.models.clone_model`` rebuilds every layer with its own initializers (as Adebayo et
    al. re-initialize), seeded with ``seed + RANDOMIZATION_SEED_OFFSET``; the layers below the
    cascade get the trained weights back.

    Args:
        check_logits: images on which the copy's logits must no longer follow the model's.

    Raises:
        RuntimeError: the copy's logits on ``check_logits``, each class centred over the images,
            correlate (Pearson) above :data:`RECREATED_PEARSON` with the model's: the "randomization" re-created the
            weights the model started from. (Centring keeps each class's constant offset, which a
            random head sets at random, from deciding the correlation.)
    """
    import tensorflow as tf

    from lepton_nb.explain import _common

    tf.keras.utils.set_random_seed(seed + RANDOMIZATION_SEED_OFFSET)
    clone = tf.keras.models.clone_model(model)
    src, dst = weighted_layers(model), weighted_layers(clone)
    keep = len(src) - (len(src) if upto is None else min(upto, len(src)))
    for a, b in zip(src[:keep], dst[:keep]):
        b.set_weights(a.get_weights())
    if check_logits is not None:
        a, b = (_common.predict_logits(m, check_logits) for m in (model, clone))
        r = float(np.corrcoef((a - a.mean(axis=0)).ravel(), (b - b.mean(axis=0)).ravel())[0, 1])
        if r > RECREATED_PEARSON:
            raise RuntimeError(f"the randomized copy (top {upto} layers, seed {seed}) keeps logits at Pearson {r:.2f} "
                               "with the trained model: its seed re-creates the model's initial weights; use another")
    return clone


def cascade(model, images, targets, methods: Mapping[str, MapFn], *, reference_model=None, seed: int = 0,
            steps: int | None = None, draws: int = 1, fg_threshold: float = 0.0):
    """The cascading randomization, logits first, foreground similarities at every step.

    Args:
        methods: ``{name: fn(model, images, targets) -> signed maps (N, H, W)}``.
        targets: the classes explained, kept fixed for every copy (the trained model's predictions).
        reference_model: an independently trained model: the first row, "independently trained".
        steps: randomize only the top 1 .. ``steps`` layers (default: all of them, one at a time).
        draws: independent re-initializations (seeds ``seed``, ``seed + 1``, ...) at each step.
            One draw is one random head: the logits-only similarity varies by about +-0.15 from
            draw to draw, so a verdict from a single draw can go either way.

    Returns:
        ``(table, maps)``: a DataFrame with one row per (method, step) and the :func:`summary`
        figures, and ``maps[step][method]`` with ``maps["trained"]`` the originals.
    """
    import pandas as pd

    from lepton_nb.explain import _common

    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, targets)
    layers = weighted_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no weights to randomize")
    maps = {"trained": {m: np.asarray(fn(model, x, t)) for m, fn in methods.items()}}
    plan = [("independently trained", reference_model)] if reference_model is not None else []
    plan += [(f"top {k} ({layers[-k].name})" if k < len(layers) else f"all {k}", k)
             for k in range(1, min(steps or len(layers), len(layers)) + 1)]
    if draws < 1:
        raise ValueError(f"draws={draws}: re-initialize at least once")
    rows = []
    for label, what in plan:
        others = [what] if not isinstance(what, int) else [
            randomized_copy(model, what, seed=seed + d, check_logits=x) for d in range(draws)]
        sims = {m: [] for m in methods}
        for other in others:
            for m, fn in methods.items():
                hm = np.asarray(fn(other, x, t))
                maps.setdefault(label, {}).setdefault(m, hm)  # the first draw's maps, for figures
                sims[m].append(foreground_similarity(maps["trained"][m], hm, x, fg_threshold=fg_threshold))
        for m, per_draw in sims.items():
            sim = summary({k: np.stack([s_[k] for s_ in per_draw]) for k in per_draw[0]})
            rows.append({"method": m, "step": label, "layers_randomized": what if isinstance(what, int) else 0,
                         "draws": len(per_draw), **sim})
    return pd.DataFrame(rows), maps


def verdict(table, *, metric: str | None = None, min_reproducible: float = 0.15, margin: float = 0.15,
            n_se: float = 3.0) -> dict[str, dict]:
    """Pass or fail of each method at the cascade's first step (logits only); see the module docstring.

    Args:
        table: from :func:`cascade` with a reference model.
        metric: one similarity for every method; default :data:`JUDGED_ON` (else signed Spearman).

    Returns:
        ``{method: {judged_on, reproducible, after_logits, gap, needed_gap, pass}}``.
    """
    out = {}
    for m, g in table.groupby("method", sort=False):
        key = metric or JUDGED_ON.get(m, "spearman_signed")
        ref = g[g["step"] == "independently trained"]
        first = g[g["layers_randomized"] == 1].iloc[0]
        if ref.empty:
            raise ValueError("the verdict needs the trained-vs-trained level: run cascade(..., reference_model=...)")
        ref = ref.iloc[0]
        gap = float(ref[key] - first[key])
        need = max(margin, n_se * float(np.hypot(ref[key + "_se"], first[key + "_se"])))
        out[m] = {"judged_on": key, "reproducible": float(ref[key]), "after_logits": float(first[key]), "gap": gap,
                  "needed_gap": need, "pass": bool(ref[key] >= min_reproducible and gap > need)}
    return out


def class_specificity(model, images, methods: Mapping[str, MapFn], *, fg_threshold: float = 0.0):
    """Similarity of each method's map for the top-1 and for the top-2 class (low = class-specific).

    Returns:
        A DataFrame indexed by method with the :func:`summary` figures.
    """
    import pandas as pd

    from lepton_nb.explain import _common

    x = _common.as_batch(model, images)
    order = np.argsort(-_common.predict_logits(model, x), axis=1).astype(np.int32)
    rows = {m: summary(foreground_similarity(fn(model, x, order[:, 0]), fn(model, x, order[:, 1]), x,
                                             fg_threshold=fg_threshold)) for m, fn in methods.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


def xplique_metrics(model, images, methods: Mapping[str, MapFn], targets=None, *, stability_images: int = 4,
                    stability_samples: int = 6, radius: float = 0.1, seed: int = 0):
    """Xplique's ``RandomLogitMetric`` (SSIM of the maps for the target and a random other class;
    low = class-sensitive) and ``AverageStability`` (mean L2 distance of maps, each divided by its
    max |value|, under uniform noise of ``radius``; low = stable) for each method.

    Both score a constant map as perfectly stable, and RandomLogit scores it 1.0; read them only
    beside the controls (add ``"constant"`` and ``"input"`` methods).

    Returns:
        A DataFrame indexed by method: ``random_logit_ssim``, ``stability_l2``.
    """
    import pandas as pd
    import tensorflow as tf
    from xplique.metrics import AverageStability, RandomLogitMetric

    from lepton_nb.explain import _common
    from lepton_nb.explain.xplique import Explainer, one_hot

    x = _common.as_batch(model, images)
    oh = one_hot(_common.resolve_targets(model, x, targets), int(model.output_shape[-1]))
    rows = {}
    for m, fn in methods.items():
        e = Explainer(fn, model)
        tf.random.set_seed(seed)
        logit = RandomLogitMetric(model, x, oh, batch_size=len(x), seed=seed).evaluate(e)
        tf.random.set_seed(seed)
        stab = AverageStability(model, x[:stability_images], oh[:stability_images], radius=radius,
                                nb_samples=stability_samples).evaluate(e)
        rows[m] = {"random_logit_ssim": float(logit), "stability_l2": float(stab)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
