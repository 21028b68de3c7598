"""Settings of federated runs: local training, FedAvg, DP-FedAvg (frozen dataclasses).

Importing this module does not import TensorFlow or TFF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lepton_nb.settings import SettingsError

__all__ = ["ClientConfig", "DPFedAvgConfig", "FedAvgConfig"]


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
        if not self.server_learning_rate > 0:
            raise SettingsError(f"FedAvgConfig.server_learning_rate={self.server_learning_rate}: must be positive")

    @property
    def sampling_rate(self) -> float:
        """Fraction of clients taking part in a round (the FedAvg paper's C)."""
        return self.clients_per_round / self.num_clients


@dataclass(frozen=True)
class DPFedAvgConfig:
    """DP-FedAvg (McMahan et al. 2018): clip each client's update, add Gaussian noise to the sum.

    User-level privacy: one client (all its examples) is the unit protected. The mean is
    unweighted, as ``tff.learning.dp_aggregator`` requires (``build_unweighted_fed_avg``). The
    population, rounds and local training of a DP run are a :class:`FedAvgConfig` beside this one.

    Attributes:
        noise_multiplier: noise standard deviation / clipping norm (z), the *effective* value
            including the privacy spent on adaptive clipping (TFF's convention).
        clipping: "adaptive" (Andrew et al. 2021, geometric update towards a quantile of the
            update norms) or "fixed".
        clip: the initial (adaptive) or the fixed L2 clipping norm of a client update.
        target_quantile: fraction of client updates left unclipped, for adaptive clipping.
        zeroing: also zero out extremely large updates, as ``tff.learning.dp_aggregator`` does.
            Off by default: TFF adapts the zeroing threshold from *un-noised* counts, which the
            epsilon does not account for.
        delta: the target delta of (epsilon, delta); ``None``: 1 / (10 * number of clients)
            (user-level delta must be well below 1 / number of clients), see :meth:`target_delta`.
        sampling: how the accountant models client sampling. The round loop samples a fixed
            number of clients without replacement, so "without_replacement" (replace-one
            neighbouring) is the default that matches the training; "poisson" (McMahan et al.
            2018's analysis) holds only for a loop that samples each client independently.
    """

    noise_multiplier: float = 0.5
    clipping: Literal["adaptive", "fixed"] = "adaptive"
    clip: float = 0.5
    target_quantile: float = 0.5
    zeroing: bool = False
    delta: float | None = None
    sampling: Literal["poisson", "without_replacement"] = "without_replacement"

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0:
            raise SettingsError(f"DPFedAvgConfig.noise_multiplier={self.noise_multiplier}: must be >= 0")
        if self.clipping not in ("adaptive", "fixed"):
            raise SettingsError(f"DPFedAvgConfig.clipping={self.clipping!r}: choose 'adaptive' or 'fixed'")
        if not self.clip > 0:
            raise SettingsError(f"DPFedAvgConfig.clip={self.clip}: the clipping norm must be positive")
        if not 0 < self.target_quantile < 1:
            raise SettingsError(f"DPFedAvgConfig.target_quantile={self.target_quantile}: use a value in (0, 1)")
        if self.delta is not None and not 0 < self.delta < 1:
            raise SettingsError(f"DPFedAvgConfig.delta={self.delta}: use a value in (0, 1), well below 1/num_clients")
        if self.sampling not in ("poisson", "without_replacement"):
            raise SettingsError(f"DPFedAvgConfig.sampling={self.sampling!r}: choose 'poisson' or 'without_replacement'")

    def target_delta(self, num_clients: int) -> float:
        """``delta``, or 1 / (10 * ``num_clients``) when it is ``None``."""
        return self.delta if self.delta is not None else 1.0 / (10 * num_clients)
