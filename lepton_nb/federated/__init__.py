"""Federated learning with TensorFlow Federated 0.87: simulated clients, FedAvg, DP-FedAvg,
secure aggregation (simulated), federated evaluation, clean worker-process handling.

Submodules (TFF is imported only when a function needs it)::

    config       FederatedConfig / FedAvgConfig / ClientConfig / DPConfig, federated() by mode
    client_data  federate(ds, num_clients, alpha=...) -> FederatedData (a TFF ClientData inside)
    algorithms   task(build, image_shape), fedavg, dp_fedavg, secure_fedavg, fed_eval
    loop         run(process, data, cfg, task=..., evaluator=...) -> FederatedRun; Evaluator
    accounting   dp_fedavg_epsilon(...): user-level epsilon via dp_accounting
    runtime      the managed TFF worker: context(), remote_context(), shutdown()
    experiments  the notebook's comparisons (centralized vs IID vs non-IID, sweeps, DP, secure)
    render       matplotlib figures of the above
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("accounting", "algorithms", "client_data", "config", "experiments", "loop", "render", "runtime")

__all__ = list(_SUBMODULES)


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'lepton_nb.federated' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
