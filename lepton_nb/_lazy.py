"""Submodules imported on first attribute access (PEP 562), shared by the package ``__init__`` files.

``__getattr__, __dir__ = lazy_submodules(__name__, ("data", "models"), globals())`` in a package
makes ``package.data`` import ``package.data`` when first used, so importing the package stays
light (no TensorFlow) and a missing optional library fails where it is needed.
"""

from __future__ import annotations

import importlib
from typing import Callable, Iterable


def lazy_submodules(package: str, names: Iterable[str], namespace: dict) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package`` that import the submodules ``names`` on first use."""
    known = tuple(names)

    def __getattr__(name: str):
        if name in known:
            module = importlib.import_module(f"{package}.{name}")
            namespace[name] = module
            return module
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace.get("__all__", ())) | set(known))

    return __getattr__, __dir__
