"""Explanations of image (and tabular) classifiers: numbers first, figures and widgets apart.

- :func:`gradcam` (Selvaraju et al. 2017) and the other attribution methods in
  :mod:`~lepton_nb.explain.attribution` (occlusion, integrated gradients, SmoothGrad, vanilla
  gradients, activation maps) return arrays;
- :mod:`~lepton_nb.explain.surrogate`: a decision tree that mimics the model on region features;
- :mod:`~lepton_nb.explain.influence`: per-class region importance and the tabular case;
- :mod:`~lepton_nb.explain.trust`: deletion/insertion faithfulness, model-randomization sanity
  check, localization on data with a known answer;
- :mod:`~lepton_nb.explain.render`: matplotlib Figures; :mod:`~lepton_nb.explain.widgets`: the
  ipywidgets explorer (ipywidgets imported only there).

Submodules load on first use, so ``import lepton_nb.explain`` imports neither TensorFlow nor
tf-explain until a method runs.
"""

from __future__ import annotations

import importlib

__all__ = ["attribution", "cam", "config", "default_layer", "feature_layers", "gradcam", "influence", "render",
           "surrogate", "tabular", "trust", "widgets"]

_SUBMODULES = {"attribution", "cam", "config", "influence", "render", "surrogate", "tabular", "trust", "widgets"}


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


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'lepton_nb.explain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
