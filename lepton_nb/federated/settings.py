"""Settings of federated runs: local training, the algorithm, FedAvg, DP-FedAvg (frozen dataclasses).

Importing this module does not import TensorFlow or TFF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lepton_nb.settings import SettingsError

__all__ = ["ALGORITHMS", "AlgorithmConfig", "ClientConfig", "DPFedAvgConfig", "FEDADAGRAD", "FEDADAM", "FEDAVG",
           "FEDAVGM", "FEDAVG_COSINE", "FEDPROX", "FEDYOGI", "FedAvgConfig"]


@dataclass(frozen=True)
class ClientConfig:
    """Local training on each client (the FedAvg paper's E and B, McMahan et al. 2017).

    Attributes:
        local_epochs: passes over its own data a client makes per round (E).
        batch_size: local minibatch size (B).
        optimizer: "sgdm" (``tff.learning.optimizers.build_sgdm``) or "adam" (``build_adam``);
            TFF 0.87 no longer takes Keras optimizers.
        learning_rate: the client optimizer's step size (the start of a schedule, if the
            algorithm has one).
        momentum: SGD momentum (0 = plain SGD, as in FedAvg).
        shuffle_buffer: examples shuffled per client per round (``None``: the whole client).
    """

    local_epochs: int = 1
    batch_size: int = 20
    optimizer: Literal["sgdm", "adam"] = "sgdm"
    learning_rate: float = 0.05
    momentum: float = 0.0
    shuffle_buffer: int | None = None

    def __post_init__(self) -> None:
        if self.local_epochs < 1:
            raise SettingsError(f"ClientConfig.local_epochs={self.local_epochs}: each client needs at least one local epoch")
        if self.batch_size < 1:
            raise SettingsError(f"ClientConfig.batch_size={self.batch_size}: use a positive batch size")
        if self.optimizer not in ("sgdm", "adam"):
            raise SettingsError(f"ClientConfig.optimizer={self.optimizer!r}: choose 'sgdm' or 'adam' "
                             "(TFF optimizers; Keras optimizers are not accepted by TFF 0.87)")
        if not self.learning_rate > 0:
            raise SettingsError(f"ClientConfig.learning_rate={self.learning_rate}: must be positive")
        if not 0 <= self.momentum < 1:
            raise SettingsError(f"ClientConfig.momentum={self.momentum}: use a value in [0, 1)")


@dataclass(frozen=True)
class AlgorithmConfig:
    """The federated algorithm: what the server does with the clients' mean update, and FedProx.

    FedAvg (McMahan et al. 2017) applies the mean update with SGD at learning rate 1. The
    relatives TFF 0.87 builds:

    - FedAvgM (Hsu et al. 2019): server SGD with momentum (``server_momentum`` > 0);
    - FedAdam, FedYogi, FedAdagrad (Reddi et al. 2021, "Adaptive Federated Optimization"): the
      mean update is a pseudo-gradient for an adaptive server optimizer (``build_adam`` /
      ``build_yogi`` / ``build_adagrad``), with the paper's betas (0.9, 0.999) and initial
      second moment 0 (TFF's own defaults differ: Adam epsilon 1e-7, Adagrad accumulator 0.1,
      Yogi accumulator 1e-6, so they are set explicitly);
    - FedProx (Li et al. 2020): clients minimise loss + mu / 2 * ||w - w_global||^2
      (:class:`lepton_nb.federated.proximal.ProximalOptimizer` on TFF's FedAvg: TFF 0.87's
      ``build_weighted_fed_prox`` has the proximal term's sign reversed);
    - a client learning-rate schedule over the rounds (``build_weighted_fed_avg_with_optimizer_schedule``).

    Attributes:
        name: label in tables and figures.
        server_optimizer: "sgd", "adam", "yogi" or "adagrad".
        server_learning_rate: the server optimizer's step size (1.0 with "sgd" = plain FedAvg).
        server_momentum: momentum of the "sgd" server optimizer (0 = FedAvg, > 0 = FedAvgM).
        epsilon: the adaptive optimizers' epsilon (Reddi et al.: 1e-4 Adam/Yogi, 1e-2 Adagrad).
        proximal_strength: FedProx's mu (0 = not FedProx).
        client_schedule: ``None``, or "cosine": the client learning rate decays from
            ``ClientConfig.learning_rate`` to a tenth of it over the run's rounds.
    """

    name: str = "FedAvg"
    server_optimizer: Literal["sgd", "adam", "yogi", "adagrad"] = "sgd"
    server_learning_rate: float = 1.0
    server_momentum: float = 0.0
    epsilon: float = 1e-4
    proximal_strength: float = 0.0
    client_schedule: Literal["cosine"] | None = None

    def __post_init__(self) -> None:
        if self.server_optimizer not in ("sgd", "adam", "yogi", "adagrad"):
            raise SettingsError(f"AlgorithmConfig.server_optimizer={self.server_optimizer!r}: choose 'sgd', 'adam', "
                                "'yogi' or 'adagrad'")
        if not self.server_learning_rate > 0:
            raise SettingsError(f"AlgorithmConfig.server_learning_rate={self.server_learning_rate}: must be positive")
        if not 0 <= self.server_momentum < 1:
            raise SettingsError(f"AlgorithmConfig.server_momentum={self.server_momentum}: use a value in [0, 1)")
        if self.server_momentum and self.server_optimizer != "sgd":
            raise SettingsError("AlgorithmConfig.server_momentum applies to the 'sgd' server optimizer only; "
                                "Adam and Yogi have their own betas")
        if not self.epsilon > 0:
            raise SettingsError(f"AlgorithmConfig.epsilon={self.epsilon}: must be positive")
        if self.proximal_strength < 0:
            raise SettingsError(f"AlgorithmConfig.proximal_strength={self.proximal_strength}: FedProx's mu is >= 0")
        if self.client_schedule not in (None, "cosine"):
            raise SettingsError(f"AlgorithmConfig.client_schedule={self.client_schedule!r}: choose None or 'cosine'")
        if self.client_schedule and self.proximal_strength:
            raise SettingsError("AlgorithmConfig: TFF 0.87 has no FedProx builder with a learning-rate schedule; "
                                "set proximal_strength=0 or client_schedule=None")

    @property
    def is_plain_fedavg(self) -> bool:
        """True for FedAvg itself (server SGD at learning rate 1, no momentum, no FedProx, no schedule)."""
        return (self.server_optimizer == "sgd" and self.server_learning_rate == 1.0 and not self.server_momentum
                and not self.proximal_strength and self.client_schedule is None)


# Presets for a horizon of tens to a hundred rounds. Reddi et al.'s tuned EMNIST-CR rates (client
# 10^-1.5, Adam/Yogi server 10^-2.5) were tuned for 1,500 rounds and learn too slowly here; these
# keep FedAvg's client learning rate (ClientConfig.learning_rate) and use server rates near
# Reddi et al.'s, chosen on the clients' held-out data of the bundled sample (not on the test set).
# FedProx's mu is the middle of Li et al.'s grid {0.001, 0.01, 0.1, 1}, not tuned here.
FEDAVG = AlgorithmConfig()
FEDPROX = AlgorithmConfig("FedProx", proximal_strength=0.1)
FEDAVGM = AlgorithmConfig("FedAvgM", server_learning_rate=10 ** -0.5, server_momentum=0.9)
FEDADAGRAD = AlgorithmConfig("FedAdagrad", server_optimizer="adagrad", server_learning_rate=0.1, epsilon=1e-2)
FEDADAM = AlgorithmConfig("FedAdam", server_optimizer="adam", server_learning_rate=0.01, epsilon=1e-4)
FEDYOGI = AlgorithmConfig("FedYogi", server_optimizer="yogi", server_learning_rate=0.01, epsilon=1e-4)
FEDAVG_COSINE = AlgorithmConfig("FedAvg + cosine lr", client_schedule="cosine")

#: Every preset, by name.
ALGORITHMS = {a.name: a for a in (FEDAVG, FEDPROX, FEDAVGM, FEDADAGRAD, FEDADAM, FEDYOGI, FEDAVG_COSINE)}


@dataclass(frozen=True)
class FedAvgConfig:
    """One federated run: the population, the sampling, the algorithm, the evaluation schedule.

    Attributes:
        num_clients: simulated clients (hospitals) the training data is split over (K).
        clients_per_round: clients sampled uniformly without replacement each round (C * K); in
            a DP run with Poisson sampling, the *expected* number (each client joins with
            probability ``clients_per_round / num_clients``).
        rounds: communication rounds.
        client: local training (:class:`ClientConfig`).
        algorithm: the server optimizer, FedProx term and schedule (:class:`AlgorithmConfig`).
        eval_every: evaluate the global model every this many rounds (and after the last round).
        test_clients: the test set is split IID over this many evaluation clients.
        seed: seeds the initial model, the clients' shuffling and (outside DP runs) the client
            sampling; a round's clients and shuffles depend only on (seed, round), so a resumed
            run continues exactly as an uninterrupted one.
    """

    num_clients: int = 20
    clients_per_round: int = 5
    rounds: int = 30
    client: ClientConfig = field(default_factory=ClientConfig)
    algorithm: AlgorithmConfig = FEDAVG
    eval_every: int = 5
    test_clients: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_clients < 1:
            raise SettingsError(f"FedAvgConfig.num_clients={self.num_clients}: need at least one client")
        if not 1 <= self.clients_per_round <= self.num_clients:
            raise SettingsError(f"FedAvgConfig.clients_per_round={self.clients_per_round}: must be between 1 and "
                             f"num_clients={self.num_clients}; sample fewer clients or add clients")
        if self.rounds < 1:
            raise SettingsError(f"FedAvgConfig.rounds={self.rounds}: run at least one round")
        if self.eval_every < 1:
            raise SettingsError(f"FedAvgConfig.eval_every={self.eval_every}: use a positive number of rounds")
        if self.test_clients < 1:
            raise SettingsError(f"FedAvgConfig.test_clients={self.test_clients}: need at least one evaluation client")
        if not isinstance(self.algorithm, AlgorithmConfig):
            raise SettingsError(f"FedAvgConfig.algorithm={self.algorithm!r}: give an AlgorithmConfig, e.g. "
                                "lepton_nb.federated.settings.FEDADAM")

    @property
    def sampling_rate(self) -> float:
        """Fraction of clients taking part in a round (the FedAvg paper's C; Poisson's q)."""
        return self.clients_per_round / self.num_clients


@dataclass(frozen=True)
class DPFedAvgConfig:
    """DP-FedAvg (McMahan et al. 2018): clip each client's update, add Gaussian noise to the sum.

    User-level privacy: one client (all its examples) is the unit protected. The mean is
    unweighted, as TFF's DP aggregators require (``build_unweighted_fed_avg``), and divides by the
    *expected* number of clients per round, a public constant. The population, rounds and local
    training of a DP run are a :class:`FedAvgConfig` beside this one. A DP run releases no client
    training metric (:func:`lepton_nb.federated.algorithms.no_client_metrics`).

    Attributes:
        noise_multiplier: noise standard deviation / clipping norm (z), the *effective* value
            including the privacy spent on adaptive clipping (TFF's convention).
        clipping: "adaptive" (Andrew et al. 2021, geometric update towards a quantile of the
            update norms) or "fixed".
        clip: the initial (adaptive) or the fixed L2 clipping norm of a client update.
        target_quantile: fraction of client updates left unclipped, for adaptive clipping.
        zeroing: must stay False. TFF's zeroing of huge updates adapts its threshold from
            *un-noised* update norms and releases an un-noised count of zeroed updates, which no
            epsilon covers; clipping already bounds every client's contribution.
        delta: the target delta of (epsilon, delta); ``None``: 1 / (10 * number of clients)
            (user-level delta must be well below 1 / number of clients), see :meth:`target_delta`.
        sampling: "poisson" (default; McMahan et al. 2018): each client joins a round
            independently with probability q = clients_per_round / num_clients, accounted under
            add/remove-one-client neighbouring with ``PoissonSampledDpEvent``.
            "without_replacement": exactly clients_per_round clients per round, accounted under
            replace-one-client neighbouring with noise multiplier z / 2 (replacing a client moves
            the sum of clipped updates by up to 2 C).
        sampling_seed: ``None`` (default): the clients of each round are drawn from OS entropy,
            so nobody can recompute who took part. An integer makes the draws reproducible from
            it, and the run is then labelled *reproducible, not private* (for tests and smoke runs).
    """

    noise_multiplier: float = 0.5
    clipping: Literal["adaptive", "fixed"] = "adaptive"
    clip: float = 0.5
    target_quantile: float = 0.5
    zeroing: bool = False
    delta: float | None = None
    sampling: Literal["poisson", "without_replacement"] = "poisson"
    sampling_seed: int | None = None

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0:
            raise SettingsError(f"DPFedAvgConfig.noise_multiplier={self.noise_multiplier}: must be >= 0")
        if self.clipping not in ("adaptive", "fixed"):
            raise SettingsError(f"DPFedAvgConfig.clipping={self.clipping!r}: choose 'adaptive' or 'fixed'")
        if not self.clip > 0:
            raise SettingsError(f"DPFedAvgConfig.clip={self.clip}: the clipping norm must be positive")
        if not 0 < self.target_quantile < 1:
            raise SettingsError(f"DPFedAvgConfig.target_quantile={self.target_quantile}: use a value in (0, 1)")
        if self.zeroing:
            raise SettingsError("DPFedAvgConfig.zeroing=True: TFF's zeroing adapts its threshold from un-noised update "
                                "norms and releases an un-noised count of zeroed updates, which the reported epsilon "
                                "does not cover; keep zeroing=False (clipping already bounds each client's update)")
        if self.delta is not None and not 0 < self.delta < 1:
            raise SettingsError(f"DPFedAvgConfig.delta={self.delta}: use a value in (0, 1), well below 1/num_clients")
        if self.sampling not in ("poisson", "without_replacement"):
            raise SettingsError(f"DPFedAvgConfig.sampling={self.sampling!r}: choose 'poisson' or 'without_replacement'")

    @property
    def private(self) -> bool:
        """False when the client sampling is reproducible from a seed (then the run is not private)."""
        return self.sampling_seed is None

    @property
    def relation(self) -> str:
        """The neighbouring relation the epsilon is stated for."""
        return "add/remove one client" if self.sampling == "poisson" else "replace one client"

    def target_delta(self, num_clients: int) -> float:
        """``delta``, or 1 / (10 * ``num_clients``) when it is ``None``."""
        return self.delta if self.delta is not None else 1.0 / (10 * num_clients)
