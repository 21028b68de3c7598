"""The stock path: tensorflow-privacy 0.9.0's DP-Keras optimizers, with their traps handled up front.

``DPKerasAdamOptimizer`` / ``DPKerasSGDOptimizer`` (Abadi et al. 2016) compute the Jacobian of the
per-microbatch losses and clip each microbatch's gradient in a ``while_loop``: correct, but each
step costs about one backward pass per microbatch instead of one per batch, so with one example per
microbatch a step is tens of times slower than a plain Keras step (``benchmarks/bench_dp.py``
measures the ratio on your machine). Their traps:

- the loss must be per example (``reduction=NONE``); a reduced loss silently trains with one
  microbatch, i.e. without per-example clipping;
- every batch must be divisible by ``num_microbatches``: a ragged last batch crashes deep inside
  with "Input to reshape is a tensor with 48 values, but the requested shape requires a multiple
  of 64". :func:`check_batches` refuses such settings before training and the shuffle pipeline
  drops the ragged end;
- the noisy sum is divided by ``num_microbatches`` (the realised batch), which is why the stock
  path is used with fixed batches ("shuffle" sampling) only;
- the Jacobian runs every microbatch's loss back through the whole batch, so memory grows with
  batch x microbatches x activations, i.e. with the batch squared at one example per microbatch
  (for the DP CNN at batch 256, :func:`stock_memory_bytes` estimates about 16 GB): settings that
  need more than the machine has get the kernel OOM-killed mid-epoch. :func:`check_stock_memory`
  refuses them before training.
"""

from __future__ import annotations

import math
import os

import tensorflow as tf

from lepton_nb.privacy.accounting import PrivacyError

__all__ = ["check_batches", "check_stock_memory", "make_stock_optimizer", "stock_memory_bytes"]


def check_batches(num_examples: int, batch_size: int, num_microbatches: int | None) -> int:
    """The microbatch count to use; raises before training when batches cannot be split.

    Returns:
        ``num_microbatches`` (``batch_size`` when ``None``: one example per microbatch).
    """
    if not 1 <= batch_size <= num_examples:
        raise PrivacyError(f"batch_size={batch_size} is not in [1, {num_examples}]: use a batch no larger than "
                           "the data")
    mb = batch_size if num_microbatches is None else num_microbatches
    if mb < 1 or batch_size % mb:
        raise PrivacyError(f"batch_size={batch_size} is not divisible by num_microbatches={mb}: tensorflow-privacy "
                           "reshapes every batch into microbatches and would crash mid-training; choose a divisor "
                           "(or None for one example per microbatch)")
    return mb


def stock_memory_bytes(model: tf.keras.Model, batch_size: int, num_microbatches: int) -> int:
    """Estimated peak memory of one stock step: float32 activations of every layer, per example,
    x batch x microbatches (the Jacobian's parallel-for keeps one copy of the batch's activations
    per microbatch). A lower bound of what TensorFlow allocates: gradients and temporaries come on
    top, so treat it as the order of magnitude (the DP CNN: 62,762 activations per example, about
    16.5 GB at batch 256 x 256 microbatches)."""
    per_example = 0
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.InputLayer):
            continue
        shapes = layer.output_shape if isinstance(layer.output_shape, list) else [layer.output_shape]
        per_example += sum(math.prod(int(d) for d in shape[1:]) for shape in shapes)
    return 4 * per_example * int(batch_size) * int(num_microbatches)


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_stock_memory(model: tf.keras.Model, batch_size: int, num_microbatches: int, *,
                       available_bytes: int | None = None) -> int:
    """Raise :class:`PrivacyError` before training when the stock path would need more than 80 % of
    the available memory (``available_bytes``, default: the machine's available memory now).

    Returns:
        The estimate in bytes (:func:`stock_memory_bytes`).
    """
    need = stock_memory_bytes(model, batch_size, num_microbatches)
    have = _available_bytes() if available_bytes is None else available_bytes
    if have is not None and need > 0.8 * have:
        raise PrivacyError(
            f"the stock path at batch {batch_size} with {num_microbatches} microbatches needs about {need / 1e9:.1f} GB "
            f"(tensorflow-privacy's Jacobian runs each microbatch's loss through the whole batch), {have / 1e9:.1f} GB "
            "are available: use path='fast' (no such cost), a smaller batch, or fewer microbatches")
    return need


def make_stock_optimizer(*, l2_norm_clip: float, noise_multiplier: float, num_microbatches: int,
                         learning_rate: float, optimizer: str = "adam") -> tf.keras.optimizers.Optimizer:
    """``DPKerasAdamOptimizer`` (or ``DPKerasSGDOptimizer`` with momentum 0.9 for "sgd")."""
    from tensorflow_privacy import DPKerasAdamOptimizer, DPKerasSGDOptimizer

    if not l2_norm_clip > 0:
        raise PrivacyError(f"l2_norm_clip={l2_norm_clip}: must be > 0")
    if not noise_multiplier >= 0:
        raise PrivacyError(f"noise_multiplier={noise_multiplier}: must be >= 0")
    kwargs = dict(l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier, num_microbatches=num_microbatches,
                  learning_rate=learning_rate)
    if optimizer == "sgd":
        return DPKerasSGDOptimizer(momentum=0.9, **kwargs)
    return DPKerasAdamOptimizer(**kwargs)
