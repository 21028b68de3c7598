"""Settings of one DP-SGD run (:class:`DPSGDConfig`), a frozen dataclass as every setting here.

The DP-friendly CNNs are presets of :mod:`lepton_nb.settings` (``DP_CNN``, ``DP_CNN_NO_NORM``);
DP-FedAvg's settings are :class:`lepton_nb.federated.settings.DPFedAvgConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lepton_nb.privacy.accounting import PrivacyError

__all__ = ["DPSGDConfig"]


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
