"""tf.data pipelines and augmentation of training batches.

:func:`pipeline` feeds training and evaluation; :func:`epoch_indexed_pipeline` gives every epoch
its own fixed order so that a resumed run sees the batches of an uninterrupted one;
:func:`augmentation_for` adapts an augmentation to a data set and :func:`augmented_examples`
shows what it does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from lepton_nb.settings import Augmentation

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from lepton_nb.data.loading import Dataset

__all__ = ["augmentation_for", "augmented_examples", "augmenter", "epoch_indexed_pipeline", "pipeline"]


def augmenter(aug: Augmentation, seed: int = 0) -> "tf.keras.Sequential":
    """Keras preprocessing layers for ``aug``: optional left-right flip, rotation, bilinear shift
    (``aug.shift``) or whole-pixel shift with zero fill (``aug.shift_pixels``,
    :class:`lepton_nb.data.augment.RandomPixelShift`)."""
    import tensorflow as tf

    layers = []
    if aug.horizontal_flip:
        layers.append(tf.keras.layers.RandomFlip("horizontal", seed=seed))
    if aug.rotation:
        layers.append(tf.keras.layers.RandomRotation(aug.rotation, fill_mode="constant", seed=seed + 1))
    if aug.shift:
        layers.append(tf.keras.layers.RandomTranslation(aug.shift, aug.shift, fill_mode="constant", seed=seed + 2))
    if aug.shift_pixels:
        from lepton_nb.data.augment import RandomPixelShift

        layers.append(RandomPixelShift(aug.shift_pixels, seed=seed + 3, name="pixel_shift"))
    return tf.keras.Sequential(layers, name="augment")


def pipeline(
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    batch_size: int = 64,
    shuffle: bool = True,
    augment: Augmentation | None = None,
    drop_remainder: bool = False,
    cache: bool = True,
    repeat: bool = False,
    seed: int = 0,
    shuffle_buffer: int | None = None,
) -> "tf.data.Dataset":
    """A tf.data pipeline: (cache) -> shuffle -> batch -> augment -> prefetch.

    Args:
        x: images, uint8 (scaled to [0, 1] here) or float32 in [0, 1], shape (N, H, W, C).
        y: int labels (N,), or ``None`` for an images-only pipeline.
        drop_remainder: drop the last partial batch (needed where every batch must have the
            same size, e.g. DP microbatches or TPUs).
        repeat: repeat forever (then pass ``steps_per_epoch`` to Keras).
        shuffle_buffer: tf.data's shuffle buffer; ``None``: ``min(N, 10_000)``, a uniformly random
            order only when N <= 10,000 (above, examples move about a buffer's length). ``N`` gives
            a uniformly random permutation each pass, at the memory of a copy of the data.

    Returns:
        A dataset of ``(images, labels)`` batches (or images), images float32 (B, H, W, C).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: use a positive batch size")
    if drop_remainder and batch_size > len(x):
        raise ValueError(f"batch_size={batch_size} with drop_remainder=True leaves no batch of the {len(x)} examples")
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, np.asarray(y, np.int64)))
    if x.dtype == np.uint8:
        scale = lambda img: tf.cast(img, tf.float32) / 255.0  # noqa: E731
        ds = ds.map(scale if y is None else (lambda a, b: (scale(a), b)), num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle:
        buffer = min(len(x), 10_000) if shuffle_buffer is None else shuffle_buffer
        if buffer < 1:
            raise ValueError(f"shuffle_buffer={shuffle_buffer}: use a positive buffer (N for a full permutation)")
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        layer = augmenter(augment, seed)
        if y is None:
            ds = ds.map(lambda a: layer(a, training=True), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(lambda a, b: (layer(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def epoch_indexed_pipeline(x: np.ndarray, y: np.ndarray, *, batch_size: int, epochs: int, start_epoch: int = 0,
                           seed: int = 0, augment: Augmentation | None = None,
                           drop_remainder: bool = False) -> tf.data.Dataset:
    """Epochs ``start_epoch .. epochs-1`` back to back, epoch ``e`` in its own fixed order.

    Epoch ``e`` is shuffled with the op seed ``seed * 1_000_003 + e`` (and the global seed that
    :func:`lepton_nb.training.set_seed` sets, as training does). Unlike ``shuffle(reshuffle_each_iteration=True)``, whose order depends on how many epochs the
    process has already iterated, epoch ``e`` here is the same permutation in a fresh process, so a
    run resumed at epoch ``e`` sees exactly the batches an uninterrupted run would. Every epoch
    yields ``ceil(N / batch_size)`` batches (``floor`` with ``drop_remainder``) of
    ``(images (B, H, W, C) float32, labels (B,) int64)``.
    """
    import tensorflow as tf

    if not 0 <= start_epoch < epochs:
        raise ValueError(f"start_epoch={start_epoch} outside 0..{epochs - 1}")
    base = tf.data.Dataset.from_tensor_slices((np.asarray(x, np.float32), np.asarray(y, np.int64)))
    n = len(x)
    ds = None
    for e in range(start_epoch, epochs):  # one fixed permutation per epoch, chained
        epoch_ds = base.shuffle(n, seed=seed * 1_000_003 + e, reshuffle_each_iteration=False).batch(
            batch_size, drop_remainder=drop_remainder)
        ds = epoch_ds if ds is None else ds.concatenate(epoch_ds)
    if augment is not None:
        layer = augmenter(augment, seed)
        ds = ds.map(lambda a, b: (layer(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def augmentation_for(ds: "Dataset", aug: Augmentation | None) -> tuple[Augmentation | None, str]:
    """``aug`` adapted to ``ds``, and one sentence saying why.

    A left-right flip is kept only where mirrored images keep their class
    (``ds.horizontal_flip_ok``: clothing, histology, blood cells, skin lesions); for
    laterality-bearing images such as chest X-rays or organ slices it is dropped.
    """
    if aug is None:
        return None, "no augmentation"
    parts = []
    if aug.rotation:
        parts.append(f"rotations up to {aug.rotation * 360:.0f} degrees")
    if aug.shift:
        parts.append(f"shifts up to {aug.shift * 100:.0f} % of the side")
    if aug.shift_pixels:
        parts.append(f"shifts by up to {aug.shift_pixels} whole pixels (zero fill)")
    if aug.horizontal_flip and not ds.horizontal_flip_ok:
        aug = replace(aug, horizontal_flip=False)
        return aug, (", ".join(parts) or "none") + f"; no left-right flip: {ds.name} images are not mirror-invariant"
    if aug.horizontal_flip:
        parts.append("left-right flips")
    return aug, ", ".join(parts) + (f" ({ds.name} classes are mirror-invariant)" if aug.horizontal_flip else "")


def augmented_examples(ds: "Dataset", aug: Augmentation, *, per_class: int = 4, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` training images of each class passed through the training augmentation.

    Uses :func:`lepton_nb.data.pipeline` exactly as training does (same layers, same seed rule).

    Returns:
        ``(images (N, H, W, C) float32, labels (N,))`` with ``N = per_class * num_classes`` (fewer
        for a class with fewer images).
    """
    rng = np.random.default_rng(seed)
    picks = np.concatenate([rng.choice(np.flatnonzero(ds.y_train == c), min(per_class, int((ds.y_train == c).sum())),
                                       replace=False) for c in range(ds.num_classes)])
    batches = pipeline(ds.x_train[picks], ds.y_train[picks], batch_size=len(picks), shuffle=False, augment=aug,
                       cache=False, seed=seed)
    x, y = next(iter(batches))
    return x.numpy(), y.numpy()
