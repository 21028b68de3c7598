"""Shared plumbing of the explanation methods: input checks, target classes, layer lookup and the
compiled forward functions (features and logits of any layer, also inside nested models).

Everything here works on models that output **logits** (every model of :mod:`lepton_nb.models`).
Compiled functions are cached per model (weakly, so a dropped model frees its cache) and per
layer, and trace once for any batch size (``reduce_retracing``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "as_batch",
    "compiled",
    "conv_layer_names",
    "default_layer",
    "feature_fn",
    "find_layer",
    "input_spec",
    "predict_logits",
    "reduce_channels",
    "resolve_targets",
    "softmax",
]

_CACHE: "weakref.WeakKeyDictionary[tf.keras.Model, dict]" = weakref.WeakKeyDictionary()
_SPATIAL_FOLLOWERS = (tf.keras.layers.BatchNormalization, tf.keras.layers.GroupNormalization,
                      tf.keras.layers.LayerNormalization, tf.keras.layers.Activation, tf.keras.layers.ReLU,
                      tf.keras.layers.LeakyReLU, tf.keras.layers.ELU)


def _check_model(model) -> None:
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"expected a tf.keras.Model, got {type(model).__name__}; build one with lepton_nb.models")
    if not model.built or not model.inputs:
        raise ValueError(f"model {model.name!r} has no defined input yet; build it with an Input layer "
                         "(every lepton_nb.models builder does) or call it once on a batch")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "explanations need one input and one logits output")


def as_batch(model: tf.keras.Model, inputs) -> np.ndarray:
    """Check ``inputs`` against ``model`` and return a float32 batch of its input shape.

    Accepts (N, *input_shape); for a one-channel image model also (N, H, W); and one example of
    exactly ``input_shape`` (returned as a batch of one).

    Raises:
        ValueError: empty input, wrong shape, or NaN/infinite values (before any model call).
    """
    _check_model(model)
    expected = tuple(model.input_shape[1:])
    x = np.asarray(inputs)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"inputs must be a numeric array, got dtype {x.dtype}")
    if x.shape == expected:
        x = x[None]
    elif len(expected) == 3 and expected[-1] == 1 and x.ndim == 3 and x.shape[1:] == expected[:2]:
        x = x[..., None]
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"inputs of shape {np.shape(inputs)} do not fit model {model.name!r}, which expects "
                         f"(N, {', '.join(map(str, expected))}); reshape them (e.g. x[..., None] for a channel axis)")
    if x.shape[0] == 0:
        raise ValueError("inputs hold no examples (N = 0); pass at least one")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"inputs contain {int(x.size - np.isfinite(x).sum())} NaN or infinite values; clean them first")
    return x


def _cache(model: tf.keras.Model) -> dict:
    try:
        return _CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no caching
        return {}


class _RetracingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_retracing():
    """Hide TensorFlow's retracing warning: it counts our one-trace-per-model functions (made for
    every new model, e.g. each randomized copy) as if one function were retraced in a loop."""
    logger, flt = tf.get_logger(), _RetracingFilter()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


def compiled(model: tf.keras.Model, key, build: Callable[[], Callable]) -> Callable:
    """The function ``build()`` returns, made once per ``(model, key)`` and cached.

    Each compiled function has a fixed input signature (any batch size), so it traces once.
    """
    cache = _cache(model)
    if key not in cache:
        fn = build()

        @functools.wraps(fn)
        def call(*args):
            with _quiet_retracing():
                return fn(*args)

        cache[key] = call
    return cache[key]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, numerically stable."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def input_spec(model: tf.keras.Model) -> tf.TensorSpec:
    """A float32 spec (None, *input_shape): compiled functions trace once for any batch size."""
    return tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)


TARGETS_SPEC = tf.TensorSpec((None,), tf.int32)


def predict_logits(model: tf.keras.Model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits (N, K) in inference mode, batched, through one compiled function per model."""
    fn = compiled(model, "logits", lambda: tf.function(lambda a: model(a, training=False),
                                                       input_signature=[input_spec(model)]))
    return np.concatenate([fn(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)])


def resolve_targets(model: tf.keras.Model, x: np.ndarray, class_index, *, logits: np.ndarray | None = None
                    ) -> np.ndarray:
    """Target class per example, shape (N,) int32.

    Args:
        class_index: ``None`` for the predicted class, an int for one class for all, or a sequence
            of N ints (e.g. the true labels).
    """
    n = len(x)
    k = int(model.output_shape[-1])
    if class_index is None:
        logits = predict_logits(model, x) if logits is None else logits
        return np.asarray(logits).argmax(axis=1).astype(np.int32)
    t = np.asarray(class_index)
    if t.ndim == 0:
        t = np.full(n, int(t))
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"class_index must be None, an int or {n} ints (one per example), got shape {t.shape} "
                         f"dtype {t.dtype}")
    if t.min() < 0 or t.max() >= k:
        raise ValueError(f"class_index values must lie in 0..{k - 1} (the model has {k} outputs), "
                         f"got {int(t.min())}..{int(t.max())}")
    return t.astype(np.int32)


def reduce_channels(a: np.ndarray) -> np.ndarray:
    """Sum image attributions over channels: (N, H, W, C) -> (N, H, W); other shapes unchanged."""
    return a.sum(axis=-1) if a.ndim == 4 else a


# ------------------------------------------------------------------------------------- layers


def _iter_layers(model: tf.keras.Model, prefix: tuple = ()):
    for layer in model.layers:
        yield prefix, layer
        if isinstance(layer, tf.keras.Model):
            yield from _iter_layers(layer, prefix + (layer,))


def find_layer(model: tf.keras.Model, name: str) -> tuple[tuple[tf.keras.Model, ...], tf.keras.layers.Layer]:
    """The layer called ``name`` and the chain of nested models holding it (empty when top-level).

    Raises:
        ValueError: no such layer; the message lists the layers with spatial (4-D) outputs.
    """
    for prefix, layer in _iter_layers(model):
        if layer.name == name:
            return prefix, layer
    raise ValueError(f"model {model.name!r} has no layer named {name!r}; layers with feature maps: "
                     f"{conv_layer_names(model)}")


def conv_layer_names(model: tf.keras.Model) -> list[str]:
    """Names of the layers with 4-D (N, h, w, c) outputs, nested models included, in order."""
    names = []
    for _, layer in _iter_layers(model):
        if isinstance(layer, (tf.keras.Model, tf.keras.layers.InputLayer)):
            continue
        try:
            shape = layer.output_shape
        except (AttributeError, RuntimeError):
            continue
        if isinstance(shape, tuple) and len(shape) == 4:
            names.append(layer.name)
    return names


def default_layer(model: tf.keras.Model) -> str:
    """The Grad-CAM layer: the rectified output of the last convolution.

    :func:`lepton_nb.models.last_conv_layer` finds the last Conv2D (nested models included); when
    normalization and activation layers follow it directly (``conv_b_i -> norm_b_i -> act_b_i``
    in :mod:`lepton_nb.models`), the last of them is used, because Grad-CAM weighs the rectified
    feature maps of the last convolution (Selvaraju et al. 2017, section 3).
    """
    from lepton_nb.models import last_conv_layer

    try:
        conv = last_conv_layer(model)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no Conv2D layer, so Grad-CAM has no feature maps to weigh; "
                         "use a gradient method (vanilla_gradients, integrated_gradients) instead") from None
    prefix, _ = find_layer(model, conv.name)
    holder = prefix[-1] if prefix else model
    layers = list(holder.layers)
    chosen = conv
    for layer in layers[layers.index(conv) + 1:]:
        if isinstance(layer, _SPATIAL_FOLLOWERS) and _single_input(layer) is chosen:
            chosen = layer
        else:
            break
    return chosen.name


def _single_input(layer):
    try:
        return layer.input._keras_history.layer
    except AttributeError:
        return None


def _top_level_split(model: tf.keras.Model, layer: tf.keras.layers.Layer):
    sub = tf.keras.Model(model.inputs, [layer.output, model.output])
    return lambda x: sub(x, training=False)


def _nested_split(model: tf.keras.Model, prefix: Sequence[tf.keras.Model], layer):
    inner_model = prefix[0]
    inner = _top_level_split(inner_model, layer) if len(prefix) == 1 else _nested_split(inner_model, prefix[1:], layer)
    chain = [l for l in model.layers if not isinstance(l, tf.keras.layers.InputLayer)]

    def run(x):
        h, feats = x, None
        for l in chain:
            if l is inner_model:
                feats, h = inner(h)
            else:
                h = l(h, training=False)
        return feats, h

    return run


def feature_fn(model: tf.keras.Model, layer_name: str) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """A function ``x -> (features of layer_name, logits)`` for batches ``x`` (eager or traced).

    A top-level layer is read as tf-explain does (a two-output functional model). A layer inside
    a nested model (e.g. a backbone) is reached by replaying the outer model as a chain of layers
    with the nested model split in two; that replay is checked against ``model`` itself on a
    probe batch, and a model that is not such a chain raises a clear error.
    """
    _check_model(model)
    prefix, layer = find_layer(model, layer_name)
    if not prefix:
        return _top_level_split(model, layer)
    fn = _nested_split(model, prefix, layer)
    probe = tf.random.stateless_uniform((2, *model.input_shape[1:]), seed=(0, 1))
    try:
        _, replay = fn(probe)
        same = np.allclose(replay.numpy(), model(probe, training=False).numpy(), atol=1e-4)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError):
        same = False
    if not same:
        raise ValueError(f"layer {layer_name!r} sits in nested model {prefix[0].name!r}, but {model.name!r} is not a "
                         "simple chain of layers around it, so its features cannot be read; pass the nested model "
                         "itself, or a layer of the outer model (see conv_layer_names(model))")
    return fn
