"""Mixed precision suited to the devices (Micikevicius et al. 2018, "Mixed Precision Training").

:func:`precision_policy` picks ``mixed_bfloat16`` on TPU, ``mixed_float16`` on GPU (Keras wraps
the optimizer in a ``LossScaleOptimizer`` when it compiles such a model) and ``float32`` on CPU;
:func:`precision_scope` sets it while models are built; :func:`float32_logits` keeps the output
layer in float32.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import tensorflow as tf

from lepton_nb.distributed.strategies import devices_of, kind_of

__all__ = ["float32_logits", "precision_policy", "precision_scope"]


def precision_policy(strat: tf.distribute.Strategy | None = None, *, kind: str | None = None) -> str:
    """The Keras mixed-precision policy suited to ``strat``'s devices.

    ``mixed_bfloat16`` on TPU (bfloat16 has float32's range, no loss scaling needed),
    ``mixed_float16`` on GPU (Keras adds dynamic loss scaling at compile), ``float32`` on CPU.
    """
    kind = kind or kind_of(strat or tf.distribute.get_strategy())
    if kind == "tpu":
        return "mixed_bfloat16"
    devices = " ".join(devices_of(strat or tf.distribute.get_strategy())).upper()
    if kind == "gpu" or ":GPU:" in devices:
        return "mixed_float16"
    if kind == "default" and tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "float32"


@contextlib.contextmanager
def precision_scope(policy: str | None) -> Iterator[str]:
    """Set Keras' global dtype policy while models are built inside, then restore the previous one.

    ``policy``: "float32", "mixed_float16", "mixed_bfloat16" (``None`` leaves the policy alone).
    """
    from tensorflow.keras import mixed_precision as mp

    allowed = ("float32", "mixed_float16", "mixed_bfloat16")
    if policy is not None and policy not in allowed:
        raise ValueError(f"mixed precision policy {policy!r}: choose one of {', '.join(allowed)}")
    previous = mp.global_policy()
    if policy is not None:
        mp.set_global_policy(policy)
    try:
        yield mp.global_policy().name
    finally:
        mp.set_global_policy(previous)


def float32_logits(model: tf.keras.Model) -> tf.keras.Model:
    """``model`` with float32 outputs: a float32 linear activation appended if the output is not float32.

    Softmax / cross-entropy in float16 overflow easily; the Keras mixed-precision guide keeps the
    last layer in float32. Input (B, ...), output (B, classes) float32 logits.
    """
    if model.output.dtype == tf.float32:
        return model
    out = tf.keras.layers.Activation("linear", dtype="float32", name="logits_float32")(model.output)
    return tf.keras.Model(model.inputs, out, name=model.name)
