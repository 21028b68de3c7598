"""Xplique 1.5.2 (DEEL; Fel et al. 2022, "Xplique: A Deep Learning Explainability Toolbox") behind
lepton_nb's conventions: integer targets in, float32 (N, H, W) maps out, the sign Xplique gives.

The methods taken from Xplique (none of them exists in lepton_nb): Grad-CAM++ (Chattopadhay et al.
2018), SmoothGrad (Smilkov et al. 2017), SquareGrad and VarGrad (Hooker et al. 2019), RISE (Petsiuk
et al. 2018), LIME (Ribeiro et al. 2016), KernelSHAP (Lundberg & Lee 2017) and Sobol attribution
(Fel et al. 2021). Settings chosen for 28x28 one-channel images:

- black-box methods (RISE, LIME, KernelSHAP, Sobol) explain the target's softmax probability
  (:func:`prob_operator`), as RISE and Sobol define it; the gradient methods explain the logit;
- LIME and KernelSHAP use a fixed grid of ``cell x cell`` squares as the interpretable space (49
  features for cell 4, the same for every image) instead of Xplique's per-image segmentation;
- Grad-CAM++ is pointed at lepton_nb's Grad-CAM layer (the rectified output of the last
  convolution, :func:`lepton_nb.explain.default_layer`); Xplique's own default is the last layer
  with ``filters`` (the Conv2D itself, before batch norm and ReLU), which the paper does not use;
- every call starts with ``tf.random.set_seed(seed)`` (Xplique draws from TensorFlow's global
  generator), so calls are reproducible; Xplique's compiled random ops keep the seed they were
  traced with, so another ``seed`` does not always give other draws.

Known deviations of Xplique 1.5.2 that matter here (tests/test_explain_xplique.py shows each):
Grad-CAM++ averages A over space in the alpha denominator where the paper sums it; MuFidelity
draws grid cells independently, so the subset size varies and any positive map "correlates" with
the drop (:func:`lepton_nb.explain.faithfulness.mufidelity_table` centres the maps); metrics reject
float64 explanations; ``ModelRandomizationMetric`` draws U[0, 1) weights and scores a constant map
as perfect (:mod:`lepton_nb.explain.sanity` re-initializes with the layers' own initializers).

Importing this module imports Xplique (about 8 s cold); ``lepton_nb.explain`` loads it on first use.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

__all__ = ["METHODS", "Explainer", "explain", "explainer", "grid_mapping", "one_hot", "prob_operator"]

#: Xplique method -> how its map becomes a [0, 1] heatmap (:func:`lepton_nb.explain.attribution.to_heatmap`)
METHODS = {"gradcampp": "positive", "smoothgrad": "abs", "squaregrad": "positive", "vargrad": "positive",
           "rise": "range", "lime": "positive", "kernelshap": "positive", "sobol": "positive"}
_BLACK_BOX = ("rise", "lime", "kernelshap", "sobol")


def one_hot(targets, k: int) -> np.ndarray:
    """Integer targets (N,) as float32 one-hot rows (N, k), the form Xplique takes."""
    return np.eye(k, dtype=np.float32)[np.asarray(targets, int)]


def prob_operator(model, inputs, targets):
    """``g(f, x, y) = softmax(f(x)) . y``: the target's probability (Xplique's operator signature)."""
    return tf.reduce_sum(tf.nn.softmax(model(inputs), axis=-1) * targets, axis=-1)


def grid_mapping(cell: int = 4) -> Callable:
    """LIME/KernelSHAP interpretable space: ``cell x cell`` squares numbered row by row."""

    def mapping(inp):
        h, w = int(inp.shape[0]), int(inp.shape[1])
        r, c = np.meshgrid(np.arange(h) // cell, np.arange(w) // cell, indexing="ij")
        return tf.constant(r * ((w + cell - 1) // cell) + c, tf.int32)

    return mapping


def explainer(name: str, model: tf.keras.Model, *, batch_size: int = 64, **opts):
    """An Xplique explainer by lepton_nb name, with the settings above; ``opts`` override them.

    Options by method: ``nb_samples`` and ``noise`` (SmoothGrad family, RISE, LIME, KernelSHAP),
    ``grid_size``/``nb_design`` (Sobol), ``grid_size`` (RISE), ``cell`` (LIME/KernelSHAP grid),
    ``conv_layer`` (Grad-CAM++).
    """
    import xplique.attributions as xa

    if name == "gradcampp":
        from lepton_nb.explain._common import default_layer

        layer = opts.pop("conv_layer", None) or default_layer(model)
        return xa.GradCAMPP(model, conv_layer=layer, batch_size=batch_size, **opts)
    if name in ("smoothgrad", "squaregrad", "vargrad"):
        cls = {"smoothgrad": xa.SmoothGrad, "squaregrad": xa.SquareGrad, "vargrad": xa.VarGrad}[name]
        return cls(model, batch_size=batch_size, **{"nb_samples": 32, "noise": 0.15, "reducer": "sum", **opts})
    big = batch_size * 8
    if name == "rise":
        return xa.Rise(model, batch_size=big, operator=prob_operator,
                       **{"nb_samples": 2000, "grid_size": 7, "preservation_probability": 0.5, **opts})
    if name in ("lime", "kernelshap"):
        cell = opts.pop("cell", 4)
        cls = xa.Lime if name == "lime" else xa.KernelShap
        return cls(model, batch_size=big, operator=prob_operator,
                   **{"nb_samples": 400, "map_to_interpret_space": grid_mapping(cell), **opts})
    if name == "sobol":
        return xa.SobolAttributionMethod(model, batch_size=big, operator=prob_operator,
                                         **{"grid_size": 7, "nb_design": 32, **opts})
    raise ValueError(f"unknown Xplique method {name!r}; choose one of {sorted(METHODS)}")


def explain(name: str, model: tf.keras.Model, images, targets, *, seed: int = 0, batch_size: int = 64,
            **opts) -> np.ndarray:
    """Xplique's ``name`` explanation of ``images`` (N, H, W, C) for integer ``targets`` (N,).

    Returns:
        float32 (N, H, W), channels summed, Xplique's sign kept.
    """
    from lepton_nb.explain import _common

    x = _common.as_batch(model, images)
    t = _common.resolve_targets(model, x, targets)
    tf.random.set_seed(seed)
    exp = explainer(name, model, batch_size=batch_size, **opts)
    out = np.asarray(exp.explain(x, one_hot(t, int(model.output_shape[-1]))), np.float32)
    return out.sum(axis=-1) if out.ndim == 4 else out


class Explainer:
    """A lepton_nb method as an Xplique explainer, for Xplique's metrics.

    Xplique's randomization and stability metrics call ``explainer(inputs, one_hot_targets)`` and
    may replace ``explainer.model``; each map is divided by its largest absolute value (so that
    distances compare shapes, not scales) and returned as float32 (N, H, W, 1).

    Args:
        fn: ``fn(model, images, int_targets) -> maps (N, H, W)``.
        model: the model explained.
    """

    def __init__(self, fn: Callable, model: tf.keras.Model):
        self.fn, self.model = fn, model

    def explain(self, inputs, targets) -> np.ndarray:
        x = np.asarray(inputs, np.float32)
        t = np.asarray(targets).argmax(axis=1).astype(np.int32)
        m = np.asarray(self.fn(self.model, x, t), np.float32)
        peak = np.abs(m).reshape(len(m), -1).max(axis=1)
        return (m / np.where(peak > 0, peak, 1)[:, None, None])[..., None]

    __call__ = explain
