"""Explanations of image (and tabular) classifiers: numbers first, figures and widgets apart.

- methods: :func:`gradcam` (Selvaraju et al. 2017) and HiResCAM in :mod:`~lepton_nb.explain.cam`;
  integrated gradients, gradients, occlusion and one registry of every method in
  :mod:`~lepton_nb.explain.attribution`; Xplique's Grad-CAM++, SmoothGrad/SquareGrad/VarGrad, RISE,
  LIME, KernelSHAP and Sobol in :mod:`~lepton_nb.explain.xplique`;
- checks that can fail, each with controls: :mod:`~lepton_nb.explain.faithfulness`
  (deletion/insertion and MuFidelity at several fills), :mod:`~lepton_nb.explain.sanity`
  (cascading randomization on the foreground, class specificity, Xplique's randomization and
  stability metrics), :mod:`~lepton_nb.explain.localization` (shapes whose decisive cue is not the
  brightest);
- :mod:`~lepton_nb.explain.influence`: which training images made a prediction (TracIn, influence
  functions); :mod:`~lepton_nb.explain.importance`: per-class region and per-feature importance;
- :mod:`~lepton_nb.explain.surrogate`: trees distilled from the model over readable features;
  :mod:`~lepton_nb.explain.tabular`: the breast-cancer case and a scikit-learn wrapper;
- :mod:`~lepton_nb.explain.plotting`: figures; :mod:`~lepton_nb.explain.widgets`: the ipywidgets
  explorer (ipywidgets imported only there); :mod:`~lepton_nb.explain.settings`: options.

Submodules load on first use, so ``import lepton_nb.explain`` imports neither TensorFlow, tf-explain
nor Xplique until a method runs.
"""

from __future__ import annotations

from lepton_nb._lazy import lazy_submodules

_SUBMODULES = ("attribution", "cam", "faithfulness", "importance", "influence", "localization", "plotting", "sanity",
               "settings", "surrogate", "tabular", "widgets", "xplique")

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
