"""Federated learning with TensorFlow Federated 0.87: simulated clients, FedAvg and its relatives
(FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, learning-rate schedules), DP-FedAvg with Poisson
client sampling, secure aggregation (simulated), federated and per-client evaluation, resumable
runs, rounds split over several workers, clean worker-process handling.

Submodules (TFF is imported only when a function needs it)::

    settings     ClientConfig, AlgorithmConfig (+ presets FEDAVG, FEDADAM, ...), FedAvgConfig, DPFedAvgConfig
    client_data  federate(ds, num_clients, alpha=..., holdout=...) -> FederatedData (a TFF ClientData inside)
    algorithms   task(build, image_shape), fedavg, dp_fedavg, secure_fedavg, fed_eval, no_client_metrics
    sampling     uniform(...) (TFF's round-indexed sampler), PoissonSampler (DP runs)
    loop         run(process, data, cfg, ..., state_dir=...) -> FederatedRun (resumable); Evaluator
    simulation   Simulation(ds): cached tasks, processes and evaluators; FedAvg-family / DP / secure runs
    accounting   account(...) / dp_fedavg_epsilon(...): user-level epsilon via dp_accounting
    dataflow     client_to_server_calls, only_secure_sums: what a computation lets leave the clients
    per_client   per-client ("per-hospital") accuracy of a global model, and its spread
    mergeable    one round's clients over several TFF workers (mergeable_context, workers)
    proximal     ProximalOptimizer: FedProx's client step (TFF 0.87's FedProx has the sign reversed)
    runtime      the managed TFF worker: context(), remote_context(), shutdown()
    plotting     matplotlib figures of the above
"""

from __future__ import annotations

from lepton_nb._lazy import lazy_submodules

_SUBMODULES = ("accounting", "algorithms", "client_data", "dataflow", "loop", "mergeable", "per_client", "plotting",
               "proximal", "runtime", "sampling", "settings", "simulation")

__all__ = list(_SUBMODULES)

__getattr__, __dir__ = lazy_submodules(__name__, _SUBMODULES, globals())
