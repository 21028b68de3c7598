"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV) and HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of
Grad-CAM for faithful explanations of convolutional neural networks"), batched, as heatmaps.

HiResCAM multiplies the feature maps by their gradients element-wise and sums over channels,
instead of weighting each channel by its spatially averaged gradient. On a Flatten + Dense head
(every lepton_nb CNN), Grad-CAM's averaged weights spread a channel's evidence over every position
where it is active, including constant ReLU(bias) responses on empty background; HiResCAM keeps the
position-specific gradient, so a position is hot only where the logit depends on it (for the
linear part of the head, HiResCAM summed over positions is the layer's first-order contribution to
the logit). Neither tf-explain nor Xplique has it.

Built on tf-explain 0.3.1's computation where it is right, fixed around it where it is not:

- weighting: tf-explain's ``GradCAM.ponderate_output`` (spatial mean of the gradients as channel
  weights, weighted sum of the feature maps), vectorized over the batch;
- guided gradients: tf-explain's rule (keep gradients where both the feature map and the gradient
  are positive), but only on request (``guided=True``): tf-explain turns it on by default, the
  paper does not use it;
- the gradient step is our own, because tf-explain's ``get_gradients_and_filters`` takes one class
  for the whole batch, rebuilds a Keras model on every call and cannot reach layers inside nested
  models; here each image has its own target class and the function is compiled once per model;
- tf-explain returns an RGB grid from ``explain()`` and normalizes by ``max - min`` (NaN for a
  constant map); here the result is the paper's ReLU of the weighted sum, bilinearly resized to the
  input and divided by its maximum, with an all-zero map (not NaN) where nothing is positive.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lepton_nb.explain import _common

__all__ = ["gradcam", "gradcam_raw", "hirescam"]


def _build(model: tf.keras.Model, layer_name: str, kind: str):
    """A compiled ``(x, targets) -> (maps at the layer's resolution, logits)`` for ``kind``:
    "gradcam", "gradcam_guided" (tf-explain's weighting) or "hirescam" (features x gradients)."""
    from tf_explain.core.grad_cam import GradCAM

    split = _common.feature_fn(model, layer_name)

    @tf.function(input_signature=[_common.input_spec(model), _common.TARGETS_SPEC])
    def run(x, targets):
        with tf.GradientTape() as tape:
            feats, logits = split(x)
            score = tf.gather(logits, targets, axis=1, batch_dims=1)
        grads = tape.gradient(score, feats)
        if kind == "hirescam":
            return tf.reduce_sum(feats * grads, axis=-1), logits
        if kind == "gradcam_guided":  # tf-explain's guided gradients, GradCAM.get_gradients_and_filters
            grads = tf.cast(feats > 0, grads.dtype) * tf.cast(grads > 0, grads.dtype) * grads
        return tf.vectorized_map(lambda fg: GradCAM.ponderate_output(fg[0], fg[1]), (feats, grads)), logits

    return run


def _maps(model: tf.keras.Model, x: np.ndarray, class_index, layer_name: str | None, kind: str, batch_size: int):
    """``(maps (N, h, w), targets (N,), logits (N, K))`` of :func:`_build` over a checked batch."""
    layer_name = _feature_layer(model, layer_name)
    logits = _common.predict_logits(model, x) if class_index is None else None
    targets = _common.resolve_targets(model, x, class_index, logits=logits)
    run = _common.compiled(model, (kind, layer_name), lambda: _build(model, layer_name, kind))
    maps, outs = [], []
    for i in range(0, len(x), batch_size):
        m, lg = run(tf.constant(x[i:i + batch_size]), tf.constant(targets[i:i + batch_size]))
        maps.append(m.numpy())
        outs.append(lg.numpy())
    return np.concatenate(maps), targets, np.concatenate(outs)


def _feature_layer(model: tf.keras.Model, layer_name: str | None) -> str:
    """``layer_name`` (default: the Grad-CAM layer), checked to output feature maps (N, h, w, c)."""
    layer_name = layer_name or _common.default_layer(model)
    _, layer = _common.find_layer(model, layer_name)
    shape = layer.output_shape
    if not (isinstance(shape, tuple) and len(shape) == 4):
        raise ValueError(f"layer {layer_name!r} outputs shape {shape}, not feature maps (N, h, w, c); choose one of "
                         f"{_common.conv_layer_names(model)}")
    return layer_name


def gradcam_raw(model: tf.keras.Model, images, class_index=None, layer_name: str | None = None, *,
                guided: bool = False, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unrectified, unnormalized Grad-CAM maps at the layer's resolution.

    Returns:
        ``(cams, targets, logits)``: cams (N, h, w) = sum_k alpha_k A^k before the ReLU, the target
        class of each image (N,) and the model's logits (N, K).
    """
    x = _common.as_batch(model, images)
    return _maps(model, x, class_index, layer_name, "gradcam_guided" if guided else "gradcam", batch_size)


def gradcam(model: tf.keras.Model, images, class_index=None, layer_name: str | None = None, *,
            guided: bool = False, batch_size: int = 128) -> np.ndarray:
    """Grad-CAM heatmaps of a batch, at input resolution, in [0, 1].

    Args:
        model: a Keras model that outputs logits (N, K); it may contain nested models.
        images: (N, H, W, C) float images (or (N, H, W) for one channel), the model's input shape.
        class_index: ``None`` for each image's predicted class, an int for one class for all, or
            N ints (e.g. the true labels).
        layer_name: the feature-map layer; default :func:`~lepton_nb.explain._common.default_layer`,
            the rectified output of the last Conv2D, found inside nested models too.
        guided: multiply in tf-explain's guided-gradient mask (not part of the paper's Grad-CAM).
        batch_size: images per compiled call.

    Returns:
        float32 array (N, H, W): ReLU(sum_k alpha_k A^k) bilinearly resized to the input size and
        divided by its per-image maximum; all zeros where the map has no positive value.

    Raises:
        ValueError: bad images, class indices or layer name (before any gradient is computed).
    """
    x = _common.as_batch(model, images)
    cams, _, _ = gradcam_raw(model, x, class_index, layer_name, guided=guided, batch_size=batch_size)
    return _rectified(cams, x.shape[1:3])


def _rectified(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """ReLU, bilinear resize to ``size``, ReLU again, divide by the per-image maximum (zeros if none)."""
    cams = np.maximum(cams, 0.0)
    if cams.shape[1:] != tuple(size):
        cams = np.maximum(tf.image.resize(cams[..., None], size, method="bilinear").numpy()[..., 0], 0.0)
    peak = cams.reshape(len(cams), -1).max(axis=1)
    scale = np.where(peak > 1e-12, peak, 1.0)
    return np.where(peak[:, None, None] > 1e-12, cams / scale[:, None, None], 0.0).astype(np.float32)


def hirescam(model: tf.keras.Model, images, class_index=None, layer_name: str | None = None, *, rectify: bool = True,
             batch_size: int = 128) -> np.ndarray:
    """HiResCAM maps (Draelos & Carin 2020): ``sum_k A^k * dy_c/dA^k``, resized to the input.

    Args:
        model, images, class_index, layer_name: as :func:`gradcam`.
        rectify: ReLU and divide by the per-image maximum as :func:`gradcam` does (``False``: the
            signed map, bilinearly resized).

    Returns:
        float32 (N, H, W).
    """
    x = _common.as_batch(model, images)
    cams, _, _ = _maps(model, x, class_index, layer_name, "hirescam", batch_size)
    if rectify:
        return _rectified(cams, x.shape[1:3])
    if cams.shape[1:] != x.shape[1:3]:
        cams = tf.image.resize(cams[..., None], x.shape[1:3], method="bilinear").numpy()[..., 0]
    return cams.astype(np.float32)
