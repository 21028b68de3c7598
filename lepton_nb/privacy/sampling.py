"""Input pipelines whose sampling matches the accounting in :mod:`lepton_nb.privacy.accounting`.

- :func:`poisson_pipeline`: each step, every example joins the batch independently with
  probability ``q = B / N`` (batch sizes vary around B; a batch may even be empty). This is the
  sampling that DP-SGD's amplification theorem assumes (Abadi et al. 2016; Mironov et al. 2019).
  Padding batches to a fixed size or dropping short ones would break that assumption, so the
  fast path (:class:`lepton_nb.privacy.fast_clipping.FastDPModel`) accepts any batch size and
  normalises by the *expected* batch size B.
- :func:`shuffle_pipeline`: a fresh permutation each epoch cut into fixed batches of B, the last
  partial batch dropped (tensorflow-privacy's microbatching needs every batch divisible by the
  microbatch count). Accounted as one Gaussian step per example per epoch, without amplification.
"""

from __future__ import annotations

import numpy as np

from lepton_nb.privacy.accounting import PrivacyError, steps_per_epoch

__all__ = ["poisson_pipeline", "shuffle_pipeline"]


def poisson_pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int = 0):
    """An endless tf.data pipeline of Poisson-subsampled batches, sampled inside TensorFlow.

    Step k draws ``u ~ U(0, 1)^N`` with the stateless seed ``(seed, k)`` and takes the examples
    with ``u < q`` (so runs are reproducible and every step independent); the arrays enter the
    pipeline once (``from_tensors``) and batches are gathered from them, without Python in the
    loop.

    Args:
        x: images (N, H, W, C) float32 (any float dtype is kept).
        y: int labels (N,).
        batch_size: the expected batch size B (q = B / N).
        seed: seed of the sampling.

    Returns:
        ``(dataset, steps_per_epoch)``: a ``tf.data.Dataset`` of ``(images (b, H, W, C),
        labels (b,))`` with b ~ Binomial(N, q), and ``ceil(N / B)`` steps that make one epoch
        (pass it as ``steps_per_epoch`` to ``fit``; the dataset never ends, so epochs draw fresh
        batches).
    """
    import tensorflow as tf

    x = np.asarray(x)
    y = np.asarray(y, np.int64)
    if len(x) != len(y):
        raise PrivacyError(f"{len(x)} images but {len(y)} labels")
    n = len(x)
    if not 1 <= batch_size <= n:
        raise PrivacyError(f"batch_size={batch_size} is not in [1, {n}]: use a batch no larger than the data")
    q = batch_size / n

    def sample(step, arrays):
        xs, ys = arrays
        u = tf.random.stateless_uniform([n], seed=tf.stack([tf.cast(seed, tf.int64), step]), dtype=tf.float64)
        idx = tf.reshape(tf.where(u < q), [-1])
        return tf.gather(xs, idx), tf.gather(ys, idx)

    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    ds = tf.data.Dataset.zip((tf.data.Dataset.counter(), data)).map(sample, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE), steps_per_epoch(n, batch_size)


def shuffle_pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int = 0):
    """Fixed batches of a fresh permutation each epoch, last partial batch dropped.

    Returns:
        ``(dataset, steps_per_epoch)`` with ``floor(N / B)`` steps (one pass, ragged end dropped).
    """
    from lepton_nb.data import pipeline

    if not 1 <= batch_size <= len(x):
        raise PrivacyError(f"batch_size={batch_size} is not in [1, {len(x)}]: use a batch no larger than the data")
    ds = pipeline(x, y, batch_size=batch_size, shuffle=True, drop_remainder=True, seed=seed)
    return ds, len(x) // batch_size
