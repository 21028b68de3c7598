"""Federated runs of CNN-family models on one data set, with TFF's slow builds done once.

Building a TFF learning process traces the model several times (seconds each), while local epochs,
batch size, clients per round and the client split are properties of the data fed to a round; so a
:class:`Simulation` builds each model's task and federated evaluator once, each FedAvg process once
per optimizer setting, and reuses them across runs. Every run is kept in ``runs`` for one table.
"""

from __future__ import annotations

import numpy as np

from lepton_nb.data import Dataset
from lepton_nb.federated import algorithms, client_data, loop
from lepton_nb.federated.settings import DPFedAvgConfig, FedAvgConfig
from lepton_nb.settings import CNNConfig

__all__ = ["Simulation"]


class Simulation:
    """Federated training of CNN-family models over clients holding parts of ``data``'s training split.

    Args:
        data: the loaded data set; its test split is the held-out evaluation set of every run.
        progress: progress bars over rounds.
        tensorboard: write each run's per-round history under ``reports/tensorboard/<run name>``.
    """

    def __init__(self, data: Dataset, *, progress: bool = True, tensorboard: bool = True):
        self.data, self.progress, self.tensorboard = data, progress, tensorboard
        self.runs: dict[str, loop.FederatedRun] = {}
        self._tasks: dict = {}
        self._evaluators: dict = {}
        self._processes: dict = {}

    def task(self, cnn: CNNConfig) -> algorithms.Task:
        """The checked TFF task of the CNN ``cnn`` (built once per architecture)."""
        from lepton_nb.models import build_cnn

        if cnn not in self._tasks:
            shape, k = self.data.input_shape, self.data.num_classes

            def build():  # a named function: AutoGraph cannot read the source of a lambda among others
                return build_cnn(cnn, input_shape=shape, num_classes=k)

            self._tasks[cnn] = algorithms.task(build, shape, k)
        return self._tasks[cnn]

    def evaluator(self, cnn: CNNConfig, test_clients: int, seed: int = 0) -> loop.Evaluator:
        """Federated evaluation of ``cnn`` on the test split over ``test_clients`` clients (built once)."""
        key = (cnn, test_clients, seed)
        if key not in self._evaluators:
            self._evaluators[key] = loop.Evaluator(self.task(cnn), self.data.x_test, self.data.y_test,
                                                   test_clients=test_clients, seed=seed)
        return self._evaluators[key]

    def split(self, num_clients: int, *, alpha: float | None = None, shards_per_client: int | None = None,
              min_size: int = 1, seed: int = 0) -> client_data.FederatedData:
        """The training split over ``num_clients`` clients: IID, Dirichlet(``alpha``) or label shards.

        Raises:
            ValueError: more clients (of ``min_size`` examples) than training examples, before any work.
        """
        if num_clients * min_size > len(self.data.y_train):
            raise ValueError(f"{num_clients} clients of at least {min_size} examples need more than the "
                             f"{len(self.data.y_train)} training examples; use fewer clients or a smaller min_size")
        return client_data.federate(self.data, num_clients, alpha=alpha, shards_per_client=shards_per_client,
                                    seed=seed, min_size=min_size)

    def _run(self, name: str, process, cnn: CNNConfig, clients, cfg: FedAvgConfig, *, context: str = "native",
             **extra) -> loop.FederatedRun:
        run = loop.run(process, clients, cfg, task=self.task(cnn), evaluator=self.evaluator(cnn, cfg.test_clients,
                                                                                             cfg.seed),
                       name=name, context=context, progress=self.progress, tensorboard=self.tensorboard)
        run.extra.update(extra)
        self.runs[name] = run
        return run

    def fedavg(self, cnn: CNNConfig, clients: client_data.FederatedData, cfg: FedAvgConfig, *,
               name: str = "fedavg") -> loop.FederatedRun:
        """FedAvg (:func:`lepton_nb.federated.algorithms.fedavg`) of ``cnn`` over ``clients``.

        Runs with the same model and optimizers share one built process, whatever their split,
        rounds, clients per round, local epochs or batch size.
        """
        key = (cnn, cfg.client.optimizer, cfg.client.learning_rate, cfg.client.momentum, cfg.server_learning_rate,
               cfg.server_momentum, cfg.seed)
        if key not in self._processes:
            self._processes[key] = algorithms.fedavg(self.task(cnn), cfg)
        return self._run(name, self._processes[key], cnn, clients, cfg)

    def dp_fedavg(self, cnn: CNNConfig, clients: client_data.FederatedData, cfg: FedAvgConfig, dp: DPFedAvgConfig,
                  *, name: str = "dp_fedavg") -> loop.FederatedRun:
        """DP-FedAvg of ``cnn`` over ``clients``, its user-level epsilon (one client is the unit) in ``extra``.

        The epsilon is accounted for the rounds run, ``dp.sampling`` and ``dp.target_delta``
        (:func:`lepton_nb.federated.accounting.dp_fedavg_epsilon`).
        """
        from lepton_nb.federated.accounting import dp_fedavg_epsilon

        delta = dp.target_delta(clients.num_clients)
        process = algorithms.dp_fedavg(self.task(cnn), cfg, dp)
        params = int(sum(np.prod(v.shape) for v in self.task(cnn).build().trainable_variables))
        run = self._run(name, process, cnn, clients, cfg, delta=delta, noise_multiplier=dp.noise_multiplier,
                        sampling=dp.sampling, params=params)
        rounds = int(run.history["round"].max())
        # not rounded: a rounded-down figure could understate the guarantee
        run.extra["epsilon"] = dp_fedavg_epsilon(dp.noise_multiplier, cfg.clients_per_round, clients.num_clients,
                                                 rounds, delta, sampling=dp.sampling)
        return run

    def secure_fedavg(self, cnn: CNNConfig, clients: client_data.FederatedData, cfg: FedAvgConfig, *,
                      name: str = "secure_fedavg") -> loop.FederatedRun:
        """FedAvg with ``tff.learning.secure_aggregator`` in TFF's test context (no cryptography)."""
        process = algorithms.secure_fedavg(self.task(cnn), cfg)
        return self._run(name, process, cnn, clients, cfg, context="test",
                         execution="TFF test context: secure sums replaced by plain sums (no cryptography)")

    def table(self):
        """Every run so far, one row each (:meth:`~lepton_nb.federated.loop.FederatedRun.summary`)."""
        import pandas as pd

        return pd.DataFrame({name: r.summary() for name, r in self.runs.items()}).T

