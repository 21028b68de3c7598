"""Checks on data before any training: arrays (shape, dtype, finite pixels, label range, the same
classes in train and test) and files (existence, SHA-256). Problems raise :class:`DataError`
naming the file and the fix."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

__all__ = ["DataError", "sha256_file", "validate_arrays"]


class DataError(ValueError):
    """A data file or array is unusable; the message names it and says how to fix it."""


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 or float (N, H, W[, C]) -> float32 (N, H, W, C) in [0, 1]."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(f"{where}: images must be (N, H, W) or (N, H, W, C) with N > 0, got shape {x.shape}")
    if x.shape[-1] not in (1, 3):
        raise DataError(f"{where}: images need 1 or 3 channels, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{where}: images must be uint8 (0..255) or float (0..1), got dtype {x.dtype}")
    if not np.isfinite(x).all():
        bad = int(np.size(x) - np.isfinite(x).sum())
        raise DataError(f"{where}: {bad} pixel values are NaN or infinite; clean or drop those images")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise DataError(f"{where}: float images must lie in [0, 1], found [{lo:g}, {hi:g}]; divide uint8 data by 255")
    return x.astype(np.float32)


def _as_labels(y: np.ndarray, n: int, num_classes: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # MedMNIST stores (n, 1)
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be (N,) or (N, 1) integers, got shape {y.shape} "
                        "(multi-label MedMNIST sets such as chestmnist are not supported)")
    if len(y) != n:
        raise DataError(f"{where}: {len(y)} labels for {n} images")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}")
    return y.astype(np.int64)


def validate_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    num_classes: int,
    where: str,
    image_size: tuple[int, int] | None = (28, 28),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check and convert raw arrays; returns float32 NHWC images in [0, 1] and int64 labels.

    Raises:
        DataError: naming ``where`` and the problem (shape, dtype, NaN/inf, label range,
            different class sets in train and test).
    """
    xs, ys = [], []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        xi = _as_images(np.asarray(x), f"{where} [{split} images]")
        if image_size is not None and xi.shape[1:3] != tuple(image_size):
            raise DataError(f"{where} [{split} images]: expected {image_size[0]}x{image_size[1]} images, "
                            f"got {xi.shape[1]}x{xi.shape[2]}; resize them or pass image_size=None")
        xs.append(xi)
        ys.append(_as_labels(y, len(xi), num_classes, f"{where} [{split} labels]"))
    if xs[0].shape[1:] != xs[1].shape[1:]:
        raise DataError(f"{where}: train images are {xs[0].shape[1:]} but test images are {xs[1].shape[1:]}")
    train_classes, test_classes = set(np.unique(ys[0]).tolist()), set(np.unique(ys[1]).tolist())
    if train_classes != test_classes:
        raise DataError(
            f"{where}: train and test have different classes (only in train: "
            f"{sorted(train_classes - test_classes)}, only in test: {sorted(test_classes - train_classes)}); "
            "metrics per class would be meaningless: re-split the data stratified by class"
        )
    return xs[0], ys[0], xs[1], ys[1]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected_sha256(path: Path) -> str:
    sums = path.parent / "SHA256SUMS"
    if not sums.exists():
        raise DataError(f"{sums}: checksum file missing; restore it from git (git checkout -- data/)")
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == path.name:
            return parts[0]
    raise DataError(f"{sums}: no checksum listed for {path.name}")


def _require_file(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: {what} not found; {fix}")
    if not path.is_file():
        raise DataError(f"{path}: {what} is not a file")
    return path
