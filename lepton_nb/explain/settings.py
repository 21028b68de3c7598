"""Settings of the explanation methods, their checks, training-data influence and the surrogate tree
(frozen dataclasses, checked when built)."""

from __future__ import annotations

from dataclasses import dataclass

from lepton_nb.settings import CNNConfig, SettingsError

__all__ = ["EXPLAINED_CNN", "IG_RULES", "AttributionConfig", "FaithfulnessConfig", "InfluenceConfig", "SurrogateConfig"]

#: The CNN notebooks 05 and 06 explain: the family member with two pooled blocks, so the last
#: convolution (``conv_1_0``) sits at 14x14 after downsampling, on features of parts rather than
#: of pixels, which is what Grad-CAM weighs. (With the re-initialization seed offset from the
#: training seed, the seed CNN's Grad-CAM passes the logits-randomization check as well: its 0.93
#: in issue 13 came from re-creating the initial head; notebook 05 measures both.) No batch norm: TracIn reads every epoch's checkpoint in inference
#: mode, where batch norm's moving statistics lag behind early in training.
EXPLAINED_CNN = CNNConfig(filters=32, depth=2, dropout=0.3)

#: quadrature rules of integrated gradients (:func:`lepton_nb.explain.attribution.nodes_weights`)
IG_RULES = ("gausslegendre", "trapezoid", "riemann_middle", "uniform_mean")


@dataclass(frozen=True)
class AttributionConfig:
    """Options of the attribution methods (:data:`lepton_nb.explain.attribution.METHODS`).

    Attributes:
        ig_steps, ig_rule: quadrature nodes and rule of integrated gradients.
        smoothgrad_samples, smoothgrad_noise: noisy copies and noise level (fraction of the range)
            of SmoothGrad, SquareGrad and VarGrad.
        occlusion_patch, occlusion_stride: occluding square and its step, in pixels.
        rise_masks: RISE's random masks; lime_samples: LIME's and KernelSHAP's perturbed samples
            (over a grid of ``grid_cell`` x ``grid_cell`` squares); sobol_designs: Sobol's designs.
    """

    ig_steps: int = 32
    ig_rule: str = "gausslegendre"
    smoothgrad_samples: int = 32
    smoothgrad_noise: float = 0.15
    occlusion_patch: int = 4
    occlusion_stride: int = 2
    rise_masks: int = 1000
    lime_samples: int = 200
    grid_cell: int = 4
    sobol_designs: int = 16

    def __post_init__(self) -> None:
        if self.ig_steps < 2 or self.smoothgrad_samples < 1 or self.occlusion_patch < 1 or self.occlusion_stride < 1:
            raise SettingsError("AttributionConfig: ig_steps >= 2, smoothgrad_samples >= 1, occlusion patch/stride >= 1")
        if self.ig_rule not in IG_RULES:
            raise SettingsError(f"AttributionConfig.ig_rule={self.ig_rule!r}: choose one of {IG_RULES}")
        if min(self.rise_masks, self.lime_samples, self.sobol_designs, self.grid_cell) < 1:
            raise SettingsError("AttributionConfig: rise_masks, lime_samples, sobol_designs and grid_cell must be >= 1")

    def options(self, method: str) -> dict:
        """Keyword options of :func:`lepton_nb.explain.attribution.maps` for ``method``."""
        noisy = {"nb_samples": self.smoothgrad_samples, "noise": self.smoothgrad_noise}
        return {"integrated_gradients": {"steps": self.ig_steps, "rule": self.ig_rule},
                "occlusion": {"patch": self.occlusion_patch, "stride": self.occlusion_stride},
                "smoothgrad": noisy, "squaregrad": noisy, "vargrad": noisy,
                "rise": {"nb_samples": self.rise_masks},
                "lime": {"nb_samples": self.lime_samples, "cell": self.grid_cell},
                "kernelshap": {"nb_samples": self.lime_samples, "cell": self.grid_cell},
                "sobol": {"nb_design": self.sobol_designs}}.get(method, {})


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Deletion/insertion and MuFidelity (:mod:`lepton_nb.explain.faithfulness`).

    Attributes:
        fills: what removed pixels become ("zero", "mean", "blur"; "nli" is slow).
        steps: points of the deletion/insertion curves.
        mufidelity_subsets: random subsets per image; mufidelity_grid: grid cells per side;
        mufidelity_chunks: groups of images the standard errors are taken over.
    """

    fills: tuple[str, ...] = ("zero", "mean", "blur")
    steps: int = 28
    mufidelity_subsets: int = 64
    mufidelity_grid: int = 7
    mufidelity_chunks: int = 4

    def __post_init__(self) -> None:
        from lepton_nb.explain.faithfulness import FILLS

        bad = set(self.fills) - set(FILLS)
        if bad or not self.fills:
            raise SettingsError(f"FaithfulnessConfig.fills={self.fills}: choose from {FILLS}")
        if self.steps < 1 or self.mufidelity_subsets < 2 or self.mufidelity_grid < 1 or self.mufidelity_chunks < 1:
            raise SettingsError("FaithfulnessConfig: steps >= 1, mufidelity_subsets >= 2, grid and chunks >= 1")


@dataclass(frozen=True)
class InfluenceConfig:
    """Training-data influence (:mod:`lepton_nb.explain.influence`).

    Attributes:
        damping: L2 weight of the refitted logits layer (Koh & Liang's damping).
        checkpoints: at most this many saved epochs are used by TracIn (spread over the run).
        top: helpful and harmful training images shown per test image.
        flip_fraction: share of training labels flipped for the mislabel-detection experiment.
        removal_k: training images removed per set in the retraining validation.
        validation_points: test images (half right, half wrong) of the retraining validation.
        random_sets: sets of ``removal_k`` random images removed per test point (the control).
    """

    damping: float = 1e-3
    checkpoints: int = 6
    top: int = 6
    flip_fraction: float = 0.05
    removal_k: int = 40
    validation_points: int = 4
    random_sets: int = 1

    def __post_init__(self) -> None:
        if not self.damping > 0 or self.checkpoints < 1 or self.top < 1:
            raise SettingsError("InfluenceConfig: damping > 0, checkpoints >= 1 and top >= 1")
        if not 0 < self.flip_fraction < 0.5:
            raise SettingsError(f"InfluenceConfig.flip_fraction={self.flip_fraction}: use a share in (0, 0.5)")
        if self.removal_k < 1 or self.validation_points < 1 or self.random_sets < 1:
            raise SettingsError("InfluenceConfig: removal_k, validation_points and random_sets must be >= 1")


@dataclass(frozen=True)
class SurrogateConfig:
    """The distilled surrogate tree (:mod:`lepton_nb.explain.surrogate`).

    Attributes:
        leaves: leaves of the tree that is drawn and reported (the goal: >= 95 % fidelity at 64).
        copies: augmented copies of each training image the CNN labels as extra queries.
        frontier: leaf counts of the fidelity-vs-leaves frontier.
        min_samples_leaf: smallest leaf.
        bootstrap: resamples of the held-out images for the fidelity's 95 % interval.
    """

    leaves: int = 64
    copies: int = 1
    frontier: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 1024)
    min_samples_leaf: int = 5
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        if self.leaves < 2 or self.copies < 0 or self.min_samples_leaf < 1 or self.bootstrap < 10:
            raise SettingsError("SurrogateConfig: leaves >= 2, copies >= 0, min_samples_leaf >= 1, bootstrap >= 10")
        if not self.frontier or min(self.frontier) < 2:
            raise SettingsError(f"SurrogateConfig.frontier={self.frontier}: leaf counts >= 2")
