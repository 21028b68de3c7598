"""Settings of one DP-SGD run (:class:`DPSGDConfig`), a frozen dataclass as every setting here.

:class:`ScatterDPRecipe` is the ScatterNet + linear recipe of :mod:`lepton_nb.privacy.scatter`.
The DP-friendly CNNs are presets of :mod:`lepton_nb.settings` (``DP_CNN``, ``DP_CNN_NO_NORM``);
DP-FedAvg's settings are :class:`lepton_nb.federated.settings.DPFedAvgConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lepton_nb.privacy.accounting import PrivacyError
from lepton_nb.settings import Scattering, TrainConfig

__all__ = ["DPSGDConfig", "ScatterDPRecipe"]


@dataclass(frozen=True)
class DPSGDConfig:
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
        reproducible: ``False`` (the default, private): the noise and the sampled batches are
            drawn from fresh OS entropy in every run (as Opacus' ``secure_mode``), so nobody can
            regenerate them from the code or a seed. ``True`` is an explicit opt-in for tests and
            demonstrations: they follow ``TrainConfig.seed`` and the run repeats exactly, and its
            result says "reproducible, not private" (whoever knows the seed recomputes the noise,
            which voids the guarantee). Model initialisation is seeded by ``TrainConfig.seed`` either
            way (it is not part of the mechanism).
    """

    l2_norm_clip: float = 1.0
    noise_multiplier: float | None = 1.0
    target_epsilon: float | None = None
    delta: float = 1e-5
    sampling: Literal["poisson", "shuffle"] = "poisson"
    path: Literal["fast", "stock"] = "fast"
    num_microbatches: int | None = None
    accountant: Literal["best", "rdp", "pld"] = "best"
    reproducible: bool = False

    def __post_init__(self) -> None:
        if not self.l2_norm_clip > 0:
            raise PrivacyError(f"DPSGDConfig.l2_norm_clip={self.l2_norm_clip}: the clipping norm must be > 0")
        if self.noise_multiplier is not None and not self.noise_multiplier >= 0:
            raise PrivacyError(f"DPSGDConfig.noise_multiplier={self.noise_multiplier}: must be >= 0")
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise PrivacyError("DPSGDConfig: give a noise_multiplier, or a target_epsilon to calibrate it to")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise PrivacyError(f"DPSGDConfig.target_epsilon={self.target_epsilon}: must be > 0")
        if not 0 < self.delta < 1:
            raise PrivacyError(f"DPSGDConfig.delta={self.delta}: must be in (0, 1), and below 1/num_examples")
        if self.sampling not in ("poisson", "shuffle"):
            raise PrivacyError(f"DPSGDConfig.sampling={self.sampling!r}: choose 'poisson' or 'shuffle'")
        if self.path not in ("fast", "stock"):
            raise PrivacyError(f"DPSGDConfig.path={self.path!r}: choose 'fast' or 'stock'")
        if self.path == "stock" and self.sampling == "poisson":
            raise PrivacyError("DPSGDConfig: path='stock' (tensorflow-privacy's DP-Keras optimizers) needs fixed batches "
                               "divisible by num_microbatches and divides by the realised batch size: use "
                               "sampling='shuffle' with it, or path='fast' for Poisson sampling")
        if self.num_microbatches is not None and (self.path != "stock" or self.num_microbatches < 1):
            raise PrivacyError("DPSGDConfig.num_microbatches applies to path='stock' only and must be >= 1")
        if self.accountant not in ("best", "rdp", "pld"):
            raise PrivacyError(f"DPSGDConfig.accountant={self.accountant!r}: choose 'best', 'rdp' or 'pld'")
        if not isinstance(self.reproducible, bool):
            raise PrivacyError(f"DPSGDConfig.reproducible={self.reproducible!r}: must be True or False (False, the "
                               "default, draws noise and batches from OS entropy)")


@dataclass(frozen=True)
class ScatterDPRecipe:
    """DP-SGD of a linear model on ScatterNet features (Tramer & Boneh 2021), :mod:`lepton_nb.privacy.scatter`.

    The defaults are the recipe for the full Fashion-MNIST at epsilon 3: features J=2, L=8
    (7x7x81), per-example GroupNorm over 27 groups without affine, centered by the DP mean of the
    normalized features (noise multiplier 20, composed into epsilon), a zero-initialised linear
    layer, Poisson batches of expected size 8,192, clip 0.1, SGD with momentum 0.9 at a constant
    learning rate 12, 60 epochs, noise calibrated to the target epsilon, the weights averaged over
    the last 10 epochs.

    Attributes:
        scattering: the fixed feature map (no privacy cost).
        groups: GroupNormalization groups over the feature channels.
        mean_noise_multiplier: noise multiplier of the Gaussian mechanism releasing the mean of
            the normalized training features, which the model subtracts
            (:func:`lepton_nb.privacy.scatter.private_feature_mean`); ``None`` for no centering
            (Tramer & Boneh's model).
        train: epochs, expected batch, optimizer and learning rate.
        dp: clip, target epsilon (or noise), delta, sampling, path.
        validation_fraction: share of the training split held out (never trained on); 0 trains on
            every example, and the accounting then counts them all.
        average_epochs: the model ends with its weights averaged over the steps of the last this
            many epochs (:class:`lepton_nb.optimization.TailAverage`; post-processing of private
            iterates, so free); 0 keeps the last iterate.
    """

    scattering: Scattering = field(default_factory=Scattering)
    groups: int = 27
    mean_noise_multiplier: float | None = 20.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=60, batch_size=8192, learning_rate=12.0, optimizer="sgd", early_stopping_patience=None))
    dp: DPSGDConfig = field(default_factory=lambda: DPSGDConfig(l2_norm_clip=0.1, noise_multiplier=None,
                                                                target_epsilon=3.0, delta=1e-5))
    validation_fraction: float = 0.0
    average_epochs: int = 10

    def __post_init__(self) -> None:
        if not 0 <= self.average_epochs <= self.train.epochs:
            raise PrivacyError(f"ScatterDPRecipe.average_epochs={self.average_epochs}: use 0 (last iterate) to "
                               f"train.epochs={self.train.epochs}")
        if self.groups < 1:
            raise PrivacyError(f"ScatterDPRecipe.groups={self.groups}: use at least one group")
        if self.mean_noise_multiplier is not None and not self.mean_noise_multiplier > 0:
            raise PrivacyError(f"ScatterDPRecipe.mean_noise_multiplier={self.mean_noise_multiplier}: use a value > 0 "
                               "(20 costs about 0.2 % more training noise at epsilon 3), or None for no centering")
        if not 0 <= self.validation_fraction < 0.5:
            raise PrivacyError(f"ScatterDPRecipe.validation_fraction={self.validation_fraction}: use a value in [0, 0.5)")
        if self.train.label_smoothing or self.train.schedule != "constant":
            raise PrivacyError("ScatterDPRecipe.train: label smoothing and learning-rate schedules are not part of the "
                               "DP recipe (train_dp's fast path uses plain cross-entropy and a constant rate)")
