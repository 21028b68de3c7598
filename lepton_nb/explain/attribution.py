"""Attribution methods as numbers, batched over images and target classes, and one registry of
every method lepton_nb offers (ours, Grad-CAM/HiResCAM from :mod:`~lepton_nb.explain.cam`, and
Xplique's from :mod:`~lepton_nb.explain.xplique`).

Each method returns one map per example with the channel axis summed away: (N, H, W) for images,
(N, F) for tabular inputs. Signs are kept (positive = evidence for the target class);
:func:`to_heatmap` turns them into [0, 1] heatmaps, :func:`maps` and :func:`heatmaps` run any
method by name.

Ours, and why each is kept beside tf-explain 0.3.1 and Xplique 1.5.2 (tests/test_explain_xplique.py
compares each with the library's version):

- vanilla gradients (Simonyan et al. 2014): tf-explain's computation (gradient of the class
  score), one target per image and one compiled function per model; signed (Xplique's
  ``Saliency`` returns its absolute value, which the sanity check and the tabular case need signed);
- integrated gradients (Sundararajan et al. 2017) with a proper quadrature: Gauss-Legendre nodes by
  default (Captum's default), or the trapezoid rule (which equals Xplique's
  ``IntegratedGradients``), and the completeness delta ``sum(attr) - (F(x) - F(x'))`` per example
  (Xplique returns no delta and takes only scalar baselines; tf-explain omits the ``(x - x')``
  factor, so its maps are not attributions);
- occlusion (Zeiler & Fergus 2014): every class from one pass over the patches (the explorer's
  cache), each pixel the *mean* probability drop of the patches covering it (Xplique's
  ``Occlusion`` sums them, so border pixels, covered by fewer patches, weigh less);
- activation maps: the features of any layer, nested models too.

SmoothGrad is Xplique's (with SquareGrad and VarGrad): our former version was the same estimator
(maps correlated as much as two seeds of either).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from lepton_nb.explain import _common
from lepton_nb.explain.settings import IG_RULES

__all__ = [
    "BLACK_BOX",
    "IG_RULES",
    "METHODS",
    "activation_heatmap",
    "activation_maps",
    "all_heatmaps",
    "all_maps",
    "heatmaps",
    "input_gradients",
    "integrated_gradients",
    "maps",
    "nodes_weights",
    "occlusion",
    "occlusion_all_classes",
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




def nodes_weights(steps: int, rule: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Positions alpha in [0, 1] on the straight path and their weights (summing to 1).

    Rules: ``gausslegendre`` (numpy's ``leggauss`` mapped to [0, 1]; Captum's default),
    ``trapezoid`` (equally spaced, both ends, end weights halved; Xplique's rule),
    ``riemann_middle`` (midpoints) and ``uniform_mean`` (a plain mean over ``linspace(0, 1, steps)``,
    lepton_nb's former first-order rule, kept only to measure it).
    """
    if rule not in IG_RULES:
        raise ValueError(f"rule={rule!r}: choose one of {IG_RULES}")
    least = 2 if rule in ("trapezoid", "uniform_mean") else 1
    if steps < least:
        raise ValueError(f"steps={steps}: rule {rule!r} needs at least {least} point(s) on the path")
    if rule == "gausslegendre":
        a, w = np.polynomial.legendre.leggauss(steps)
        return (a + 1) / 2, w / 2
    if rule == "trapezoid":
        w = np.full(steps, 1 / (steps - 1))
        w[[0, -1]] /= 2
        return np.linspace(0, 1, steps), w
    if rule == "riemann_middle":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1 / steps)
    return np.linspace(0, 1, steps), np.full(steps, 1 / steps)


def integrated_gradients(model: tf.keras.Model, images, class_index=None, *, steps: int = 32,
                         rule: str = "gausslegendre", baseline: float | np.ndarray = 0.0, return_delta: bool = False,
                         batch_size: int = 1024):
    """Integrated gradients (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks").

    ``IG_i = (x_i - x'_i) * integral_0^1 dF_t(x' + a (x - x')) / dx_i da``, the integral by the
    quadrature ``rule`` with ``steps`` nodes (:func:`nodes_weights`). Completeness: an example's
    attributions sum to ``F_t(x) - F_t(x')``; on ReLU networks the integrand is piecewise constant,
    and Gauss-Legendre with 32 nodes keeps the median relative error below 1 %.

    Args:
        baseline: the reference input x', a scalar or an array of one example's shape.
        return_delta: also return the completeness delta ``sum(attr) - (F_t(x) - F_t(x'))`` (N,).

    Returns:
        (N, H, W) signed attributions ((N, F) for tabular inputs), and the delta if asked.
    """
    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, class_index)
    base = np.broadcast_to(np.asarray(baseline, np.float32), x.shape[1:]).astype(np.float32)
    alphas, weights = nodes_weights(steps, rule)
    chunk = max(1, batch_size // steps)
    out = []
    for i in range(0, len(x), chunk):
        xs = x[i:i + chunk]
        path = base[None, None] + alphas.astype(np.float32).reshape((1, -1) + (1,) * (x.ndim - 1)) * (xs - base)[:, None]
        g = input_gradients(model, path.reshape((-1,) + x.shape[1:]), np.repeat(t[i:i + chunk], steps),
                            batch_size=batch_size).reshape((len(xs), steps) + x.shape[1:])
        out.append(np.tensordot(weights.astype(np.float32), g, axes=([0], [1])) * (xs - base))
    attr = np.concatenate(out)
    if not return_delta:
        return _common.reduce_channels(attr)
    f = _common.predict_logits(model, np.concatenate([x, base[None]]))
    delta = attr.reshape(len(x), -1).sum(axis=1) - (f[np.arange(len(x)), t] - f[-1][t])
    return _common.reduce_channels(attr), delta


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
            integrated gradients, occlusion and Grad-CAM), "range" (minimum to maximum, for maps with
            a large common offset such as RISE's) or "signed" (-1..1 mapped to 0..1, 0.5 = 0).

    Returns:
        float32 array of the same shape; an example with no signal maps to zeros (0.5 for "signed").
    """
    m = np.asarray(maps, np.float32)
    if how not in ("abs", "positive", "range", "signed"):
        raise ValueError(f"how={how!r}: choose 'abs', 'positive', 'range' or 'signed'")
    axes = tuple(range(1, m.ndim))
    if how == "range":
        m = m - m.min(axis=axes, keepdims=True)
        how = "positive"
    if how == "signed":
        peak = np.abs(m).max(axis=axes, keepdims=True)
        return np.where(peak > 0, 0.5 + 0.5 * m / np.where(peak > 0, peak, 1), 0.5).astype(np.float32)
    m = np.abs(m) if how == "abs" else np.maximum(m, 0)
    peak = m.max(axis=axes, keepdims=True)
    return np.where(peak > 0, m / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def _gradcam(model, x, class_index, layer_name=None, **kw):
    from lepton_nb.explain.cam import gradcam

    return gradcam(model, x, class_index, layer_name, **kw)


def _hirescam(model, x, class_index, layer_name=None, **kw):
    from lepton_nb.explain.cam import hirescam

    return hirescam(model, x, class_index, layer_name, rectify=False, **kw)


def _xplique(name: str) -> Callable:
    def run(model, x, class_index, **opts):
        from lepton_nb.explain.xplique import explain

        return explain(name, model, x, class_index, **opts)

    run.__name__ = name
    return run


#: name -> (function(model, images, class_index, **options) -> signed maps (N, H, W), how
#: :func:`to_heatmap` shows them). Ours first, then Xplique's.
METHODS: dict[str, tuple[Callable, str]] = {
    "gradcam": (_gradcam, "positive"),
    "hirescam": (_hirescam, "positive"),
    "integrated_gradients": (integrated_gradients, "positive"),
    "vanilla_gradients": (vanilla_gradients, "abs"),
    "occlusion": (occlusion, "positive"),
    "gradcampp": (_xplique("gradcampp"), "positive"),
    "smoothgrad": (_xplique("smoothgrad"), "abs"),
    "squaregrad": (_xplique("squaregrad"), "positive"),
    "vargrad": (_xplique("vargrad"), "positive"),
    "rise": (_xplique("rise"), "range"),
    "lime": (_xplique("lime"), "positive"),
    "kernelshap": (_xplique("kernelshap"), "positive"),
    "sobol": (_xplique("sobol"), "positive"),
}
#: methods that only query the model (seconds per image, not milliseconds)
BLACK_BOX = ("occlusion", "rise", "lime", "kernelshap", "sobol")


def _check_method(method: str) -> tuple[Callable, str]:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    return METHODS[method]


def maps(model: tf.keras.Model, images, method: str = "gradcam", class_index=None, **options) -> np.ndarray:
    """Signed maps (N, H, W) of any method in :data:`METHODS`, by name (Grad-CAM: its [0, 1] map).

    ``options`` go to the method: ``layer_name`` (Grad-CAM, HiResCAM), ``steps``/``rule``
    (integrated gradients), ``patch``/``stride`` (occlusion), Xplique's options for the others
    (:func:`lepton_nb.explain.xplique.explainer`); :meth:`AttributionConfig.options` gives them.
    """
    fn, _ = _check_method(method)
    return np.asarray(fn(model, images, class_index, **options), np.float32)


def heatmaps(model: tf.keras.Model, images, method: str = "gradcam", class_index=None, **options) -> np.ndarray:
    """Heatmaps (N, H, W) in [0, 1] of any method in :data:`METHODS`: :func:`maps` then :func:`to_heatmap`."""
    _, how = _check_method(method)
    return to_heatmap(maps(model, images, method, class_index, **options), how)


def all_maps(model: tf.keras.Model, images, class_index=None, *, methods=None, config=None,
             heatmap: bool = False) -> dict[str, np.ndarray]:
    """``{method: maps (N, H, W)}`` for several methods on the same images and targets.

    Args:
        methods: names from :data:`METHODS` (default: all of them).
        config: a :class:`lepton_nb.explain.settings.AttributionConfig` for the methods' options.
        heatmap: return [0, 1] heatmaps instead of signed maps.
    """
    from lepton_nb.explain.settings import AttributionConfig

    config = config or AttributionConfig()
    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, class_index)
    run = heatmaps if heatmap else maps
    return {m: run(model, x, m, t, **config.options(m)) for m in (methods or METHODS)}


def all_heatmaps(model: tf.keras.Model, images, class_index=None, *, methods=None, config=None) -> dict[str, np.ndarray]:
    """``{method: heatmaps (N, H, W) in [0, 1]}``; see :func:`all_maps`."""
    return all_maps(model, images, class_index, methods=methods, config=config, heatmap=True)
