"""Differential privacy for lepton_nb: DP-SGD that is fast and honestly accounted.

- :func:`train_dp`: DP training on the fast path (ghost-norm per-example clipping,
  :mod:`~lepton_nb.privacy.fast_clipping`) or the stock path (tensorflow-privacy's DP-Keras
  optimizers, :mod:`~lepton_nb.privacy.optimizers`), with Poisson or shuffle sampling
  (:mod:`~lepton_nb.privacy.sampling`), through the one training core (:func:`lepton_nb.training.fit`);
  on a CPU the fast path's noise comes from a compiled kernel (:mod:`~lepton_nb.privacy.native_noise`).
  Private by default: its noise and batches come from fresh OS entropy; ``DPSGDConfig(reproducible=True)``
  is the labelled, not private, opt-in.
- :func:`train_scatter_dp`: the ScatterNet + linear recipe (Tramer & Boneh 2021) on fixed,
  privacy-free features (:mod:`~lepton_nb.privacy.scatter`, :class:`ScatterDPRecipe`).
- :func:`epsilon`, :func:`calibrate_noise`: dp_accounting (RDP and PLD) for the sampling used
  (:mod:`~lepton_nb.privacy.accounting`).
- :class:`PrivacyBudget` (:mod:`~lepton_nb.privacy.budget`), noise schedules
  (:mod:`~lepton_nb.privacy.schedules`), audits (:mod:`~lepton_nb.privacy.audit`: the one-run canary
  audit's epsilon lower bound, membership inference with tensorflow-privacy's ``privacy_tests``),
  epoch times of the paths (:mod:`~lepton_nb.privacy.speed`), figures
  (:mod:`~lepton_nb.privacy.plotting`), settings (:class:`DPSGDConfig`, :mod:`~lepton_nb.privacy.settings`).

Importing this package is light (no TensorFlow, tensorflow_privacy or dp_accounting); the modules
that need them import them when first used.
"""

from __future__ import annotations

from lepton_nb._lazy import lazy_submodules
from lepton_nb.privacy.accounting import (
    PrivacyError,
    calibrate_noise,
    dp_event,
    epsilon,
    epsilon_for_schedule,
    steps_per_epoch,
)
from lepton_nb.privacy.settings import DPSGDConfig, ScatterDPRecipe

_SUBMODULES = ("accounting", "audit", "budget", "fast_clipping", "native_noise", "optimizers", "plotting", "sampling",
               "scatter", "schedules", "settings", "speed", "train")

#: Names re-exported from submodules that import TensorFlow, resolved on first use.
_FROM_SUBMODULES = {
    "DPModelError": "fast_clipping",
    "FastDPModel": "fast_clipping",
    "PrivacyBudget": "budget",
    "check_dp_model": "fast_clipping",
    "noise_schedule": "schedules",
    "scale_to_epsilon": "schedules",
    "train_dp": "train",
    "train_scatter_dp": "scatter",
}

__all__ = ["DPSGDConfig", "PrivacyError", "ScatterDPRecipe", "calibrate_noise", "dp_event", "epsilon", "epsilon_for_schedule",
           "steps_per_epoch", *_FROM_SUBMODULES, *_SUBMODULES]

_submodule, __dir__ = lazy_submodules(__name__, _SUBMODULES, globals())


def __getattr__(name: str):
    if name in _FROM_SUBMODULES:
        value = getattr(_submodule(_FROM_SUBMODULES[name]), name)
        globals()[name] = value
        return value
    return _submodule(name)
