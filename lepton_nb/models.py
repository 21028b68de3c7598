"""Model builders: the seed MLP (2x128), the seed CNN, a configurable CNN family, and the linear
model on ScatterNet features that DP-SGD trains best here (:func:`build_scatter_linear`).

Every model here outputs **logits** (no softmax): train with
``SparseCategoricalCrossentropy(from_logits=True)`` (as :mod:`lepton_nb.training` does) and use
:func:`probabilities` for class probabilities. Layers have stable names (``conv_<block>_<i>``,
``norm_<block>_<i>``, ``pool_<block>``, ``hidden``, ``logits``) so later code finds the last
convolution by name (:func:`last_conv_layer`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from lepton_nb.settings import CNNConfig

__all__ = ["build_cnn", "build_mlp", "build_scatter_linear", "build_seed_cnn", "count_params", "flip_averaged",
           "last_conv_layer", "probabilities"]


def build_mlp(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    *,
    hidden: Sequence[int] = (128, 128),
    activation: str = "relu",
    dropout: float = 0.0,
    name: str = "mlp",
) -> tf.keras.Model:
    """The seed article's MLP: Flatten, Dense(128) x 2, Dense(num_classes) logits.

    Input (B, H, W, C) float32 in [0, 1]; output (B, num_classes) logits.
    """
    inputs = tf.keras.Input(shape=tuple(input_shape), name="image")
    h = tf.keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden):
        h = tf.keras.layers.Dense(units, activation=activation, name=f"dense_{i}")(h)
        if dropout:
            h = tf.keras.layers.Dropout(dropout, name=f"dropout_{i}")(h)
    outputs = tf.keras.layers.Dense(num_classes, name="logits")(h)
    return tf.keras.Model(inputs, outputs, name=name)


def _norm_layer(kind: str, channels: int, name: str) -> tf.keras.layers.Layer | None:
    if kind == "batch":
        return tf.keras.layers.BatchNormalization(name=name)
    if kind == "group":  # groups of up to 8 channels; per-example, so DP-compatible
        return tf.keras.layers.GroupNormalization(groups=min(8, channels), name=name)
    return None


def build_cnn(
    config: CNNConfig | None = None,
    *,
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    name: str | None = None,
    **overrides,
) -> tf.keras.Model:
    """A member of the CNN family; ``build_cnn()`` is the seed CNN.

    Blocks of ``convs_per_block`` x [Conv2D 3x3 same, optional norm, activation] then MaxPool 2x2,
    filters doubling per block; then Flatten, optional Dropout, Dense(dense_units), Dense logits.

    Args:
        config: the architecture; fields can also be given as keyword ``overrides``
            (``build_cnn(depth=2, norm="group")``).

    Returns:
        A functional Keras model, input (B, H, W, C), output (B, num_classes) logits.
    """
    from dataclasses import replace

    cfg = replace(config or CNNConfig(), **overrides)
    inputs = tf.keras.Input(shape=tuple(input_shape), name="image")
    h = inputs
    for block in range(cfg.depth):
        filters = cfg.filters * 2**block
        for i in range(cfg.convs_per_block):
            h = tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=cfg.norm == "none",
                                       name=f"conv_{block}_{i}")(h)
            norm = _norm_layer(cfg.norm, filters, f"norm_{block}_{i}")
            if norm is not None:
                h = norm(h)
            h = tf.keras.layers.Activation(cfg.activation, name=f"act_{block}_{i}")(h)
        h = tf.keras.layers.MaxPooling2D(2, name=f"pool_{block}")(h)
    h = tf.keras.layers.Flatten(name="flatten")(h)
    if cfg.dropout:
        h = tf.keras.layers.Dropout(cfg.dropout, name="dropout")(h)
    if cfg.dense_units:
        h = tf.keras.layers.Dense(cfg.dense_units, activation=cfg.activation, name="hidden")(h)
    outputs = tf.keras.layers.Dense(num_classes, name="logits")(h)
    return tf.keras.Model(inputs, outputs, name=name or cfg.label)


def build_seed_cnn(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10) -> tf.keras.Model:
    """The seed article's CNN: Conv2D(32, 3x3, ReLU), MaxPool 2x2, Flatten, Dense(128, ReLU), logits."""
    return build_cnn(CNNConfig(), input_shape=input_shape, num_classes=num_classes, name="seed_cnn")


def build_scatter_linear(feature_shape: Sequence[int] = (7, 7, 81), num_classes: int = 10, *, groups: int = 27,
                         center: np.ndarray | None = None, name: str = "scatter_linear") -> tf.keras.Model:
    """A linear classifier on ScatterNet features with per-example GroupNorm (Tramer & Boneh 2021).

    Input (B, H', W', K) features (:func:`lepton_nb.features.scatter_dataset`); GroupNormalization
    over ``groups`` groups of K / groups channels, without scale or offset (each example normalized
    by its own statistics: nothing is learnt from the data, so it costs no privacy and needs no
    per-example gradient); Flatten; minus ``center`` if given (a fixed (H' * W' * K,) vector, e.g.
    the DP mean of the normalized features, :func:`lepton_nb.privacy.scatter.private_feature_mean`);
    Dense(num_classes) logits, weights and bias initialised to zero. With J=2, L=8 features of
    28x28 images: 3,969 inputs, 39,700 parameters.

    Raises:
        ValueError: K not divisible by ``groups``, or ``center`` of the wrong size.
    """
    channels = int(feature_shape[-1])
    if groups < 1 or channels % groups:
        raise ValueError(f"groups={groups}: the {channels} feature channels must split into equal groups "
                         f"(choose a divisor of {channels}, e.g. 27 for 81 channels)")
    inputs = tf.keras.Input(shape=tuple(feature_shape), name="features")
    h = tf.keras.layers.GroupNormalization(groups=groups, axis=-1, center=False, scale=False, epsilon=1e-5,
                                           name="groupnorm")(inputs)
    h = tf.keras.layers.Flatten(name="flatten")(h)
    if center is not None:
        center = np.asarray(center, dtype=np.float32).reshape(-1)
        if center.size != h.shape[-1]:
            raise ValueError(f"center has {center.size} values for {h.shape[-1]} normalized features "
                             f"({tuple(feature_shape)}): compute it on features of this shape")
        h = tf.keras.layers.Normalization(mean=center, variance=np.ones_like(center), name="center")(h)
    outputs = tf.keras.layers.Dense(num_classes, kernel_initializer="zeros", bias_initializer="zeros",
                                    name="logits")(h)
    return tf.keras.Model(inputs, outputs, name=name)


def flip_averaged(model: tf.keras.Model) -> tf.keras.Model:
    """``model`` scored on the mean of its logits for each image and its left-right mirror.

    Test-time augmentation (Krizhevsky et al. 2012 averaged the predictions of reflected crops):
    (B, H, W, C) images -> (B, K) logits, sharing ``model``'s weights. Meaningful only for
    mirror-invariant images (``Dataset.horizontal_flip_ok``) and a model trained with flips.
    """
    inputs = tf.keras.Input(shape=model.input_shape[1:], name="images")
    mirrored = tf.keras.layers.Lambda(lambda x: tf.reverse(x, axis=[2]), name="mirror")(inputs)
    outputs = tf.keras.layers.Average(name="mean_logits")([model(inputs), model(mirrored)])
    return tf.keras.Model(inputs, outputs, name=f"{model.name}_flip_averaged")


def last_conv_layer(model: tf.keras.Model) -> tf.keras.layers.Layer:
    """The last Conv2D layer of ``model``, searching nested models too."""
    found = None
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            try:
                found = last_conv_layer(layer)
            except ValueError:
                pass
        elif isinstance(layer, tf.keras.layers.Conv2D):
            found = layer
    if found is None:
        raise ValueError(f"model {model.name!r} has no Conv2D layer")
    return found


def count_params(model: tf.keras.Model) -> int:
    """Trainable parameters."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def probabilities(model: tf.keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Softmax of the model's logits, shape (N, num_classes)."""
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return tf.nn.softmax(logits, axis=-1).numpy()
