"""Can the heatmaps be trusted? Three checks that no single anchor library ships together.

- **Faithfulness**: deletion and insertion curves (Petsiuk et al. 2018, "RISE: Randomized Input
  Sampling for Explanation of Black-box Models", BMVC). Pixels are removed (deletion) or restored
  (insertion) in the order the heatmap ranks them; the target-class probability is followed and
  the area under the curve summarizes it. A faithful map gives a *low* deletion AUC and a *high*
  insertion AUC, compared with a random pixel order.
- **Sanity**: the model-randomization test (Adebayo et al. 2018, "Sanity Checks for Saliency
  Maps", NeurIPS). Weights are re-initialized layer by layer from the top (cascading); a method
  whose heatmaps stay rank-correlated with the trained model's heatmaps explains the input, not
  the model.
- **Localization** on data with a known answer: images whose class is decided by where a bright
  patch lies; the heatmap's peak should fall inside the patch (a "pointing game", Zhang et al. 2018).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

__all__ = [
    "HeatmapFn",
    "deletion_insertion",
    "faithfulness",
    "localization_check",
    "model_randomization",
    "patch_dataset",
    "peak_in_mask",
    "randomized_copy",
    "rank_correlation",
]

#: ``fn(model, images, targets) -> heatmaps (N, H, W)``
HeatmapFn = Callable[[object, np.ndarray, np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------- faithfulness


def _order(heatmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel indices (N, P) from most to least important, ties broken at random."""
    flat = heatmap.reshape(len(heatmap), -1).astype(np.float64)
    jitter = rng.random(flat.shape) * 1e-9 * (np.abs(flat).max(axis=1, keepdims=True) + 1e-12)
    return np.argsort(-(flat + jitter), axis=1, kind="stable")


def deletion_insertion(model, images: np.ndarray, heatmaps: np.ndarray, targets=None, *, steps: int = 28,
                       deletion_value: float = 0.0, insertion_start: str = "blur", blur_sigma: float = 3.0,
                       seed: int = 0, batch_size: int = 2048) -> dict:
    """Deletion and insertion curves of one heatmap per image (Petsiuk et al. 2018).

    Args:
        model: a Keras logits model.
        images: (N, H, W, C) images; heatmaps: (N, H, W) importance (higher = more important).
        targets: class followed per image (default: predicted).
        steps: curve points after the start (pixels change in ``steps`` equal chunks).
        deletion_value: what deleted pixels become (0 = black background).
        insertion_start: "blur" (a Gaussian-blurred copy, as in RISE) or "zeros".

    Returns:
        dict with ``fractions`` (steps+1,), ``deletion``/``insertion`` curves (N, steps+1) of the
        target probability, and their trapezoid AUCs ``deletion_auc``/``insertion_auc`` (N,).
    """
    from lepton_nb.explain import _common

    x = _common.as_batch(model, images)
    hm = np.asarray(heatmaps, np.float64)
    if x.ndim != 4 or hm.shape != x.shape[:3]:
        raise ValueError(f"heatmaps must be (N, H, W) = {x.shape[:3]} to match the images, got {hm.shape}")
    if steps < 1:
        raise ValueError(f"steps={steps}: use at least 1")
    if insertion_start not in ("blur", "zeros"):
        raise ValueError(f"insertion_start={insertion_start!r}: choose 'blur' or 'zeros'")
    t = _common.resolve_targets(model, x, targets)
    n, h, w, c = x.shape
    npx = h * w
    order = _order(hm, np.random.default_rng(seed))
    counts = np.round(np.linspace(0, npx, steps + 1)).astype(int)
    # rank[i, p] = position of pixel p in image i's order
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(npx)[None, :]
    if insertion_start == "blur":
        from scipy.ndimage import gaussian_filter

        start = np.stack([gaussian_filter(img, sigma=(blur_sigma, blur_sigma, 0)) for img in x]).astype(np.float32)
    else:
        start = np.zeros_like(x)
    curves = {}
    for kind in ("deletion", "insertion"):
        probs = np.empty((n, steps + 1), np.float32)
        per = max(1, batch_size // (steps + 1))
        for i in range(0, n, per):
            sl = slice(i, i + per)
            changed = (rank[sl, None, :] < counts[None, :, None]).reshape(-1, steps + 1, h, w, 1)  # (b, S, H, W, 1)
            if kind == "deletion":
                batch = np.where(changed, np.float32(deletion_value), x[sl, None])
            else:
                batch = np.where(changed, x[sl, None], start[sl, None])
            logits = _common.predict_logits(model, batch.reshape(-1, h, w, c).astype(np.float32))
            p = _common.softmax(logits).reshape(-1, steps + 1, logits.shape[1])
            probs[sl] = p[np.arange(len(p)), :, t[sl]]
        curves[kind] = probs
    frac = counts / npx
    return {"fractions": frac, "deletion": curves["deletion"], "insertion": curves["insertion"],
            "deletion_auc": np.trapz(curves["deletion"], frac, axis=1),
            "insertion_auc": np.trapz(curves["insertion"], frac, axis=1), "targets": t}


def faithfulness(model, images: np.ndarray, maps: Mapping[str, np.ndarray], targets=None, *, random_baseline: bool = True,
                 seed: int = 0, **options) -> tuple["object", dict]:
    """Deletion/insertion AUCs of several methods' heatmaps on the same images.

    Args:
        maps: ``{method name: heatmaps (N, H, W)}`` for ``images``.
        random_baseline: add a "random" row (a uniformly random pixel order) as the reference.
        options: passed to :func:`deletion_insertion`.

    Returns:
        ``(table, curves)``: a DataFrame with one row per method (mean deletion AUC, mean insertion
        AUC, their difference, and their standard errors) and the per-method curve dicts.
    """
    import pandas as pd

    maps = dict(maps)
    if random_baseline:
        rng = np.random.default_rng(seed + 1)
        shape = next(iter(maps.values())).shape if maps else np.shape(images)[:3]
        maps["random"] = rng.random(shape)
    curves, rows = {}, []
    for name, hm in maps.items():
        r = deletion_insertion(model, images, hm, targets, seed=seed, **options)
        curves[name] = r
        n = len(r["deletion_auc"])
        rows.append({"method": name, "deletion_auc": float(r["deletion_auc"].mean()),
                     "insertion_auc": float(r["insertion_auc"].mean()),
                     "insertion_minus_deletion": float((r["insertion_auc"] - r["deletion_auc"]).mean()),
                     "deletion_se": float(r["deletion_auc"].std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
                     "insertion_se": float(r["insertion_auc"].std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")})
    return pd.DataFrame(rows).set_index("method"), curves


# ------------------------------------------------------------------------------------- sanity


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per example between maps a and b (N, ...), shape (N,).

    A constant map shares no ranking with anything: its correlation is reported as 0.
    """
    from scipy.stats import rankdata

    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1), 0.0)


def _weighted_layers(model) -> list:
    return [layer for layer in model.layers if layer.weights]


def randomized_copy(model, upto: int | None = None, *, seed: int = 0):
    """A copy of ``model`` whose top ``upto`` weighted layers are freshly initialized (all if None).

    ``tf.keras.models.clone_model`` rebuilds every layer with its own initializers (Adebayo et al.
    re-initialize the same way); the weights of the layers below the cascade are copied back.
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    clone = tf.keras.models.clone_model(model)
    src, dst = _weighted_layers(model), _weighted_layers(clone)
    keep = len(src) - (len(src) if upto is None else min(upto, len(src)))
    for a, b in zip(src[:keep], dst[:keep]):
        b.set_weights(a.get_weights())
    return clone


def model_randomization(model, images: np.ndarray, methods: Mapping[str, HeatmapFn], targets=None, *,
                        cascading: bool = True, seed: int = 0) -> tuple["object", dict]:
    """The cascading model-randomization sanity check (Adebayo et al. 2018).

    Args:
        methods: ``{name: fn(model, images, targets) -> heatmaps (N, H, W)}``.
        targets: classes explained (default: the trained model's predictions, kept fixed for every
            randomized copy, as in the paper).
        cascading: randomize the top 1, 2, ... weighted layers in turn; otherwise all at once.

    Returns:
        ``(table, maps)``: a DataFrame (method, randomized, layers_randomized, spearman mean and
        standard deviation; low = the method depends on the weights, as it must) and
        ``maps[randomized][method]`` heatmaps, with ``maps["trained"]`` the originals.
    """
    import pandas as pd

    from lepton_nb.explain import _common

    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, targets)
    layers = _weighted_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no weights to randomize")
    steps = list(range(1, len(layers) + 1)) if cascading else [len(layers)]
    maps = {"trained": {name: np.asarray(fn(model, x, t)) for name, fn in methods.items()}}
    rows = []
    for k in steps:
        label = f"up to {layers[-k].name}" if k < len(layers) else "all layers"
        rand = randomized_copy(model, k, seed=seed)
        maps[label] = {}
        for name, fn in methods.items():
            hm = np.asarray(fn(rand, x, t))
            maps[label][name] = hm
            rho = rank_correlation(maps["trained"][name], hm)
            rows.append({"method": name, "randomized": label, "layers_randomized": k,
                         "spearman": float(rho.mean()), "spearman_std": float(rho.std())})
    return pd.DataFrame(rows), maps


# ------------------------------------------------------------------------------- localization


def patch_dataset(n: int, *, size: int = 28, patch: int = 6, noise: float = 0.35, distractor: float = 0.0,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images with a known answer: the class (0-3) is the quadrant holding a bright square.

    Each image has uniform background noise in [0, ``noise``]; a ``patch x patch`` square of
    intensity 1 lies at a random place inside the quadrant of its class (0 top-left, 1 top-right,
    2 bottom-left, 3 bottom-right). With ``distractor`` > 0 a dimmer square of that intensity lies
    in another quadrant.

    Returns:
        ``(x, y, masks)``: images (n, size, size, 1) float32, labels (n,), patch masks (n, size, size) bool.
    """
    if n < 1 or patch < 1 or 2 * patch > size:
        raise ValueError(f"n={n}, patch={patch}, size={size}: need n >= 1 and 1 <= patch <= size/2")
    rng = np.random.default_rng(seed)
    half = size // 2
    x = rng.uniform(0, noise, (n, size, size)).astype(np.float32)
    y = rng.integers(0, 4, n)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        quads = [y[i]] + ([int(rng.choice([q for q in range(4) if q != y[i]]))] if distractor > 0 else [])
        for j, q in enumerate(quads):
            r0 = (q // 2) * half + rng.integers(0, half - patch + 1)
            c0 = (q % 2) * half + rng.integers(0, half - patch + 1)
            x[i, r0:r0 + patch, c0:c0 + patch] = 1.0 if j == 0 else distractor
            if j == 0:
                masks[i, r0:r0 + patch, c0:c0 + patch] = True
    return x[..., None], y, masks


def peak_in_mask(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Whether each heatmap's maximum lies inside its mask (pointing game), (N,) bool."""
    hm = np.asarray(heatmaps)
    m = np.asarray(masks, bool)
    if hm.shape != m.shape:
        raise ValueError(f"heatmaps {hm.shape} and masks {m.shape} must have the same shape (N, H, W)")
    flat = hm.reshape(len(hm), -1).argmax(axis=1)
    return m.reshape(len(m), -1)[np.arange(len(m)), flat]


def localization_check(n: int = 2400, *, methods: Mapping[str, HeatmapFn] | None = None, test_fraction: float = 0.2,
                       distractor: float = 0.6, train_cfg=None, seed: int = 0) -> dict:
    """Train a small CNN on :func:`patch_dataset` and score each method's pointing accuracy.

    Args:
        n: synthetic images (train + test).
        methods: ``{name: fn(model, images, targets)}``; default Grad-CAM only.
        distractor: intensity of a dimmer square in another quadrant (0 for none), so that a
            method that merely finds bright pixels can miss.
        train_cfg: a :class:`lepton_nb.settings.TrainConfig` (default: 4 quiet epochs).

    Returns:
        dict with ``accuracy`` of the CNN, ``hit_rate`` per method (share of correctly classified
        test images whose heatmap peak lies inside the patch), ``n_correct``, and the test
        ``images``, ``masks``, ``heatmaps`` and ``model`` for figures.
    """
    from lepton_nb.settings import TrainConfig
    from lepton_nb.data import Dataset
    from lepton_nb.explain.cam import gradcam
    from lepton_nb.models import build_cnn
    from lepton_nb.training import train

    methods = methods or {"gradcam": lambda m, x, t: gradcam(m, x, t)}
    x, y, masks = patch_dataset(n, distractor=distractor, seed=seed)
    k = max(4, int(round(n * test_fraction)))
    if n - k < 8:
        raise ValueError(f"n={n} leaves too few training images; use n >= 40")
    ds = Dataset(x[k:], y[k:], x[:k], y[:k], ("top-left", "top-right", "bottom-left", "bottom-right"),
                 "bright-patch", "lepton_nb.explain.trust.patch_dataset")
    cfg = train_cfg or TrainConfig(epochs=4, batch_size=32, early_stopping_patience=None, verbose=0, tensorboard=False,
                                   seed=seed)
    run = train(lambda: build_cnn(filters=8, dense_units=32, num_classes=4, name="patch_cnn"), ds, cfg,
                name="patch_cnn")
    ok = run.report["y_pred"] == ds.y_test
    maps = {name: np.asarray(fn(run.model, ds.x_test, run.report["y_pred"].astype(np.int32)))
            for name, fn in methods.items()}
    hits = {name: float(peak_in_mask(hm[ok], masks[:k][ok]).mean()) if ok.any() else float("nan")
            for name, hm in maps.items()}
    return {"accuracy": float(ok.mean()), "hit_rate": hits, "n_correct": int(ok.sum()), "images": ds.x_test,
            "masks": masks[:k], "heatmaps": maps, "model": run.model}
