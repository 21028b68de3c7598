"""Notebook 04, federated learning: its settings, its comparisons and the prose from their numbers.

The core is :mod:`lepton_nb.federated` (client data, TFF algorithms, the round loop, accounting,
the managed TFF worker, and :class:`~lepton_nb.federated.simulation.Simulation`, which builds each
TFF process once); :class:`Experiment` runs the comparisons notebook 04 shows on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lepton_nb.data import Dataset
from lepton_nb.federated import client_data, loop
from lepton_nb.federated.settings import ClientConfig, DPFedAvgConfig, FedAvgConfig
from lepton_nb.federated.simulation import Simulation
from lepton_nb.settings import SEED_CNN, CNNConfig, DataConfig, Mode, SettingsError, TrainConfig, by_mode

__all__ = ["Experiment", "FederatedConfig", "SECTION", "comparison_markdown", "dp_markdown", "get_config",
           "quality_failures"]

SECTION = "04_federated_learning"


@dataclass(frozen=True)
class FederatedConfig:
    """Notebook 04: centralized vs FedAvg IID / non-IID, sweeps, DP-FedAvg, secure aggregation.

    Attributes:
        data: the data set (bundled sample by default).
        model: the CNN trained everywhere (the seed CNN by default).
        fedavg: the main FedAvg run (IID and non-IID use the same settings).
        alpha: Dirichlet concentration of the non-IID split (Hsu et al. 2019).
        shards_per_client: label shards per client of the pathological split (McMahan et al. 2017).
        local_epochs_grid, clients_per_round_grid: the sweeps (each value one run of
            ``sweep_rounds`` rounds, IID).
        dp: the DP aggregation of the DP-FedAvg run.
        dp_fedavg: its population, clients per round, rounds and local training (DP needs many
            clients per round: the noise on the mean shrinks as 1 / clients_per_round).
        dp_model: its model. The noise vector's norm grows as sqrt(parameters), so a small CNN
            (tanh after Papernot et al. 2021) learns where the 800k-parameter seed CNN drowns in
            noise at this number of clients.
        secure_rounds: rounds of the secure-aggregation run.
        centralized: the centralized baseline trained with :func:`lepton_nb.training.train`.
        target_accuracy: test accuracy whose first round is reported (rounds to target).
        min_iid_accuracy: quality floor (%) of FedAvg IID, checked in default mode.
        max_central_gap: largest gap (points) of FedAvg IID below centralized, checked in full mode.
    """

    mode: Mode = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: CNNConfig = SEED_CNN
    fedavg: FedAvgConfig = field(default_factory=lambda: FedAvgConfig(
        rounds=20, eval_every=2, client=ClientConfig(local_epochs=2, batch_size=20)))
    alpha: float = 0.5
    shards_per_client: int = 2
    local_epochs_grid: tuple[int, ...] = (1, 3)
    clients_per_round_grid: tuple[int, ...] = (2, 10)
    sweep_rounds: int = 6
    dp: DPFedAvgConfig = field(default_factory=DPFedAvgConfig)
    dp_fedavg: FedAvgConfig = field(default_factory=lambda: FedAvgConfig(
        num_clients=60, clients_per_round=20, rounds=15, eval_every=3,
        client=ClientConfig(local_epochs=2, learning_rate=0.1)))
    dp_model: CNNConfig = CNNConfig(filters=8, depth=2, dense_units=0, activation="tanh")
    secure_rounds: int = 3
    centralized: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, early_stopping_patience=4,
                                                                         verbose=0))
    target_accuracy: float = 0.80
    min_iid_accuracy: float | None = 75.0
    max_central_gap: float | None = None

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise SettingsError(f"FederatedConfig.alpha={self.alpha}: the Dirichlet concentration must be > 0 "
                                "(small = more skewed)")
        for k in self.clients_per_round_grid:
            if not 1 <= k <= self.fedavg.num_clients:
                raise SettingsError(f"FederatedConfig.clients_per_round_grid has {k}: must lie in 1.."
                                    f"{self.fedavg.num_clients} (num_clients)")
        if self.sweep_rounds < 1 or self.secure_rounds < 1:
            raise SettingsError("FederatedConfig: sweep_rounds and secure_rounds must be >= 1")
        if not 0 < self.target_accuracy < 1:
            raise SettingsError(f"FederatedConfig.target_accuracy={self.target_accuracy}: a fraction in (0, 1)")


def _smoke() -> FederatedConfig:
    client = ClientConfig(local_epochs=1, batch_size=20)
    tiny = FedAvgConfig(num_clients=6, clients_per_round=3, rounds=2, client=client, eval_every=1, test_clients=2)
    return FederatedConfig(
        data=DataConfig(max_train=600, max_test=300), fedavg=tiny, local_epochs_grid=(2,),
        clients_per_round_grid=(2,), sweep_rounds=1, dp_fedavg=replace(tiny, rounds=1), secure_rounds=1,
        centralized=TrainConfig(epochs=1, early_stopping_patience=None, verbose=0, tensorboard=False),
        target_accuracy=0.3, min_iid_accuracy=None)


def _full() -> FederatedConfig:
    # McMahan et al. 2017's MNIST CNN setting: 100 clients, C = 0.1, E = 5, B = 10.
    client = ClientConfig(local_epochs=5, batch_size=10, learning_rate=0.02)
    return FederatedConfig(
        data=DataConfig(full=True),
        fedavg=FedAvgConfig(num_clients=100, clients_per_round=10, rounds=100, client=client, eval_every=5,
                            test_clients=10),
        local_epochs_grid=(1, 10), clients_per_round_grid=(5, 20), sweep_rounds=20,
        dp=DPFedAvgConfig(noise_multiplier=1.0),
        dp_fedavg=FedAvgConfig(num_clients=1000, clients_per_round=100, rounds=50,
                               client=ClientConfig(local_epochs=1, batch_size=10, learning_rate=0.05), eval_every=10,
                               test_clients=10),
        secure_rounds=10,
        centralized=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4, verbose=0),
        target_accuracy=0.88, min_iid_accuracy=None, max_central_gap=2.0)


def get_config(mode: Mode | None = None) -> FederatedConfig:
    """Settings of notebook 04 for ``mode`` (default: ``LEPTON_NB_SMOKE`` / ``LEPTON_NB_FULL``)."""
    return by_mode(mode, smoke=_smoke, default=FederatedConfig, full=_full)


class Experiment:
    """The runs of notebook 04 on one data set, on one :class:`~lepton_nb.federated.simulation.Simulation`.

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
        self.data, self.cfg = data, cfg
        self.sim = Simulation(data, progress=progress)

    @property
    def runs(self) -> dict[str, loop.FederatedRun]:
        return self.sim.runs

    def split(self, kind: str = "iid", num_clients: int | None = None) -> client_data.FederatedData:
        """The training split over clients: "iid", "dirichlet" (``cfg.alpha``) or "shards"."""
        n = num_clients or self.cfg.fedavg.num_clients
        seed = self.cfg.fedavg.seed
        if kind == "iid":
            return self.sim.split(n, seed=seed)
        if kind == "dirichlet":
            return self.sim.split(n, alpha=self.cfg.alpha, seed=seed)
        if kind == "shards":
            return self.sim.split(n, shards_per_client=self.cfg.shards_per_client, seed=seed)
        raise ValueError(f"split {kind!r}: choose 'iid', 'dirichlet' or 'shards'")

    def splits(self) -> dict[str, client_data.FederatedData]:
        """The three splits, keyed by their names (e.g. "dirichlet(0.5)")."""
        out = [self.split(k) for k in ("iid", "dirichlet", "shards")]
        return {fd.split: fd for fd in out}

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
        return self.sim.fedavg(self.cfg.model, data, cfg, name=name)

    def _sweep_cfg(self, **overrides) -> FedAvgConfig:
        return replace(self.cfg.fedavg, rounds=self.cfg.sweep_rounds, eval_every=self.cfg.sweep_rounds, **overrides)

    def sweep_local_epochs(self) -> dict[int, loop.FederatedRun]:
        """FedAvg IID for each E in ``cfg.local_epochs_grid``, ``cfg.sweep_rounds`` rounds each."""
        data = self.split("iid")
        return {e: self.sim.fedavg(self.cfg.model, data, self._sweep_cfg(
                    client=replace(self.cfg.fedavg.client, local_epochs=e)), name=f"sweep_E{e}")
                for e in self.cfg.local_epochs_grid}

    def sweep_clients_per_round(self) -> dict[int, loop.FederatedRun]:
        """FedAvg IID for each clients-per-round value in ``cfg.clients_per_round_grid``."""
        data = self.split("iid")
        return {k: self.sim.fedavg(self.cfg.model, data, self._sweep_cfg(clients_per_round=k), name=f"sweep_K{k}")
                for k in self.cfg.clients_per_round_grid}

    def dp_fedavg(self) -> loop.FederatedRun:
        """DP-FedAvg on an IID split, with its user-level epsilon in ``run.extra``."""
        cfg = self.cfg.dp_fedavg
        return self.sim.dp_fedavg(self.cfg.dp_model, self.split("iid", cfg.num_clients), cfg, self.cfg.dp)

    def dp_epsilon_curve(self) -> list[float]:
        """User-level epsilon after each round of the DP run."""
        from lepton_nb.federated.accounting import epsilon_curve

        dp, cfg = self.cfg.dp, self.cfg.dp_fedavg
        return epsilon_curve(dp.noise_multiplier, cfg.clients_per_round, cfg.num_clients, cfg.rounds,
                             dp.target_delta(cfg.num_clients), sampling=dp.sampling)

    def dp_non_private(self) -> loop.FederatedRun:
        """The DP run's model and population without noise or clipping (its utility ceiling)."""
        cfg = self.cfg.dp_fedavg
        return self.sim.fedavg(self.cfg.dp_model, self.split("iid", cfg.num_clients), cfg, name="dp_model_no_noise")

    def secure(self) -> loop.FederatedRun:
        """FedAvg with ``tff.learning.secure_aggregator`` in TFF's test context (no cryptography)."""
        cfg = replace(self.cfg.fedavg, rounds=self.cfg.secure_rounds, eval_every=self.cfg.secure_rounds)
        return self.sim.secure_fedavg(self.cfg.model, self.split("iid"), cfg)

    def secure_signature(self) -> dict:
        """What the server receives under secure aggregation, from the aggregator's type signature."""
        from lepton_nb.federated.algorithms import secure_aggregation_signature

        return secure_aggregation_signature(self.sim.task(self.cfg.model))

    def table(self):
        """Every run so far, one row each."""
        return self.sim.table()


def quality_failures(cfg: FederatedConfig, acc: dict[str, float]) -> list[str]:
    """What fails notebook 04's floors (``acc``: run name -> test accuracy %)."""
    failures = []
    if cfg.min_iid_accuracy is not None:
        if acc["fedavg_iid"] < cfg.min_iid_accuracy:
            failures.append(f"FedAvg IID reached {acc['fedavg_iid']} % (< {cfg.min_iid_accuracy} %)")
        if acc["fedavg_iid"] < acc["fedavg_non_iid"] - 2:
            failures.append("non-IID beat IID by more than noise")
    if cfg.max_central_gap is not None and acc["centralized"] - acc["fedavg_iid"] > cfg.max_central_gap:
        failures.append(f"FedAvg IID is {acc['centralized'] - acc['fedavg_iid']:.1f} points below centralized "
                        f"(> {cfg.max_central_gap})")
    return failures


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
