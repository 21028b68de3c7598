"""Augmentation layers Keras lacks: whole-pixel random shifts with zero fill (:class:`RandomPixelShift`).

Keras' ``RandomTranslation`` resamples bilinearly; a shift by whole pixels only moves pixels, so it
keeps the image's values and costs two gathers. Used by :func:`lepton_nb.data.augmenter` for
``Augmentation.shift_pixels``.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["RandomPixelShift", "shift_images"]


def shift_images(x: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """Images (B, H, W, C) shifted by (dy, dx) whole pixels each (ints (B,) in [-max_pixels, max_pixels]),
    the uncovered border zero: output pixel (i, j) is input pixel (i - dy, j - dx), or 0 outside."""
    h, w = x.shape[1], x.shape[2]
    p = max_pixels
    padded = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
    rows = (p - dy)[:, None] + tf.range(h)[None]  # (B, H) rows of the padded image
    cols = (p - dx)[:, None] + tf.range(w)[None]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)  # (B, H, W + 2p, C)
    return tf.gather(out, cols, axis=2, batch_dims=1)


class RandomPixelShift(tf.keras.layers.Layer):
    """Shift each image by a random whole number of pixels in ``-max_pixels .. max_pixels`` on each
    axis (uniform, independent per image and axis), zero fill; the identity outside training."""

    def __init__(self, max_pixels: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if int(max_pixels) < 0:
            raise ValueError(f"max_pixels={max_pixels}: use a whole number of pixels >= 0")
        self.max_pixels, self.seed = int(max_pixels), seed

    def call(self, inputs, training=True):
        if not training or not self.max_pixels:
            return inputs
        b = tf.shape(inputs)[0]
        d = tf.random.uniform([2, b], -self.max_pixels, self.max_pixels + 1, dtype=tf.int32, seed=self.seed)
        return shift_images(inputs, d[0], d[1], self.max_pixels)

    def get_config(self) -> dict:
        return {**super().get_config(), "max_pixels": self.max_pixels, "seed": self.seed}
