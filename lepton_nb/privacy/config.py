"""Frozen settings of DP training and of notebook 03, with smoke / default / full variants.

``DPConfig`` is one DP-SGD run (clip, noise or target epsilon, delta, sampling, path);
``dp_notebook()`` returns notebook 03's settings for the mode named by the environment
(:func:`lepton_nb.config.mode`). Override fields with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lepton_nb.config import CNNConfig, DataConfig, Mode, TrainConfig, mode

__all__ = ["DPConfig", "DPNotebookConfig", "DP_CNN", "DP_CNN_NO_NORM", "dp_notebook"]

#: The DP-friendly member of the CNN family: GroupNorm (per example) and tanh (Papernot et al.
#: 2021, "Tempered Sigmoid Activations for Deep Learning with Differential Privacy"), small.
DP_CNN = CNNConfig(filters=16, depth=2, norm="group", activation="tanh", dense_units=32)
#: The same without normalization (Papernot et al.'s own CNNs have none): notebook 03's full mode.
DP_CNN_NO_NORM = CNNConfig(filters=16, depth=2, norm="none", activation="tanh", dense_units=32)


@dataclass(frozen=True)
class DPConfig:
    """One DP-SGD run.

    Attributes:
        l2_norm_clip: C, the per-example gradient norm bound.
        noise_multiplier: sigma (noise std / C); ``None`` calibrates it to ``target_epsilon``
            over the planned epochs (:func:`lepton_nb.privacy.calibrate_noise`).
        target_epsilon: the budget: training stops before epsilon would exceed it; ``None``
            for no budget (epsilon is still logged every epoch).
        delta: the delta of (epsilon, delta)-DP; must be < 1 / number of training examples.
        sampling: "poisson" (variable batches, amplification accounted) or "shuffle" (fixed
            batches, each example once per epoch, accounted without amplification).
        path: "fast" (ghost-norm clipping, :class:`~lepton_nb.privacy.fast_clipping.FastDPModel`)
            or "stock" (tensorflow-privacy's ``DPKerasAdamOptimizer`` / ``DPKerasSGDOptimizer``,
            fixed batches only).
        num_microbatches: stock path only; ``None`` = the batch size (one example per
            microbatch). Fewer microbatches are accounted with doubled sensitivity.
        accountant: "best" (min of RDP and PLD), "rdp" or "pld".
    """

    l2_norm_clip: float = 1.0
    noise_multiplier: float | None = 1.0
    target_epsilon: float | None = None
    delta: float = 1e-5
    sampling: Literal["poisson", "shuffle"] = "poisson"
    path: Literal["fast", "stock"] = "fast"
    num_microbatches: int | None = None
    accountant: Literal["best", "rdp", "pld"] = "best"

    def __post_init__(self) -> None:
        from lepton_nb.privacy.accounting import PrivacyError

        if not self.l2_norm_clip > 0:
            raise PrivacyError(f"DPConfig.l2_norm_clip={self.l2_norm_clip}: the clipping norm must be > 0")
        if self.noise_multiplier is not None and not self.noise_multiplier >= 0:
            raise PrivacyError(f"DPConfig.noise_multiplier={self.noise_multiplier}: must be >= 0")
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise PrivacyError("DPConfig: give a noise_multiplier, or a target_epsilon to calibrate it to")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise PrivacyError(f"DPConfig.target_epsilon={self.target_epsilon}: must be > 0")
        if not 0 < self.delta < 1:
            raise PrivacyError(f"DPConfig.delta={self.delta}: must be in (0, 1), and below 1/num_examples")
        if self.sampling not in ("poisson", "shuffle"):
            raise PrivacyError(f"DPConfig.sampling={self.sampling!r}: choose 'poisson' or 'shuffle'")
        if self.path not in ("fast", "stock"):
            raise PrivacyError(f"DPConfig.path={self.path!r}: choose 'fast' or 'stock'")
        if self.path == "stock" and self.sampling == "poisson":
            raise PrivacyError("DPConfig: path='stock' (tensorflow-privacy's DP-Keras optimizers) needs fixed batches "
                               "divisible by num_microbatches and divides by the realised batch size: use "
                               "sampling='shuffle' with it, or path='fast' for Poisson sampling")
        if self.num_microbatches is not None and (self.path != "stock" or self.num_microbatches < 1):
            raise PrivacyError("DPConfig.num_microbatches applies to path='stock' only and must be >= 1")
        if self.accountant not in ("best", "rdp", "pld"):
            raise PrivacyError(f"DPConfig.accountant={self.accountant!r}: choose 'best', 'rdp' or 'pld'")


@dataclass(frozen=True)
class DPNotebookConfig:
    """Notebook 03.

    Attributes:
        data: the data (the bundled sample by default).
        model: the DP-friendly CNN.
        train: epochs, batch size (expected batch under Poisson), learning rate.
        dp: the main DP run (target epsilon, clip, delta, sampling).
        epsilons: targets of the privacy-utility curve.
        schedule: (start, end) noise multipliers of a linearly decaying schedule, scaled to
            ``dp.target_epsilon``.
        budget_epochs: the budget-callback demo's budget is the epsilon that this many epochs at
            the main run's noise cost; the demo plans ``train.epochs`` and must stop earlier.
        audit_examples: members (training examples) of the audit models; as many non-members.
        audit_epochs: epochs of the audited models (long, so the non-private one overfits).
        speed_examples: examples of the speed comparison of the paths (one timed epoch each).
        speed_batch: batch size of that comparison. The stock path's memory grows with the square
            of the batch (tensorflow-privacy takes the Jacobian of the per-example losses through
            the whole batch): 18.5 GB at batch 256 here, so 64.
        speed_stock_steps: steps of each stock-path epoch actually timed (scaled to the epoch;
            the stock path takes seconds per step).
    """

    mode: Mode = "default"
    data: DataConfig = field(default_factory=lambda: DataConfig(validation_fraction=0.1))
    model: CNNConfig = DP_CNN
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=10, batch_size=128, learning_rate=3e-3, early_stopping_patience=None, verbose=0))
    dp: DPConfig = field(default_factory=lambda: DPConfig(l2_norm_clip=1.0, noise_multiplier=None,
                                                          target_epsilon=3.0, delta=1e-5))
    epsilons: tuple[float, ...] = (1.0, 3.0, 8.0)
    schedule: tuple[float, float] = (2.0, 1.0)
    budget_epochs: int = 4
    audit_examples: int = 1000
    audit_epochs: int = 25
    speed_examples: int = 1280
    speed_batch: int = 64
    speed_stock_steps: int = 5


def dp_notebook(which: Mode | None = None) -> DPNotebookConfig:
    """Settings of notebook 03 for ``which`` mode (default: the environment's mode)."""
    which = which or mode()
    if which == "smoke":
        return DPNotebookConfig(
            mode="smoke",
            data=DataConfig(max_train=600, max_test=300),
            model=CNNConfig(filters=4, depth=1, norm="group", activation="tanh", dense_units=16),
            train=TrainConfig(epochs=2, batch_size=64, learning_rate=2e-3, early_stopping_patience=None,
                              verbose=0, tensorboard=False),
            dp=DPConfig(noise_multiplier=None, target_epsilon=8.0, delta=1e-4),
            epsilons=(8.0,),
            schedule=(2.0, 1.0),
            budget_epochs=1,
            audit_examples=120,
            audit_epochs=2,
            speed_examples=128,
            speed_batch=32,
        )
    if which == "full":
        # The tempered-sigmoid CNN (tanh, no normalization: Papernot et al. 2021), 3x faster than the
        # GroupNorm one under DP here, with large batches. Measured with these settings (make run
        # FULL=1 NOTEBOOKS=03): 87.39 % test accuracy at epsilon 2.99, delta 1e-5.
        return DPNotebookConfig(
            mode="full",
            data=DataConfig(full=True, validation_fraction=0.05),
            model=DP_CNN_NO_NORM,
            train=TrainConfig(epochs=40, batch_size=1024, learning_rate=3e-3, early_stopping_patience=None, verbose=2),
            epsilons=(1.0, 3.0, 8.0),
            budget_epochs=10,
            audit_examples=5000,
            audit_epochs=40,
            speed_examples=6400,
        )
    if which != "default":
        raise ValueError(f"mode {which!r}: choose 'smoke', 'default' or 'full'")
    return DPNotebookConfig()
