"""Empirical privacy audits: is the epsilon a run claims true, and what can an attacker infer?

- :mod:`~lepton_nb.privacy.audit.canary`: the one-run canary audit of DP-SGD (Steinke, Nasr &
  Jagielski 2023): Dirac gradient canaries through the product's own ``train_dp``, a 95 % lower
  bound on epsilon, and the broken controls it must catch.
- :mod:`~lepton_nb.privacy.audit.bound`: that lower bound (the paper's Appendix D computation).
- :mod:`~lepton_nb.privacy.audit.mia`: membership inference with tensorflow-privacy's
  ``privacy_tests`` (loss threshold, its ``run_attacks``, LiRA with shadow models), evaluated with
  held-out thresholds, TPR at low FPR and confidence intervals; the advantage an epsilon allows.

Importing this package is light; the submodules load TensorFlow, scipy or ``privacy_tests`` when used.
"""

from __future__ import annotations

from lepton_nb._lazy import lazy_submodules

_SUBMODULES = ("bound", "canary", "mia")
__all__ = list(_SUBMODULES)

__getattr__, __dir__ = lazy_submodules(__name__, _SUBMODULES, globals())
