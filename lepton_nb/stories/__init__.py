"""The stories the numbered notebooks tell, one module per notebook.

Each module holds its notebook's settings (``get_config(mode=None)``, built with
:func:`lepton_nb.settings.by_mode`), the orchestration and comparisons that would otherwise be
long notebook cells, and the prose built from the run's numbers. A notebook cell calls either the
core library or its own story module; the core library never imports a story.

- :mod:`~lepton_nb.stories.nb01_baselines`: data, the seed's MLP and CNN, the CNN family;
- :mod:`~lepton_nb.stories.nb02_distributed`: strategies, 1 vs N replicas, resume, export;
- :mod:`~lepton_nb.stories.nb03_privacy`: DP-SGD, accounting, budget, schedules, audit, speed;
- :mod:`~lepton_nb.stories.nb04_federated`: FedAvg IID / non-IID, sweeps, DP-FedAvg, secure aggregation;
- :mod:`~lepton_nb.stories.nb05_interpretability`: attributions and the checks beside their controls, training-data
  influence, the distilled surrogate, explorer;
- :mod:`~lepton_nb.stories.nb06_case_study`: all of it on one data set, one final table.
"""

from __future__ import annotations

from lepton_nb._lazy import lazy_submodules

_SUBMODULES = ("nb01_baselines", "nb02_distributed", "nb03_privacy", "nb04_federated", "nb05_interpretability",
               "nb06_case_study")

__all__ = list(_SUBMODULES)

__getattr__, __dir__ = lazy_submodules(__name__, _SUBMODULES, globals())
