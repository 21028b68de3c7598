"""lepton_nb: notebooks and a library for fast, private and explainable image models.

Two layers: the core library (``data``, ``features``, ``models``, ``training``, ``optimization``,
``timing``, ``metrics``, ``distributed``, ``privacy``, ``federated``, ``explain``, ``plotting``,
``reports``, ``settings``, ``export``) that any notebook can use, and ``stories``, one module per
numbered notebook. Submodules are imported on first use (PEP 562), so ``import lepton_nb`` does not
import TensorFlow, and a missing optional piece fails where it is used::

    import lepton_nb as ln
    ds = ln.data.load("fashion-mnist")
"""

from __future__ import annotations

from lepton_nb._lazy import lazy_submodules

__version__ = "0.1.0"

_SUBMODULES = (
    "cli",
    "data",
    "distributed",
    "explain",
    "execution",
    "export",
    "federated",
    "features",
    "metrics",
    "models",
    "notebook_checks",
    "optimization",
    "plotting",
    "privacy",
    "reports",
    "settings",
    "stories",
    "summary_file",
    "timing",
    "training",
)

__all__ = ["__version__", *_SUBMODULES]

__getattr__, __dir__ = lazy_submodules(__name__, _SUBMODULES, globals())
