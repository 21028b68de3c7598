"""Explanations of image (and tabular) classifiers: numbers first, figures and widgets apart.

- :func:`gradcam` (Selvaraju et al. 2017) and the other attribution methods in
  :mod:`~lepton_nb.explain.attribution` (occlusion, integrated gradients, SmoothGrad, vanilla
  gradients, activation maps) return arrays;
- :mod:`~lepton_nb.explain.surrogate`: a decision tree that mimics the model on region features;
- :mod:`~lepton_nb.explain.influence`: per-class region importance and the tabular case;
- :mod:`~lepton_nb.explain.trust`: deletion/insertion faithfulness, model-randomization sanity
  check, localization on data with a known answer;
- :mod:`~lepton_nb.explain.plotting`: matplotlib figures; :mod:`~lepton_nb.explain.widgets`: the
  ipywidgets explorer (ipywidgets imported only there); :mod:`~lepton_nb.explain.settings`: options.

Submodules load on first use, so ``import lepton_nb.explain`` imports neither TensorFlow nor
tf-explain until a method runs.
"""

from __future__ import annotations

from lepton_nb._lazy import lazy_submodules

_SUBMODULES = ("attribution", "cam", "influence", "plotting", "settings", "surrogate", "tabular", "trust", "widgets")

__all__ = ["default_layer", "feature_layers", "gradcam", *_SUBMODULES]


def gradcam(model, images, class_index=None, layer_name=None, **options):
    """Grad-CAM heatmaps (N, H, W) in [0, 1]; see :func:`lepton_nb.explain.cam.gradcam`."""
    from lepton_nb.explain.cam import gradcam as _gradcam

    return _gradcam(model, images, class_index, layer_name, **options)


def default_layer(model) -> str:
    """Grad-CAM's default layer: the rectified output of the last Conv2D (nested models searched)."""
    from lepton_nb.explain._common import default_layer as _default_layer

    return _default_layer(model)


def feature_layers(model) -> list[str]:
    """Names of the layers with feature maps (N, h, w, c), nested models included, in order."""
    from lepton_nb.explain._common import conv_layer_names

    return conv_layer_names(model)


__getattr__, __dir__ = lazy_submodules(__name__, _SUBMODULES, globals())
