"""A privacy budget callback: epsilon after every epoch, and a stop before the budget is exceeded."""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

from lepton_nb.privacy.accounting import PrivacyError, Sampling, epsilon_for_schedule

__all__ = ["PrivacyBudget"]


class PrivacyBudget(tf.keras.callbacks.Callback):
    """Logs epsilon (``logs["epsilon"]``, TensorBoard ``privacy/epsilon``) after every epoch and
    stops training *before* an epoch that would take epsilon above ``target_epsilon``.

    Epsilon is accounted for the epochs actually run, each with its own noise multiplier, so the
    final model (and every checkpoint before it) satisfies (epsilon, delta)-DP with
    epsilon <= target. If even the first epoch would exceed the target, training is refused in
    ``on_train_begin``, before any step.

    Args:
        num_examples, batch_size, delta, sampling: as in :func:`lepton_nb.privacy.epsilon`.
        noise_multiplier: sigma, or one sigma per planned epoch (a schedule).
        target_epsilon: the budget, ``None`` to log only.
        log_dir: TensorBoard directory for the ``privacy/epsilon`` scalar, ``None`` for none.
        releases: noise multipliers of Gaussian mechanisms run on the same examples besides the
            training (:func:`lepton_nb.privacy.accounting.dp_event`), composed into every epsilon.

    Attributes:
        epsilons: epsilon after each completed epoch.
        stopped_early: whether the budget stopped training.
    """

    def __init__(self, *, num_examples: int, batch_size: int, delta: float, noise_multiplier: float | Sequence[float],
                 sampling: Sampling = "poisson", target_epsilon: float | None = None, log_dir: str | None = None,
                 accountant: str = "best", releases: Sequence[float] = ()):
        super().__init__()
        self.num_examples, self.batch_size, self.delta = num_examples, batch_size, delta
        self.sampling, self.target_epsilon, self.accountant = sampling, target_epsilon, accountant
        self._sigma = noise_multiplier
        self.releases = tuple(float(z) for z in releases)
        self.log_dir = log_dir
        self.epsilons: list[float] = []
        self.stopped_early = False
        self._writer = None
        self._memo: dict[int, float] = {}

    def sigma(self, epoch: int) -> float:
        """Noise multiplier of 0-based ``epoch``."""
        if isinstance(self._sigma, (int, float)):
            return float(self._sigma)
        if epoch >= len(self._sigma):
            raise PrivacyError(f"epoch {epoch + 1} is beyond the {len(self._sigma)}-epoch noise schedule")
        return float(self._sigma[epoch])

    def epsilon_after(self, epochs: int) -> float:
        """Epsilon after the first ``epochs`` epochs (memoized: PLD of a long schedule takes seconds)."""
        if epochs in self._memo:
            return self._memo[epochs]
        sigmas = [self.sigma(e) for e in range(epochs)]
        eps = epsilon_for_schedule(self.num_examples, self.batch_size, sigmas, self.delta, self.sampling,
                                   accountant=self.accountant, releases=self.releases)
        self._memo[epochs] = eps
        return eps

    def on_train_begin(self, logs=None):
        self.epsilons, self.stopped_early = [], False
        if self.target_epsilon is not None:
            first = self.epsilon_after(1)
            if first > self.target_epsilon:
                raise PrivacyError(
                    f"one epoch already costs epsilon={first:.3g} > target_epsilon={self.target_epsilon} "
                    f"(noise_multiplier={self.sigma(0):.3g}, {self.sampling} sampling): raise the noise "
                    "(lepton_nb.privacy.calibrate_noise) or the target")
        if self.log_dir:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        eps = self.epsilon_after(epoch + 1)
        self.epsilons.append(eps)
        if logs is not None:
            logs["epsilon"] = eps
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.scalar("privacy/epsilon", eps, step=epoch)
            self._writer.flush()
        if self.target_epsilon is None:
            return
        try:
            nxt = self.epsilon_after(epoch + 2)
        except PrivacyError:  # schedule exhausted: nothing more can be run
            nxt = math.inf
        if nxt > self.target_epsilon:
            self.model.stop_training = True
            planned = (self.params or {}).get("epochs")
            self.stopped_early = planned is None or epoch + 1 < planned

    @property
    def epsilon(self) -> float:
        """Epsilon spent so far (0 before the first epoch)."""
        return self.epsilons[-1] if self.epsilons else 0.0
