"""Federated learning with TensorFlow Federated 0.87: simulated clients, FedAvg, DP-FedAvg,
secure aggregation (simulated), federated evaluation, clean worker-process handling.

Submodules (TFF is imported only when a function needs it)::

    settings     ClientConfig, FedAvgConfig, DPFedAvgConfig
    client_data  federate(ds, num_clients, alpha=...) -> FederatedData (a TFF ClientData inside)
    algorithms   task(build, image_shape), fedavg, dp_fedavg, secure_fedavg, fed_eval
    loop         run(process, data, cfg, task=..., evaluator=...) -> FederatedRun; Evaluator
    simulation   Simulation(ds): cached tasks, processes and evaluators; FedAvg / DP-FedAvg / secure runs
    accounting   dp_fedavg_epsilon(...): user-level epsilon via dp_accounting
    runtime      the managed TFF worker: context(), remote_context(), shutdown()
    plotting     matplotlib figures of the above
"""

from __future__ import annotations

from lepton_nb._lazy import lazy_submodules

_SUBMODULES = ("accounting", "algorithms", "client_data", "loop", "plotting", "runtime", "settings", "simulation")

__all__ = list(_SUBMODULES)

__getattr__, __dir__ = lazy_submodules(__name__, _SUBMODULES, globals())
