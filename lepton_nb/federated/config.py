"""Settings of the federated runs and notebook 04, with smoke / default / full variants.

``federated()`` returns the :class:`FederatedConfig` of the mode named by the environment
(``LEPTON_NB_SMOKE=1``, ``LEPTON_NB_FULL=1``, else default); override fields with
:func:`dataclasses.replace`. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lepton_nb.config import SEED_CNN, CNNConfig, DataConfig, Mode, TrainConfig, mode

__all__ = ["ClientConfig", "DPConfig", "FedAvgConfig", "FederatedConfig", "federated"]


@dataclass(frozen=True)
class ClientConfig:
    """Local training on each client (the FedAvg paper's E and B, McMahan et al. 2017).

    Attributes:
        local_epochs: passes over its own data a client makes per round (E).
        batch_size: local minibatch size (B).
        optimizer: "sgdm" (``tff.learning.optimizers.build_sgdm``) or "adam" (``build_adam``);
            TFF 0.87 no longer takes Keras optimizers.
        learning_rate: the client optimizer's step size.
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
            raise ValueError(f"ClientConfig.local_epochs={self.local_epochs}: each client needs at least one local epoch")
        if self.batch_size < 1:
            raise ValueError(f"ClientConfig.batch_size={self.batch_size}: use a positive batch size")
        if self.optimizer not in ("sgdm", "adam"):
            raise ValueError(f"ClientConfig.optimizer={self.optimizer!r}: choose 'sgdm' or 'adam' "
                             "(TFF optimizers; Keras optimizers are not accepted by TFF 0.87)")
        if not self.learning_rate > 0:
            raise ValueError(f"ClientConfig.learning_rate={self.learning_rate}: must be positive")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"ClientConfig.momentum={self.momentum}: use a value in [0, 1)")


@dataclass(frozen=True)
class FedAvgConfig:
    """One FedAvg run: the population, the sampling and the server.

    Attributes:
        num_clients: simulated clients (hospitals) the training data is split over (K).
        clients_per_round: clients sampled uniformly without replacement each round (C * K).
        rounds: communication rounds.
        client: local training (:class:`ClientConfig`).
        server_learning_rate: server SGD step on the averaged update (1.0 = plain FedAvg).
        server_momentum: server momentum (0 = plain FedAvg; > 0 is FedAvgM, Hsu et al. 2019).
        eval_every: evaluate the global model on the test set every this many rounds (and after
            the last round).
        test_clients: the test set is split IID over this many evaluation clients.
        seed: seeds client sampling, shuffling and the initial model.
    """

    num_clients: int = 20
    clients_per_round: int = 5
    rounds: int = 30
    client: ClientConfig = field(default_factory=ClientConfig)
    server_learning_rate: float = 1.0
    server_momentum: float = 0.0
    eval_every: int = 5
    test_clients: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_clients < 1:
            raise ValueError(f"FedAvgConfig.num_clients={self.num_clients}: need at least one client")
        if not 1 <= self.clients_per_round <= self.num_clients:
            raise ValueError(f"FedAvgConfig.clients_per_round={self.clients_per_round}: must be between 1 and "
                             f"num_clients={self.num_clients}; sample fewer clients or add clients")
        if self.rounds < 1:
            raise ValueError(f"FedAvgConfig.rounds={self.rounds}: run at least one round")
        if self.eval_every < 1:
            raise ValueError(f"FedAvgConfig.eval_every={self.eval_every}: use a positive number of rounds")
        if self.test_clients < 1:
            raise ValueError(f"FedAvgConfig.test_clients={self.test_clients}: need at least one evaluation client")
        if not self.server_learning_rate > 0:
            raise ValueError(f"FedAvgConfig.server_learning_rate={self.server_learning_rate}: must be positive")

    @property
    def sampling_rate(self) -> float:
        """Fraction of clients taking part in a round (the FedAvg paper's C)."""
        return self.clients_per_round / self.num_clients


@dataclass(frozen=True)
class DPConfig:
    """DP-FedAvg (McMahan et al. 2018): clip each client's update, add Gaussian noise to the sum.

    User-level privacy: one client (all its examples) is the unit protected. The mean is
    unweighted, as ``tff.learning.dp_aggregator`` requires (``build_unweighted_fed_avg``).

    Attributes:
        noise_multiplier: noise standard deviation / clipping norm (z), the *effective* value
            including the privacy spent on adaptive clipping (TFF's convention).
        clipping: "adaptive" (Andrew et al. 2021, geometric update towards a quantile of the
            update norms) or "fixed".
        clip: the initial (adaptive) or the fixed L2 clipping norm of a client update.
        target_quantile: fraction of client updates left unclipped, for adaptive clipping.
        zeroing: also zero out extremely large updates, as ``tff.learning.dp_aggregator`` does.
            Off by default: TFF adapts the zeroing threshold from *un-noised* counts, which the
            epsilon below does not account for.
        delta: the target delta of (epsilon, delta); ``None``: 1 / (10 * num_clients) (user-level
            delta must be well below 1 / num_clients).
        sampling: how the accountant models client sampling. The round loop samples a fixed
            number of clients without replacement, so "without_replacement" (replace-one
            neighbouring) is the default that matches the training; "poisson" (McMahan et al.
            2018's analysis) holds only for a loop that samples each client independently, and
            quotes a smaller epsilon.
        fedavg: population and rounds of the DP run (DP needs many clients per round: the noise
            on the mean shrinks as 1 / clients_per_round).
        model: the model of the DP run. The noise vector's norm grows as sqrt(parameters), so a
            small CNN (about 10k parameters, tanh after Papernot et al. 2021) learns where the
            800k-parameter seed CNN drowns in noise at this number of clients.
    """

    noise_multiplier: float = 0.5
    clipping: Literal["adaptive", "fixed"] = "adaptive"
    clip: float = 0.5
    target_quantile: float = 0.5
    zeroing: bool = False
    delta: float | None = None
    sampling: Literal["poisson", "without_replacement"] = "without_replacement"
    fedavg: FedAvgConfig = field(default_factory=lambda: FedAvgConfig(
        num_clients=60, clients_per_round=20, rounds=20, client=ClientConfig(local_epochs=2, learning_rate=0.1)))
    model: CNNConfig = CNNConfig(filters=8, depth=2, dense_units=0, activation="tanh")

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0:
            raise ValueError(f"DPConfig.noise_multiplier={self.noise_multiplier}: must be >= 0")
        if self.clipping not in ("adaptive", "fixed"):
            raise ValueError(f"DPConfig.clipping={self.clipping!r}: choose 'adaptive' or 'fixed'")
        if not self.clip > 0:
            raise ValueError(f"DPConfig.clip={self.clip}: the clipping norm must be positive")
        if not 0 < self.target_quantile < 1:
            raise ValueError(f"DPConfig.target_quantile={self.target_quantile}: use a value in (0, 1)")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(f"DPConfig.delta={self.delta}: use a value in (0, 1), well below 1/num_clients")
        if self.sampling not in ("poisson", "without_replacement"):
            raise ValueError(f"DPConfig.sampling={self.sampling!r}: choose 'poisson' or 'without_replacement'")

    @property
    def target_delta(self) -> float:
        return self.delta if self.delta is not None else 1.0 / (10 * self.fedavg.num_clients)


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
        dp: DP-FedAvg.
        secure_rounds: rounds of the secure-aggregation run.
        centralized: the centralized baseline trained with :func:`lepton_nb.training.train`.
        target_accuracy: test accuracy whose first round is reported (rounds to target).
    """

    mode: Mode = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: CNNConfig = SEED_CNN
    fedavg: FedAvgConfig = field(default_factory=FedAvgConfig)
    alpha: float = 0.5
    shards_per_client: int = 2
    local_epochs_grid: tuple[int, ...] = (1, 5)
    clients_per_round_grid: tuple[int, ...] = (2, 10)
    sweep_rounds: int = 10
    dp: DPConfig = field(default_factory=DPConfig)
    secure_rounds: int = 3
    centralized: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, early_stopping_patience=4,
                                                                         verbose=0))
    target_accuracy: float = 0.80

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"FederatedConfig.alpha={self.alpha}: the Dirichlet concentration must be > 0 "
                             "(small = more skewed)")
        for k in self.clients_per_round_grid:
            if not 1 <= k <= self.fedavg.num_clients:
                raise ValueError(f"FederatedConfig.clients_per_round_grid has {k}: must lie in 1.."
                                 f"{self.fedavg.num_clients} (num_clients)")
        if self.sweep_rounds < 1 or self.secure_rounds < 1:
            raise ValueError("FederatedConfig: sweep_rounds and secure_rounds must be >= 1")
        if not 0 < self.target_accuracy < 1:
            raise ValueError(f"FederatedConfig.target_accuracy={self.target_accuracy}: a fraction in (0, 1)")


def federated(which: Mode | None = None) -> FederatedConfig:
    """Settings of notebook 04 for ``which`` mode (default: the environment's mode)."""
    which = which or mode()
    if which == "smoke":
        client = ClientConfig(local_epochs=1, batch_size=20)
        return FederatedConfig(
            mode="smoke",
            data=DataConfig(max_train=600, max_test=300),
            fedavg=FedAvgConfig(num_clients=6, clients_per_round=3, rounds=2, client=client, eval_every=1,
                                test_clients=2),
            local_epochs_grid=(2,),
            clients_per_round_grid=(2,),
            sweep_rounds=1,
            dp=DPConfig(fedavg=FedAvgConfig(num_clients=6, clients_per_round=3, rounds=1, client=client,
                                            eval_every=1, test_clients=2)),
            secure_rounds=1,
            centralized=TrainConfig(epochs=1, early_stopping_patience=None, verbose=0, tensorboard=False),
            target_accuracy=0.3,
        )
    if which == "full":
        # McMahan et al. 2017's MNIST CNN setting: 100 clients, C = 0.1, E = 5, B = 10.
        client = ClientConfig(local_epochs=5, batch_size=10, learning_rate=0.02)
        return FederatedConfig(
            mode="full",
            data=DataConfig(full=True),
            fedavg=FedAvgConfig(num_clients=100, clients_per_round=10, rounds=100, client=client, eval_every=5,
                                test_clients=10),
            local_epochs_grid=(1, 10),
            clients_per_round_grid=(5, 20),
            sweep_rounds=20,
            dp=DPConfig(noise_multiplier=1.0, fedavg=FedAvgConfig(
                num_clients=1000, clients_per_round=100, rounds=50,
                client=ClientConfig(local_epochs=1, batch_size=10, learning_rate=0.05), eval_every=10,
                test_clients=10)),
            secure_rounds=10,
            centralized=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4, verbose=0),
            target_accuracy=0.88,
        )
    if which != "default":
        raise ValueError(f"mode {which!r}: choose 'smoke', 'default' or 'full'")
    return FederatedConfig(
        fedavg=FedAvgConfig(rounds=20, eval_every=2, client=ClientConfig(local_epochs=2, batch_size=20)),
        local_epochs_grid=(1, 3),
        clients_per_round_grid=(2, 10),
        sweep_rounds=6,
        dp=DPConfig(fedavg=FedAvgConfig(num_clients=60, clients_per_round=20, rounds=15, eval_every=3,
                                        client=ClientConfig(local_epochs=2, learning_rate=0.1))),
    )
