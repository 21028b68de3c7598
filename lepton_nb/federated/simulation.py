"""Federated runs of CNN-family models on one data set, with TFF's slow builds done once.

Building a TFF learning process traces the model several times (seconds each), while local epochs,
batch size, clients per round and the client split are properties of the data fed to a round; so a
:class:`Simulation` builds each model's task and federated evaluator once, each process once per
algorithm and optimizer setting, and reuses them across runs. Every run is kept in ``runs`` for
one table. With ``state_root`` each run saves its state after every round under
``state_root/<run name>`` and a repeated call resumes it (:func:`lepton_nb.federated.loop.run`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from lepton_nb.data import Dataset
from lepton_nb.federated import algorithms, client_data, loop, sampling
from lepton_nb.federated.settings import DPFedAvgConfig, FedAvgConfig
from lepton_nb.settings import CNNConfig

__all__ = ["Simulation"]


class Simulation:
    """Federated training of CNN-family models over clients holding parts of ``data``'s training split.

    Args:
        data: the loaded data set; its test split is the held-out evaluation set of every run.
        progress: progress bars over rounds.
        tensorboard: write each run's per-round history under ``reports/tensorboard/``.
        state_root: save each run's server state after every round under ``state_root/<run name>``
            and resume from it (``None``: no saving).
    """

    def __init__(self, data: Dataset, *, progress: bool = True, tensorboard: bool = True,
                 state_root: str | Path | None = None):
        self.data, self.progress, self.tensorboard = data, progress, tensorboard
        self.state_root = Path(state_root) if state_root is not None else None
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
              min_size: int = 1, seed: int = 0, holdout: float = 0.0) -> client_data.FederatedData:
        """The training split over ``num_clients`` clients: IID, Dirichlet(``alpha``) or label shards,
        each client holding ``holdout`` of its examples out of training.

        Raises:
            ValueError: more clients (of ``min_size`` examples) than training examples, before any work.
        """
        if num_clients * min_size > len(self.data.y_train):
            raise ValueError(f"{num_clients} clients of at least {min_size} examples need more than the "
                             f"{len(self.data.y_train)} training examples; use fewer clients or a smaller min_size")
        return client_data.federate(self.data, num_clients, alpha=alpha, shards_per_client=shards_per_client,
                                    seed=seed, min_size=min_size, holdout=holdout)

    def state_dir(self, name: str) -> Path | None:
        """Where run ``name`` saves its state (``None`` without ``state_root``)."""
        return self.state_root / loop.slug(name) if self.state_root is not None else None

    def clear_states(self) -> int:
        """Delete the saved states of every run (after a completed notebook); returns how many folders."""
        if self.state_root is None or not self.state_root.exists():
            return 0
        folders = [p for p in self.state_root.iterdir() if p.is_dir()]
        for p in folders:
            shutil.rmtree(p)
        return len(folders)

    def _run(self, name: str, process, cnn: CNNConfig, clients, cfg: FedAvgConfig, *, state_dir=None,
             **kw) -> loop.FederatedRun:
        run = loop.run(process, clients, cfg, task=self.task(cnn), evaluator=self.evaluator(cnn, cfg.test_clients,
                                                                                             cfg.seed),
                       name=name, progress=self.progress, tensorboard=self.tensorboard,
                       state_dir=state_dir if state_dir is not None else self.state_dir(name), **kw)
        self.runs[name] = run
        return run

    def process(self, cnn: CNNConfig, cfg: FedAvgConfig):
        """The learning process of ``cfg.algorithm`` for ``cnn`` (built once per optimizer setting)."""
        a = cfg.algorithm
        key = (cnn, cfg.client.optimizer, cfg.client.learning_rate, cfg.client.momentum, a,
               cfg.rounds if a.client_schedule else None, cfg.seed)
        if key not in self._processes:
            self._processes[key] = algorithms.fedavg(self.task(cnn), cfg)
        return self._processes[key]

    def fedavg(self, cnn: CNNConfig, clients: client_data.FederatedData, cfg: FedAvgConfig, *,
               name: str = "fedavg", context="native", state_dir: str | Path | None = None) -> loop.FederatedRun:
        """FedAvg, or the relative named by ``cfg.algorithm``, of ``cnn`` over ``clients``.

        Runs with the same model, optimizers and algorithm share one built process, whatever their
        split, rounds, clients per round, local epochs or batch size. ``state_dir`` overrides where
        the run saves its state (default: under ``state_root``, or nowhere).
        """
        return self._run(name, self.process(cnn, cfg), cnn, clients, cfg, context=context, state_dir=state_dir)

    def dp_fedavg(self, cnn: CNNConfig, clients: client_data.FederatedData, cfg: FedAvgConfig, dp: DPFedAvgConfig,
                  *, name: str = "dp_fedavg") -> loop.FederatedRun:
        """DP-FedAvg of ``cnn`` over ``clients``, with its user-level epsilon (one client is the unit).

        The loop samples the clients as ``dp.sampling`` says (Poisson with q = clients_per_round /
        num_clients by default, from OS entropy unless ``dp.sampling_seed`` is set), releases no
        client metric and no evaluation on the clients' data, and the epsilon is accounted for that
        sampling, its neighbouring relation and the rounds run
        (:func:`lepton_nb.federated.accounting.account`); ``run.extra`` holds it with what it covers.
        """
        from lepton_nb.federated.accounting import account

        n = clients.num_clients
        delta = dp.target_delta(n)
        if dp.sampling == "poisson":
            sampler = sampling.PoissonSampler(n, cfg.clients_per_round / n, seed=dp.sampling_seed)
        else:
            sampler = sampling.uniform(n, cfg.clients_per_round, dp.sampling_seed)
        process = algorithms.dp_fedavg(self.task(cnn), cfg, dp)
        run = self._run(name, process, cnn, clients, cfg, sampler=sampler, private=True)
        rounds = int(run.history["round"].max())
        eps = account(dp.noise_multiplier, cfg.clients_per_round, n, rounds, delta, sampling=dp.sampling)
        params = int(sum(np.prod(v.shape) for v in self.task(cnn).build().trainable_variables))
        run.extra.update({
            # not rounded: a rounded-down figure could understate the guarantee
            "epsilon": eps.epsilon, "epsilon_rdp": eps.rdp, "epsilon_pld": eps.pld, "delta": delta,
            "neighbouring": eps.relation, "sampling": f"{sampler.kind}, q = {cfg.clients_per_round / n:.4g}"
            if dp.sampling == "poisson" else f"{sampler.kind}, {cfg.clients_per_round} of {n}",
            "noise_multiplier": dp.noise_multiplier, "params": params,
            "randomness": "private (OS entropy)" if dp.private else "reproducible, not private",
            "epsilon_covers": "the global model after every round and the server measurements derived from the "
                              "noised sum; no client training metric, client count or evaluation on client data "
                              "is released"})
        return run

    def secure_fedavg(self, cnn: CNNConfig, clients: client_data.FederatedData, cfg: FedAvgConfig, *,
                      name: str = "secure_fedavg") -> loop.FederatedRun:
        """FedAvg with every client value securely summed, in TFF's test context (no cryptography).

        ``run.extra`` holds the check of the whole ``next`` computation
        (:func:`lepton_nb.federated.dataflow.only_secure_sums`).
        """
        from lepton_nb.federated.dataflow import only_secure_sums

        most = int(clients.sizes.max()) * cfg.client.local_epochs
        process = algorithms.secure_fedavg(self.task(cnn), cfg, max_examples_per_client=most)
        check = only_secure_sums(process.next)
        run = self._run(name, process, cnn, clients, cfg, context="test")
        run.extra.update({"execution": "TFF test context: secure sums replaced by plain sums (simulated, no "
                                       "cryptography)",
                          "client_to_server_calls": len(check["calls"]),
                          "client_to_server_intrinsics": check["intrinsics"],
                          "only_secure_sums": check["ok"]})
        return run

    def table(self):
        """Every run so far, one row each (:meth:`~lepton_nb.federated.loop.FederatedRun.summary`)."""
        import pandas as pd

        return pd.DataFrame({name: r.summary() for name, r in self.runs.items()}).T
