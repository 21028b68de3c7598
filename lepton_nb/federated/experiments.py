"""The comparisons of notebook 04, one method each, sharing built TFF processes.

Building a TFF learning process traces the model several times (seconds each), while local
epochs, batch size, clients per round and the data split are properties of the data fed to a
round; so one :class:`Experiment` builds each process once and reuses it across runs.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import numpy as np

from lepton_nb.data import Dataset
from lepton_nb.federated import algorithms, client_data, loop
from lepton_nb.federated.config import FederatedConfig

__all__ = ["Experiment", "comparison_markdown", "dp_markdown"]


class Experiment:
    """Federated runs on one data set with one :class:`~lepton_nb.federated.config.FederatedConfig`.

    Args:
        data: the loaded data set (its training split is spread over clients; its test split is
            the held-out evaluation set).
        cfg: every setting of the notebook.
        progress: progress bars over rounds.
    """

    def __init__(self, data: Dataset, cfg: FederatedConfig, *, progress: bool = True):
        n = cfg.fedavg.num_clients
        if n > len(data.y_train):
            raise ValueError(f"num_clients={n} exceeds the {len(data.y_train)} training examples")
        self.data, self.cfg, self.progress = data, cfg, progress
        self.runs: dict[str, loop.FederatedRun] = {}
        self._tasks: dict = {}
        self._evaluators: dict = {}

    # ----------------------------------------------------------------------------- building blocks
    def _build(self, cnn) -> algorithms.Task:
        """The (checked) task of the CNN ``cnn``, built once per architecture."""
        from lepton_nb.models import build_cnn

        if cnn not in self._tasks:
            shape, k = self.data.input_shape, self.data.num_classes
            self._tasks[cnn] = algorithms.task(lambda: build_cnn(cnn, input_shape=shape, num_classes=k), shape, k)
        return self._tasks[cnn]

    def _evaluator(self, cnn, test_clients: int) -> loop.Evaluator:
        """Federated evaluation for the CNN ``cnn`` (one ``build_fed_eval`` per architecture)."""
        key = (cnn, test_clients)
        if key not in self._evaluators:
            self._evaluators[key] = loop.Evaluator(self._build(cnn), self.data.x_test, self.data.y_test,
                                                   test_clients=test_clients, seed=self.cfg.fedavg.seed)
        return self._evaluators[key]

    @cached_property
    def task(self) -> algorithms.Task:
        """The model of the FedAvg runs (``cfg.model``, checked once)."""
        return self._build(self.cfg.model)

    @cached_property
    def process(self):
        """The FedAvg process, shared by the IID, non-IID and sweep runs."""
        return algorithms.fedavg(self.task, self.cfg.fedavg)

    @cached_property
    def evaluator(self) -> loop.Evaluator:
        """Federated evaluation of the FedAvg model on the test split."""
        return self._evaluator(self.cfg.model, self.cfg.fedavg.test_clients)

    def split(self, kind: str = "iid", num_clients: int | None = None) -> client_data.FederatedData:
        """The training split over clients: "iid", "dirichlet" (``cfg.alpha``) or "shards"."""
        n = num_clients or self.cfg.fedavg.num_clients
        seed = self.cfg.fedavg.seed
        if kind == "iid":
            return client_data.federate(self.data, n, seed=seed)
        if kind == "dirichlet":
            return client_data.federate(self.data, n, alpha=self.cfg.alpha, seed=seed)
        if kind == "shards":
            return client_data.federate(self.data, n, shards_per_client=self.cfg.shards_per_client, seed=seed)
        raise ValueError(f"split {kind!r}: choose 'iid', 'dirichlet' or 'shards'")

    def splits(self) -> dict[str, client_data.FederatedData]:
        """The three splits, keyed by their names (e.g. "dirichlet(0.5)")."""
        out = [self.split(k) for k in ("iid", "dirichlet", "shards")]
        return {fd.split: fd for fd in out}

    def _run(self, name: str, process, data, cfg, *, task=None, evaluator=None, context="native", **extra):
        run = loop.run(process, data, cfg, task=task or self.task, evaluator=evaluator or self.evaluator,
                       name=name, context=context, progress=self.progress)
        run.extra.update(extra)
        self.runs[name] = run
        return run

    # ------------------------------------------------------------------------------------- runs
    def centralized(self):
        """The same model trained centrally with :func:`lepton_nb.training.train` (all data pooled)."""
        from lepton_nb.models import build_cnn
        from lepton_nb.training import train

        shape, k = self.data.input_shape, self.data.num_classes
        return train(lambda: build_cnn(self.cfg.model, input_shape=shape, num_classes=k), self.data,
                     self.cfg.centralized, data_cfg=self.cfg.data, name="centralized")

    def fedavg(self, kind: str = "iid", **overrides) -> loop.FederatedRun:
        """FedAvg on the ``kind`` split; ``overrides`` replace fields of ``cfg.fedavg``."""
        cfg = replace(self.cfg.fedavg, **overrides)
        data = self.split(kind, cfg.num_clients)
        name = f"fedavg_{data.split}" + "".join(f"_{k}{v}" for k, v in overrides.items())
        return self._run(name, self.process, data, cfg)

    def sweep_local_epochs(self) -> dict[int, loop.FederatedRun]:
        """FedAvg IID for each E in ``cfg.local_epochs_grid``, ``cfg.sweep_rounds`` rounds each."""
        data = self.split("iid")
        out = {}
        for e in self.cfg.local_epochs_grid:
            cfg = replace(self.cfg.fedavg, rounds=self.cfg.sweep_rounds, eval_every=self.cfg.sweep_rounds,
                          client=replace(self.cfg.fedavg.client, local_epochs=e))
            out[e] = self._run(f"sweep_E{e}", self.process, data, cfg)
        return out

    def sweep_clients_per_round(self) -> dict[int, loop.FederatedRun]:
        """FedAvg IID for each clients-per-round value in ``cfg.clients_per_round_grid``."""
        data = self.split("iid")
        out = {}
        for k in self.cfg.clients_per_round_grid:
            cfg = replace(self.cfg.fedavg, rounds=self.cfg.sweep_rounds, eval_every=self.cfg.sweep_rounds,
                          clients_per_round=k)
            out[k] = self._run(f"sweep_K{k}", self.process, data, cfg)
        return out

    def dp_fedavg(self) -> loop.FederatedRun:
        """DP-FedAvg on an IID split (``cfg.dp``), with its user-level epsilon in ``run.extra``."""
        from lepton_nb.federated.accounting import dp_fedavg_epsilon

        dp = self.cfg.dp
        t = self._build(dp.model)
        process = algorithms.dp_fedavg(t, dp)
        evaluator = self._evaluator(dp.model, dp.fedavg.test_clients)
        data = self.split("iid", dp.fedavg.num_clients)
        eps = dp_fedavg_epsilon(dp.noise_multiplier, dp.fedavg.clients_per_round, dp.fedavg.num_clients,
                                dp.fedavg.rounds, dp.target_delta, sampling=dp.sampling)
        return self._run("dp_fedavg", process, data, dp.fedavg, task=t, evaluator=evaluator,
                         epsilon=round(eps, 2), delta=dp.target_delta, noise_multiplier=dp.noise_multiplier,
                         sampling=dp.sampling, params=int(sum(np.prod(v.shape) for v in t.build().trainable_variables)))

    def dp_epsilon_curve(self) -> list[float]:
        """User-level epsilon after each round of the DP run (``cfg.dp``)."""
        from lepton_nb.federated.accounting import epsilon_curve

        dp = self.cfg.dp
        return epsilon_curve(dp.noise_multiplier, dp.fedavg.clients_per_round, dp.fedavg.num_clients,
                             dp.fedavg.rounds, dp.target_delta, sampling=dp.sampling)

    def dp_non_private(self) -> loop.FederatedRun:
        """The DP run's model and population without noise or clipping (its utility ceiling)."""
        dp = self.cfg.dp
        t = self._build(dp.model)
        evaluator = self._evaluator(dp.model, dp.fedavg.test_clients)
        cfg = dp.fedavg
        return self._run("dp_model_no_noise", algorithms.fedavg(t, cfg), self.split("iid", cfg.num_clients), cfg,
                         task=t, evaluator=evaluator)

    def secure(self) -> loop.FederatedRun:
        """FedAvg with ``tff.learning.secure_aggregator`` in TFF's test context (no cryptography)."""
        cfg = replace(self.cfg.fedavg, rounds=self.cfg.secure_rounds, eval_every=self.cfg.secure_rounds)
        process = algorithms.secure_fedavg(self.task, cfg)
        return self._run("secure_fedavg", process, self.split("iid"), cfg, context="test",
                         execution="TFF test context: secure sums replaced by plain sums (no cryptography)")

    def secure_signature(self) -> dict:
        """What the server receives under secure aggregation, from the aggregator's type signature."""
        return algorithms.secure_aggregation_signature(self.task)

    def table(self):
        """Every run so far, one row each (:meth:`FederatedRun.summary`)."""
        import pandas as pd

        return pd.DataFrame({name: r.summary() for name, r in self.runs.items()}).T


# ---------------------------------------------------------------------------------- prose from runs


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def comparison_markdown(central_accuracy: float, iid: loop.FederatedRun, non_iid: loop.FederatedRun,
                        target: float) -> str:
    """A paragraph comparing centralized, FedAvg IID and non-IID, every number from the runs."""
    def reach(run):
        r = run.rounds_to(target)
        return f"reached {_pct(target)} at round {r}" if r else f"did not reach {_pct(target)} in {len(run.history)} rounds"

    c = iid.config
    gap = 100 * (central_accuracy - iid.test_accuracy)
    return (f"Centralized training reached **{_pct(central_accuracy)}**. FedAvg over {c.num_clients} clients, "
            f"{c.clients_per_round} per round, E = {c.client.local_epochs}, B = {c.client.batch_size}, reached "
            f"**{_pct(iid.test_accuracy)}** on the IID split after {len(iid.history)} rounds ({abs(gap):.1f} points "
            f"{'below' if gap >= 0 else 'above'} centralized) and **{_pct(non_iid.test_accuracy)}** on the {non_iid.data_split} split. "
            f"IID {reach(iid)}; non-IID {reach(non_iid)}. A round took {iid.steady_round_seconds:.2f} s "
            f"(median after the first, which includes TFF's tracing).")


def dp_markdown(dp_run: loop.FederatedRun, reference: loop.FederatedRun | None = None) -> str:
    """A paragraph on the DP-FedAvg run: epsilon, delta, sampling, accuracy; numbers from the run."""
    e, c = dp_run.extra, dp_run.config
    text = (f"DP-FedAvg with noise multiplier {e['noise_multiplier']:g}, {c.clients_per_round} of {c.num_clients} "
            f"clients per round for {len(dp_run.history)} rounds gives **user-level epsilon = {e['epsilon']:.2f}** at "
            f"delta = {e['delta']:.2g} ({e['sampling']} sampling, RDP accounting with dp_accounting), and a test "
            f"accuracy of **{_pct(dp_run.test_accuracy)}** with a {e['params']:,}-parameter model")
    if reference is not None:
        text += f" (the same model and clients without noise or clipping: {_pct(reference.test_accuracy)})"
    return text + (". Epsilon protects a whole client (all its images), not one image; with this few clients the "
                   "noise on the mean is large, so meaningful epsilons (below 10) need thousands of clients per round "
                   "(McMahan et al. 2018 used about 100 of 763,000).")
