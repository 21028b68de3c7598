"""Fixed feature maps of images: ScatterNet features (Oyallon & Mallat 2015), cached on disk by content.

A scattering transform (Bruna & Mallat 2013) cascades Morlet wavelet convolutions, moduli and
local averaging: with ``J`` scales and ``L`` orientations a 28x28 image becomes
``1 + J L + L^2 J (J - 1) / 2`` channels of ``28 / 2^J`` x ``28 / 2^J`` (J = 2, L = 8: 81 x 7 x 7).
The wavelets are fixed and data-independent, so computing the features of private images costs no
privacy: Tramer & Boneh 2021 ("Differentially Private Learning Needs Better Features (or Much More
Data)") train a linear model on them with DP-SGD, the recipe of :mod:`lepton_nb.privacy.scatter`.

The features come from kymatio 0.3.0's NumPy frontend (its Keras layer computes the same map, to
~1e-6, but much more slowly on CPUs). They are computed once per set of images and kept in
``feature_cache_dir()`` under a key made from the images' SHA-256, the transform's settings and
kymatio's version, so a second run (or a second notebook) loads them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lepton_nb.settings import Scattering

if TYPE_CHECKING:  # pragma: no cover
    from lepton_nb.data import Dataset

__all__ = ["cached_scatter_features", "feature_cache_dir", "feature_key", "scatter_dataset", "scatter_features",
           "scatter_shape"]


def scatter_shape(image_shape, scattering: Scattering = Scattering()) -> tuple[int, int, int]:
    """Shape (H', W', K) of the features of images of ``image_shape`` (H, W[, 1])."""
    h, w = int(image_shape[0]), int(image_shape[1])
    j, l = scattering.J, scattering.L
    return (h // 2**j, w // 2**j, 1 + j * l + l * l * j * (j - 1) // 2)


def _gray(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim == 4:
        if x.shape[-1] != 1:
            raise ValueError(f"images of shape {x.shape}: the scattering features here take one channel (grayscale "
                             "(N, H, W) or (N, H, W, 1)); convert colour images to grayscale first")
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"images of shape {x.shape}: expected (N, H, W) or (N, H, W, 1)")
    return np.ascontiguousarray(x)


def scatter_features(images: np.ndarray, scattering: Scattering = Scattering(), *, batch: int = 500,
                     progress: bool = True) -> np.ndarray:
    """ScatterNet features of grayscale images, channels last.

    Args:
        images: (N, H, W) or (N, H, W, 1) float in [0, 1]; H and W divisible by ``2^J``.
        scattering: ``J`` scales and ``L`` orientations.
        batch: images per call of the transform (memory: ~batch x 1.5 MB at J=2, L=8).
        progress: show a progress bar (tqdm).

    Returns:
        float32 (N, H / 2^J, W / 2^J, K) with K = 1 + J L + L^2 J (J - 1) / 2.
    """
    import scipy.fft
    from kymatio.numpy import Scattering2D
    from tqdm import tqdm

    x = _gray(images)
    h, w = x.shape[1:]
    if h % 2**scattering.J or w % 2**scattering.J:
        raise ValueError(f"images of {h}x{w} pixels: J={scattering.J} needs sides divisible by {2**scattering.J}")
    transform = Scattering2D(J=scattering.J, shape=(h, w), L=scattering.L)
    out = np.empty((len(x), *scatter_shape((h, w), scattering)), np.float32)
    starts = range(0, len(x), batch)
    with scipy.fft.set_workers(os.cpu_count() or 1):  # kymatio's NumPy backend calls scipy.fft
        for i in tqdm(starts, desc=f"scattering J={scattering.J} L={scattering.L}", unit="batch",
                      disable=not progress, total=len(starts)):
            out[i:i + batch] = np.moveaxis(transform(x[i:i + batch]), 1, -1)  # (b, K, H', W') -> (b, H', W', K)
    return out


def feature_cache_dir() -> Path:
    """``$LEPTON_NB_CACHE/features``, else ``~/.cache/lepton_nb/features`` (created when missing)."""
    from lepton_nb.settings import cache_dir

    return cache_dir("features")


def feature_key(images: np.ndarray, scattering: Scattering = Scattering()) -> str:
    """Cache key of the features of ``images``: SHA-256 of the float32 pixels and their shape, the
    transform's settings and kymatio's version (any change of one of them is another key)."""
    from kymatio import __version__ as kymatio_version

    x = _gray(images)
    digest = hashlib.sha256()
    digest.update(repr((x.shape, scattering.J, scattering.L, kymatio_version)).encode())
    digest.update(x.tobytes())
    return f"scatter-J{scattering.J}-L{scattering.L}-{digest.hexdigest()[:32]}"


def cached_scatter_features(images: np.ndarray, scattering: Scattering = Scattering(), *, progress: bool = True,
                            cache: bool = True) -> np.ndarray:
    """:func:`scatter_features` of ``images``, read from the cache when computed before.

    A new result is written atomically (temporary file, then rename) to
    ``feature_cache_dir() / (feature_key(...) + ".npy")``; ``cache=False`` computes without
    reading or writing the cache.
    """
    if not cache:
        return scatter_features(images, scattering, progress=progress)
    path = feature_cache_dir() / f"{feature_key(images, scattering)}.npy"
    if path.exists():
        return np.load(path)
    feats = scatter_features(images, scattering, progress=progress)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, feats)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return feats


def scatter_dataset(ds: "Dataset", scattering: Scattering = Scattering(), *, progress: bool = True,
                    cache: bool = True) -> "Dataset":
    """``ds`` with every image replaced by its ScatterNet features (same labels, classes and splits).

    The result trains and evaluates like any :class:`~lepton_nb.data.Dataset`
    (:func:`lepton_nb.training.train`, :func:`lepton_nb.privacy.train_dp`, reports): its
    ``input_shape`` is the features' (H', W', K) and its name ends in ``-scatter-J<J>-L<L>``.
    """
    def f(x):
        return None if x is None else cached_scatter_features(x, scattering, progress=progress, cache=cache)

    notes = {**ds.notes, "features": f"ScatterNet J={scattering.J} L={scattering.L} (kymatio), "
                                     f"{scatter_shape(ds.input_shape, scattering)} per image",
             "images": ds.name}
    return replace(ds, x_train=f(ds.x_train), x_test=f(ds.x_test), x_val=f(ds.x_val),
                   name=f"{ds.name}-scatter-J{scattering.J}-L{scattering.L}", notes=notes,
                   horizontal_flip_ok=False)  # mirroring features is not mirroring images (orientations permute)
