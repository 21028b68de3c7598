"""Attribution methods other than Grad-CAM, as numbers, batched over images and target classes.

Each method returns one map per example with the channel axis summed away: (N, H, W) for images,
(N, F) for tabular inputs. Signs are kept (positive = evidence for the target class);
:func:`to_heatmap` turns them into [0, 1] heatmaps and :func:`heatmaps` runs any method by name.

What is taken from tf-explain 0.3.1 and what is fixed (each fix is a defect of that release):

- vanilla gradients (Simonyan et al. 2014): same computation as ``VanillaGradients.compute_gradients``
  (gradient of the class score, not of the softmax), but one target class per image and one
  compiled function per model instead of a retrace per class;
- integrated gradients (Sundararajan et al. 2017): tf-explain's straight-line path
  (``IntegratedGradients.generate_linear_path``, both end points included), but the mean path
  gradient is multiplied by ``(x - baseline)`` as the paper defines it (tf-explain omits it, so its
  maps are not attributions and lose completeness), with any baseline;
- SmoothGrad (Smilkov et al. 2017): gradients of the class score averaged over noisy copies, with
  the paper's noise of 10-20 % of the input range (tf-explain draws noise with standard deviation
  1.0 from NumPy's global generator and differentiates a cross-entropy applied to whatever the model
  outputs, which is wrong for logits); seeded here;
- occlusion sensitivity (Zeiler & Fergus 2014): tf-explain fills patches with 127.5 (meant for
  0-255 images, far outside [0, 1] inputs), scores ``1 - output`` of logits and tiles patches
  without overlap; here patches take a baseline value, slide with a stride, and each pixel gets the
  mean drop in the target's probability over the patches covering it;
- activation maps: the features of any layer (the seed's activation maps), nested models too.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from lepton_nb.explain import _common

__all__ = [
    "METHODS",
    "activation_heatmap",
    "activation_maps",
    "all_heatmaps",
    "heatmaps",
    "input_gradients",
    "integrated_gradients",
    "occlusion",
    "occlusion_all_classes",
    "smoothgrad",
    "to_heatmap",
    "vanilla_gradients",
]


def _grad_fn(model: tf.keras.Model):
    def build():
        @tf.function(input_signature=[_common.input_spec(model), _common.TARGETS_SPEC])
        def run(x, targets):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = model(x, training=False)
                score = tf.gather(logits, targets, axis=1, batch_dims=1)
            return tape.gradient(score, x)

        return run

    return _common.compiled(model, "input_gradients", build)


def input_gradients(model: tf.keras.Model, x: np.ndarray, targets: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """d logit[target] / d input for a checked batch ``x`` (N, ...) and targets (N,): shape of ``x``."""
    run = _grad_fn(model)
    out = [run(tf.constant(x[i:i + batch_size]), tf.constant(targets[i:i + batch_size], tf.int32)).numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def vanilla_gradients(model: tf.keras.Model, images, class_index=None, *, batch_size: int = 512) -> np.ndarray:
    """Gradient of the target class score w.r.t. the input (Simonyan et al. 2014, "Deep Inside
    Convolutional Networks"), summed over channels.

    Args:
        images: (N, H, W, C) images (or (N, F) tabular rows) of the model's input shape.
        class_index: ``None`` (predicted class), an int, or N ints.

    Returns:
        (N, H, W) signed gradients ((N, F) for tabular inputs).
    """
    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, class_index)
    return _common.reduce_channels(input_gradients(model, x, t, batch_size=batch_size))


def integrated_gradients(model: tf.keras.Model, images, class_index=None, *, steps: int = 32,
                         baseline: float | np.ndarray = 0.0, batch_size: int = 512) -> np.ndarray:
    """Integrated gradients (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks").

    ``(x - x') * mean_{a in linspace(0, 1, steps)} grad F_t(x' + a (x - x'))``, the path from
    tf-explain's ``generate_linear_path``. Completeness: the attributions of an example sum to about
    ``F_t(x) - F_t(x')`` (closer with more steps).

    Args:
        steps: points on the straight path (>= 2).
        baseline: the reference input x', a scalar or an array of one example's shape.

    Returns:
        (N, H, W) signed attributions ((N, F) for tabular inputs).
    """
    from tf_explain.core.integrated_gradients import IntegratedGradients

    if steps < 2:
        raise ValueError(f"steps={steps}: integrated gradients needs at least 2 points on the path")
    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, class_index)
    base = np.broadcast_to(np.asarray(baseline, np.float32), x.shape[1:])
    # tf-explain's path; at most ~batch_size images per chunk to bound memory
    chunk = max(1, batch_size // steps)
    out = []
    for i in range(0, len(x), chunk):
        xs = x[i:i + chunk]
        path = np.concatenate([IntegratedGradients.generate_linear_path(base, img, steps) for img in xs]).astype(np.float32)
        g = input_gradients(model, path, np.repeat(t[i:i + chunk], steps), batch_size=batch_size)
        out.append(g.reshape(len(xs), steps, *x.shape[1:]).mean(axis=1) * (xs - base))
    return _common.reduce_channels(np.concatenate(out))


def smoothgrad(model: tf.keras.Model, images, class_index=None, *, samples: int = 16, noise: float = 0.15,
               seed: int = 0, batch_size: int = 512) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise").

    Mean gradient of the target score over ``samples`` copies with Gaussian noise of standard
    deviation ``noise * (max - min)`` of each example.

    Returns:
        (N, H, W) signed averaged gradients ((N, F) for tabular inputs).
    """
    if samples < 1 or noise < 0:
        raise ValueError(f"samples={samples}, noise={noise}: use samples >= 1 and noise >= 0 (e.g. 0.1-0.2)")
    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, class_index)
    rng = np.random.default_rng(seed)
    axes = tuple(range(1, x.ndim))
    sigma = noise * (x.max(axis=axes) - x.min(axis=axes))
    chunk = max(1, batch_size // samples)
    out = []
    for i in range(0, len(x), chunk):
        xs = x[i:i + chunk]
        rep = np.repeat(xs, samples, axis=0)
        eps = rng.standard_normal(rep.shape, dtype=np.float32) * np.repeat(sigma[i:i + chunk], samples).reshape(
            (-1,) + (1,) * (x.ndim - 1))
        g = input_gradients(model, rep + eps, np.repeat(t[i:i + chunk], samples), batch_size=batch_size)
        out.append(g.reshape(len(xs), samples, *x.shape[1:]).mean(axis=1))
    return _common.reduce_channels(np.concatenate(out))


def _positions(size: int, patch: int, stride: int) -> list[int]:
    pos = list(range(0, max(size - patch, 0) + 1, stride))
    if pos[-1] + patch < size:
        pos.append(size - patch)
    return pos


def occlusion_all_classes(model: tf.keras.Model, images, *, patch: int = 4, stride: int = 2,
                          baseline: float = 0.0, batch_size: int = 1024) -> np.ndarray:
    """Occlusion sensitivity for every class at once (Zeiler & Fergus 2014, "Visualizing and
    Understanding Convolutional Networks").

    A ``patch x patch`` square set to ``baseline`` slides with ``stride``; each pixel gets the mean
    drop ``p_c(x) - p_c(x occluded)`` of each class probability over the patches covering it.

    Returns:
        (N, K, H, W) probability drops (positive: the region supports class c).
    """
    x = _common.as_batch(model, images)
    if x.ndim != 4:
        raise ValueError("occlusion needs image inputs (N, H, W, C); for tabular data use integrated_gradients")
    n, h, w, _ = x.shape
    if not 1 <= patch <= min(h, w) or stride < 1:
        raise ValueError(f"patch={patch}, stride={stride}: use 1 <= patch <= {min(h, w)} and stride >= 1")
    ys, xs = _positions(h, patch, stride), _positions(w, patch, stride)
    masks = np.zeros((len(ys) * len(xs), h, w), np.float32)
    for k, (r, c) in enumerate((r, c) for r in ys for c in xs):
        masks[k, r:r + patch, c:c + patch] = 1.0
    cover = masks.sum(axis=0)
    p0 = _common.softmax(_common.predict_logits(model, x))
    kcls = p0.shape[1]
    out = np.empty((n, kcls, h, w), np.float32)
    per = max(1, batch_size // len(masks))
    for i in range(0, n, per):
        xb = x[i:i + per]
        occ = xb[:, None] * (1 - masks[None, ..., None]) + baseline * masks[None, ..., None]
        p = _common.softmax(_common.predict_logits(model, occ.reshape(-1, h, w, x.shape[-1]), batch_size=batch_size))
        drop = p0[i:i + per, None, :] - p.reshape(len(xb), len(masks), kcls)  # (b, P, K)
        out[i:i + per] = np.einsum("bpk,phw->bkhw", drop, masks) / cover
    return out


def occlusion(model: tf.keras.Model, images, class_index=None, *, patch: int = 4, stride: int = 2,
              baseline: float = 0.0, batch_size: int = 1024) -> np.ndarray:
    """Occlusion sensitivity of the target class, (N, H, W); see :func:`occlusion_all_classes`."""
    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, class_index)
    allc = occlusion_all_classes(model, x, patch=patch, stride=stride, baseline=baseline, batch_size=batch_size)
    return allc[np.arange(len(x)), t]


def activation_maps(model: tf.keras.Model, images, layer_name: str, *, batch_size: int = 512) -> np.ndarray:
    """Outputs of layer ``layer_name`` (nested models searched), e.g. (N, h, w, channels).

    The seed article's activation maps; draw them with :func:`lepton_nb.explain.plotting.activation_grid`.
    """
    x = _common.as_batch(model, images)

    def build():
        split = _common.feature_fn(model, layer_name)
        return tf.function(lambda a: split(a)[0], input_signature=[_common.input_spec(model)])

    run = _common.compiled(model, ("activations", layer_name), build)
    return np.concatenate([run(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)])


def activation_heatmap(model: tf.keras.Model, images, layer_name: str) -> np.ndarray:
    """Mean activation over channels of a 4-D layer, resized to the input, in [0, 1]: (N, H, W)."""
    x = _common.as_batch(model, images)
    a = activation_maps(model, x, layer_name)
    if a.ndim != 4:
        raise ValueError(f"layer {layer_name!r} has outputs of shape {a.shape[1:]}, not feature maps; choose one of "
                         f"{_common.conv_layer_names(model)}")
    m = np.abs(a).mean(axis=-1)
    if m.shape[1:] != x.shape[1:3]:
        m = tf.image.resize(m[..., None], x.shape[1:3], method="bilinear").numpy()[..., 0]
    return to_heatmap(m, "positive")


def to_heatmap(maps: np.ndarray, how: str = "abs") -> np.ndarray:
    """Scale attributions to [0, 1] per example.

    Args:
        maps: (N, ...) attributions.
        how: "abs" (magnitude, for gradients), "positive" (evidence for the class only, for
            integrated gradients, occlusion and Grad-CAM) or "signed" (-1..1 mapped to 0..1, 0.5 = 0).

    Returns:
        float32 array of the same shape; an example with no signal maps to zeros (0.5 for "signed").
    """
    m = np.asarray(maps, np.float32)
    if how not in ("abs", "positive", "signed"):
        raise ValueError(f"how={how!r}: choose 'abs', 'positive' or 'signed'")
    axes = tuple(range(1, m.ndim))
    if how == "signed":
        peak = np.abs(m).max(axis=axes, keepdims=True)
        return np.where(peak > 0, 0.5 + 0.5 * m / np.where(peak > 0, peak, 1), 0.5).astype(np.float32)
    m = np.abs(m) if how == "abs" else np.maximum(m, 0)
    peak = m.max(axis=axes, keepdims=True)
    return np.where(peak > 0, m / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def _gradcam(model, x, class_index, layer_name=None, **kw):
    from lepton_nb.explain.cam import gradcam

    return gradcam(model, x, class_index, layer_name, **kw)


#: name -> (function(model, images, class_index, **options) -> (N, H, W), how to make a heatmap)
METHODS: dict[str, tuple[Callable, str]] = {
    "gradcam": (_gradcam, "positive"),
    "integrated_gradients": (integrated_gradients, "positive"),
    "smoothgrad": (smoothgrad, "abs"),
    "vanilla_gradients": (vanilla_gradients, "abs"),
    "occlusion": (occlusion, "positive"),
}


def heatmaps(model: tf.keras.Model, images, method: str = "gradcam", class_index=None, **options) -> np.ndarray:
    """Heatmaps (N, H, W) in [0, 1] of any method in :data:`METHODS`, by name.

    ``options`` go to the method (``layer_name`` for Grad-CAM, ``steps`` for integrated gradients,
    ``samples``/``noise`` for SmoothGrad, ``patch``/``stride`` for occlusion).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    fn, how = METHODS[method]
    return to_heatmap(fn(model, images, class_index, **options), how)


def all_heatmaps(model: tf.keras.Model, images, class_index=None, *, methods=None, config=None) -> dict[str, np.ndarray]:
    """``{method: heatmaps (N, H, W) in [0, 1]}`` for several methods on the same images and targets.

    Args:
        methods: names from :data:`METHODS` (default: all of them).
        config: a :class:`lepton_nb.explain.settings.AttributionConfig` for the methods' options.
    """
    from lepton_nb.explain.settings import AttributionConfig

    config = config or AttributionConfig()
    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, class_index)
    return {m: heatmaps(model, x, m, t, **config.options(m)) for m in (methods or METHODS)}
