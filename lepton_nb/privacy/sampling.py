"""Input pipelines whose sampling matches the accounting in :mod:`lepton_nb.privacy.accounting`.

- :func:`poisson_pipeline`: each step, every example joins the batch independently with
  probability ``q = B / N`` (batch sizes vary around B; a batch may even be empty). This is the
  sampling that DP-SGD's amplification theorem assumes (Abadi et al. 2016; Mironov et al. 2019).
  Padding batches to a fixed size or dropping short ones would break that assumption, so the
  fast path (:class:`lepton_nb.privacy.fast_clipping.FastDPModel`) accepts any batch size and
  normalises by the *expected* batch size B.
- :func:`shuffle_pipeline`: a fresh, uniformly random permutation each epoch (a shuffle buffer of
  the whole training set), cut into fixed batches of B, the last partial batch dropped
  (tensorflow-privacy's microbatching needs every batch divisible by the microbatch count).
  Accounted as one Gaussian mechanism per epoch under the zero-out neighbouring relation, without
  amplification (:mod:`lepton_nb.privacy.accounting` says why that bound holds for any order).

Private by default: without a ``seed`` both pipelines draw their randomness from fresh OS entropy
(:func:`os_entropy_seed`), so nobody can regenerate the batches from the code. A seed makes the
batches reproducible, and then they are not secret: :func:`lepton_nb.privacy.train_dp` passes one
only when ``DPSGDConfig(reproducible=True)`` asks for it.
"""

from __future__ import annotations

import numpy as np

from lepton_nb.privacy.accounting import PrivacyError, steps_per_epoch

__all__ = ["os_entropy_seed", "poisson_pipeline", "shuffle_pipeline"]


def os_entropy_seed() -> int:
    """A fresh 63-bit seed from the operating system's entropy (``os.urandom``), never repeated by a rerun."""
    import os

    return int.from_bytes(os.urandom(8), "little") >> 1


def poisson_pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int | None = None):
    """An endless tf.data pipeline of Poisson-subsampled batches, sampled inside TensorFlow.

    Step k draws ``u ~ U(0, 1)^N`` with the stateless seed ``(seed, k)`` and takes the examples
    with ``u < q`` (every step independent); the arrays enter the pipeline once (``from_tensors``)
    and batches are gathered from them, without Python in the loop. The generator (Philox) is
    keyed by the 63-bit seed; it is not a cryptographic generator.

    Args:
        x: images (N, H, W, C) float32 (any float dtype is kept).
        y: int labels (N,).
        batch_size: the expected batch size B (q = B / N).
        seed: seed of the sampling; ``None`` (default, private) draws one from OS entropy
            (:func:`os_entropy_seed`); an int makes the batches reproducible and public.

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
    seed = os_entropy_seed() if seed is None else int(seed)

    def sample(step, arrays):
        xs, ys = arrays
        u = tf.random.stateless_uniform([n], seed=tf.stack([tf.cast(seed, tf.int64), step]), dtype=tf.float64)
        idx = tf.reshape(tf.where(u < q), [-1])
        return tf.gather(xs, idx), tf.gather(ys, idx)

    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    ds = tf.data.Dataset.zip((tf.data.Dataset.counter(), data)).map(sample, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE), steps_per_epoch(n, batch_size)


def shuffle_pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int | None = None):
    """Fixed batches of a fresh, uniformly random permutation each epoch, last partial batch dropped.

    The shuffle buffer holds the whole training set (tf.data's buffer shuffle is a uniform
    permutation only when the buffer is at least N; lepton_nb's general pipeline caps it at
    10,000), at the memory of one copy of ``x``. Each pass over the dataset (use ``.repeat()``)
    draws a new permutation.

    Args:
        seed: seed of the permutations; ``None`` (default) draws one from OS entropy. (tf.data
            keeps 31 bits of an op seed; the shuffle's epsilon needs neither the randomness nor
            the secrecy of the order, see :mod:`lepton_nb.privacy.accounting`.)

    Returns:
        ``(dataset, steps_per_epoch)`` with ``floor(N / B)`` steps (one pass, ragged end dropped).
    """
    from lepton_nb.data import pipeline

    if not 1 <= batch_size <= len(x):
        raise PrivacyError(f"batch_size={batch_size} is not in [1, {len(x)}]: use a batch no larger than the data")
    seed = os_entropy_seed() if seed is None else int(seed)
    ds = pipeline(x, y, batch_size=batch_size, shuffle=True, drop_remainder=True, seed=seed, shuffle_buffer=len(x))
    return ds, len(x) // batch_size
