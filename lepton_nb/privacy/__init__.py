"""Differential privacy for lepton_nb: DP-SGD that is fast and honestly accounted.

- :func:`train_dp`: DP training on the fast path (ghost-norm per-example clipping,
  :mod:`~lepton_nb.privacy.fast_clipping`) or the stock path (tensorflow-privacy's DP-Keras
  optimizers, :mod:`~lepton_nb.privacy.optimizers`), with Poisson or shuffle sampling
  (:mod:`~lepton_nb.privacy.sampling`).
- :func:`epsilon`, :func:`calibrate_noise`: dp_accounting (RDP and PLD) for the sampling used
  (:mod:`~lepton_nb.privacy.accounting`).
- :class:`PrivacyBudget` (:mod:`~lepton_nb.privacy.budget`), noise schedules
  (:mod:`~lepton_nb.privacy.schedules`), membership-inference audit (:mod:`~lepton_nb.privacy.audit`),
  figures (:mod:`~lepton_nb.privacy.plots`), notebook settings (:mod:`~lepton_nb.privacy.config`).

Importing this package is light (no TensorFlow, tensorflow_privacy or dp_accounting); the modules
that need them import them when first used.
"""

from __future__ import annotations

# lepton_nb.config re-exports notebook settings of modules that import this package's config; importing
# it first makes either import order work (no half-initialised lepton_nb.privacy.config).
import lepton_nb.config  # noqa: F401  isort: skip
from lepton_nb.privacy.accounting import (
    PrivacyError,
    calibrate_noise,
    dp_event,
    epsilon,
    epsilon_for_schedule,
    steps_per_epoch,
)
from lepton_nb.privacy.config import DP_CNN, DP_CNN_NO_NORM, DPConfig, DPNotebookConfig, dp_notebook

__all__ = [
    "DPConfig",
    "DPModelError",
    "DPNotebookConfig",
    "DP_CNN",
    "DP_CNN_NO_NORM",
    "FastDPModel",
    "PrivacyBudget",
    "PrivacyError",
    "audit",
    "calibrate_noise",
    "check_dp_model",
    "dp_event",
    "dp_notebook",
    "epsilon",
    "epsilon_for_schedule",
    "experiments",
    "noise_schedule",
    "plots",
    "scale_to_epsilon",
    "speed",
    "steps_per_epoch",
    "train_dp",
]

_LAZY = {
    "DPModelError": ("lepton_nb.privacy.fast_clipping", "DPModelError"),
    "FastDPModel": ("lepton_nb.privacy.fast_clipping", "FastDPModel"),
    "check_dp_model": ("lepton_nb.privacy.fast_clipping", "check_dp_model"),
    "PrivacyBudget": ("lepton_nb.privacy.budget", "PrivacyBudget"),
    "noise_schedule": ("lepton_nb.privacy.schedules", "noise_schedule"),
    "scale_to_epsilon": ("lepton_nb.privacy.schedules", "scale_to_epsilon"),
    "train_dp": ("lepton_nb.privacy.train", "train_dp"),
    "audit": ("lepton_nb.privacy.audit", None),
    "plots": ("lepton_nb.privacy.plots", None),
    "speed": ("lepton_nb.privacy.speed", None),
    "experiments": ("lepton_nb.privacy.experiments", None),
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lepton_nb.privacy' has no attribute {name!r}")
