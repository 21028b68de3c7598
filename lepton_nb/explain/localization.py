"""Localization on images with a known answer, where the decisive cue is *not* the brightest region.

Each 28x28 image holds three shapes of exactly 20 pixels at intensity 1.0 on uniform [0, 0.3]
noise, in non-overlapping 6x6 boxes at random places: one **class shape** (0 square outline,
1 plus, 2 ring, 3 solid block) and two **distractors** drawn from {X, L, T}, which never decide the
class. All shapes are equally bright and equally large, so the image used as its own heatmap points
at the class shape only one time in three, and a uniformly random map hits the decisive box (the
class shape's box grown by 1 pixel, 64 of 784 pixels) about 8 % of the time: the benchmark can fail.

Scores: the pointing game (Zhang et al. 2018, "Top-down Neural Attention by Excitation Backprop":
the map's maximum, ties broken at random, inside the box) and the energy share (share of the map's
positive mass inside the box; Wang et al. 2020, "Score-CAM"), each with its standard error, beside
the input and random controls and their chance levels.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

__all__ = ["CLASS_NAMES", "SHAPES", "background_heat", "benchmark", "energy_in_mask", "pointing", "shapes_dataset"]


def _shapes() -> dict[str, np.ndarray]:
    s = {k: np.zeros((6, 6), bool) for k in ("square", "plus", "ring", "block", "X", "L", "T")}
    s["square"][[0, -1], :] = s["square"][:, [0, -1]] = True
    s["plus"][2:4, :] = s["plus"][:, 2:4] = True
    s["ring"][[0, 5], 1:5] = s["ring"][1:5, [0, 5]] = True
    s["ring"][[1, 1, 4, 4], [1, 4, 1, 4]] = True
    s["block"][1:5, 0:5] = True
    s["X"][np.arange(6), np.arange(6)] = s["X"][np.arange(6), 5 - np.arange(6)] = True
    s["X"][[0, 1, 0, 1, 4, 5, 4, 5], [1, 0, 4, 5, 0, 1, 5, 4]] = True
    s["L"][:, 0:2] = s["L"][4:6, 2:6] = True
    s["T"][0:2, :] = s["T"][2:6, 2:4] = True
    return s


#: every shape has exactly 20 pixels
SHAPES = _shapes()
CLASS_NAMES = ("square", "plus", "ring", "block")
DISTRACTORS = ("X", "L", "T")


def shapes_dataset(n: int, *, size: int = 28, noise: float = 0.3, distractors: int = 2, seed: int = 0):
    """``n`` images of the benchmark.

    Returns:
        ``(x, y, boxes, which)``: images (n, size, size, 1) float32, classes (n,), decisive boxes
        (n, size, size) bool, and shape masks (n, size, size) int8 (0 background, 1 class shape,
        2 distractor).
    """
    if n < 1 or size < 6 * (distractors + 1) + 2:
        raise ValueError(f"n={n}, size={size}: need n >= 1 and room for {distractors + 1} shapes of 6x6")
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, noise, (n, size, size)).astype(np.float32)
    y = rng.integers(0, len(CLASS_NAMES), n)
    boxes = np.zeros((n, size, size), bool)
    which = np.zeros((n, size, size), np.int8)
    for i in range(n):
        placed: list[tuple[int, int]] = []
        for j, kind in enumerate([CLASS_NAMES[y[i]], *rng.choice(DISTRACTORS, distractors)]):
            for _ in range(1000):
                r, c = rng.integers(0, size - 5, 2)
                if all(abs(r - r2) >= 8 or abs(c - c2) >= 8 for r2, c2 in placed):  # 2-pixel gap between boxes
                    break
            else:
                raise RuntimeError("could not place the shapes; use fewer distractors or larger images")
            placed.append((r, c))
            x[i, r:r + 6, c:c + 6][SHAPES[kind]] = 1.0
            which[i, r:r + 6, c:c + 6][SHAPES[kind]] = 1 if j == 0 else 2
            if j == 0:
                boxes[i, max(0, r - 1):r + 7, max(0, c - 1):c + 7] = True
    return x[..., None], y, boxes, which


def pointing(maps: np.ndarray, masks: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Pointing-game hits (N,) bool: each map's maximum (ties broken at random) lies inside its mask."""
    m = np.asarray(maps, np.float64).reshape(len(maps), -1)
    k = np.asarray(masks, bool).reshape(len(masks), -1)
    if m.shape != k.shape:
        raise ValueError(f"maps {np.shape(maps)} and masks {np.shape(masks)} must have the same shape (N, H, W)")
    top = np.lexsort((np.random.default_rng(seed).random(m.shape), -m), axis=1)[:, 0]
    return k[np.arange(len(m)), top]


def energy_in_mask(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of each map's positive mass inside its mask (N,); NaN for a map with no positive value."""
    m = np.maximum(np.asarray(maps, np.float64), 0).reshape(len(maps), -1)
    tot = m.sum(axis=1)
    inside = (m * np.asarray(masks, bool).reshape(len(masks), -1)).sum(axis=1)
    return np.where(tot > 0, inside / np.where(tot > 0, tot, 1), np.nan)


def benchmark(methods: Mapping[str, Callable], *, n: int = 3000, evaluated: int = 64, test_fraction: float = 0.2,
              model_cfg=None, train_cfg=None, seed: int = 0) -> dict:
    """Train a CNN on :func:`shapes_dataset` and score each method's maps on correct test images.

    Args:
        methods: ``{name: fn(model, images, targets) -> maps (N, H, W)}`` (higher = more important).
        n: images (train + test); evaluated: correctly classified test images scored.
        model_cfg: a :class:`lepton_nb.settings.CNNConfig` (default: depth 2, 16 filters, no
            normalization: with batch norm and few steps the moving statistics lag behind).
        train_cfg: a :class:`lepton_nb.settings.TrainConfig` (default: 8 quiet epochs of batches of
            32, enough steps to reach about 99 % on 3,000 images; 6 epochs of 64 reach only 80 %).

    Returns:
        dict with ``accuracy`` of the CNN, ``table`` (a DataFrame per method and control:
        ``pointing``, ``pointing_se``, ``energy``, ``energy_se``, ``chance_pointing``), the
        evaluated ``images``, ``boxes``, ``maps``, ``shapes`` (their shape masks, see
        :func:`shapes_dataset`) and the ``model``.
    """
    import pandas as pd

    from lepton_nb.data import Dataset
    from lepton_nb.models import build_cnn
    from lepton_nb.settings import CNNConfig, DataConfig, TrainConfig
    from lepton_nb.training import train

    k = max(evaluated, int(round(n * test_fraction)))
    if n - k < 40:
        raise ValueError(f"n={n} leaves {n - k} training images for {k} test images; use n >= {k + 40}")
    x, y, boxes, which = shapes_dataset(n, seed=seed)
    ds = Dataset(x[k:], y[k:], x[:k], y[:k], CLASS_NAMES, "shapes", "lepton_nb.explain.localization.shapes_dataset")
    cfg = model_cfg or CNNConfig(filters=16, depth=2)
    tcfg = train_cfg or TrainConfig(epochs=8, batch_size=32, verbose=0, tensorboard=False, early_stopping_patience=None,
                                    seed=seed)
    run = train(lambda: build_cnn(cfg, num_classes=len(CLASS_NAMES), name="shapes_cnn"), ds, tcfg,
                data_cfg=DataConfig(validation_fraction=0.0), name="shapes_cnn")
    pred = run.report["y_pred"]
    ok = np.flatnonzero(pred == ds.y_test)[:evaluated]
    if len(ok) == 0:
        raise RuntimeError(f"the shapes CNN classifies no test image correctly (accuracy {run.report['accuracy']:.2f});"
                           " train it longer (train_cfg)")
    xe, be, te = ds.x_test[ok], boxes[:k][ok], pred[ok].astype(np.int32)
    maps = {name: np.asarray(fn(run.model, xe, te)) for name, fn in methods.items()}
    maps["input"] = xe[..., 0]
    maps["random"] = np.random.default_rng(seed + 3).random(xe.shape[:3])
    rows = {}
    for name, m in maps.items():
        hits, energy = pointing(m, be, seed=seed), energy_in_mask(m, be)
        chance = 1 / 3 if name == "input" else float(be.mean()) if name == "random" else float("nan")
        rows[name] = {"pointing": float(hits.mean()), "pointing_se": float(hits.std(ddof=1) / np.sqrt(len(hits))),
                      "energy": float(np.nanmean(energy)),
                      "energy_se": float(np.nanstd(energy, ddof=1) / np.sqrt(np.isfinite(energy).sum())),
                      "chance_pointing": chance}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
    return {"accuracy": float(run.report["accuracy"]), "table": table, "images": xe, "boxes": be, "maps": maps,
            "shapes": which[:k][ok], "model": run.model, "evaluated": len(ok)}


def background_heat(maps: Mapping[str, np.ndarray], images: np.ndarray, *, far: int = 2):
    """Where each method's positive evidence lies on real images: the share of the positive mass
    on the background (pixels == 0) and on the far background (more than ``far`` pixels from any
    ink), and how often the peak falls on the far background.

    Returns:
        A DataFrame indexed by method, with the background's share of the image area as the
        reference (a map spread evenly would put that share there).
    """
    import pandas as pd
    from scipy.ndimage import binary_dilation

    x = np.asarray(images, np.float32)
    x = x.mean(axis=-1) if x.ndim == 4 else x
    bg = x <= 0
    far_bg = ~np.stack([binary_dilation(~b, iterations=far) for b in bg])
    rows = {"(share of the area)": {"mass_on_background": float(bg.mean()), "mass_on_far_background": float(far_bg.mean()),
                                    "peak_on_far_background": float(far_bg.mean())}}
    for name, m in maps.items():
        pos = np.maximum(np.asarray(m, np.float64), 0)
        tot = np.maximum(pos.sum(axis=(1, 2)), 1e-12)
        rows[name] = {"mass_on_background": float(((pos * bg).sum(axis=(1, 2)) / tot).mean()),
                      "mass_on_far_background": float(((pos * far_bg).sum(axis=(1, 2)) / tot).mean()),
                      "peak_on_far_background": float(pointing(pos, far_bg).mean())}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
