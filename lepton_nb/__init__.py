"""lepton_nb: notebooks and a library for fast, private and explainable image models.

Submodules are imported on first use (PEP 562), so ``import lepton_nb`` does not import
TensorFlow, and a missing optional piece fails where it is used::

    import lepton_nb as ln
    ds = ln.data.load("fashion-mnist")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "case_study",
    "cli",
    "config",
    "data",
    "distributed",
    "explain",
    "export",
    "federated",
    "metrics",
    "models",
    "plotting",
    "privacy",
    "reports",
    "training",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'lepton_nb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
