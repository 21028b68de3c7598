"""Notebook 05, interpretability: its settings and the prose built from its explanations' numbers.

The core is :mod:`lepton_nb.explain` (attribution methods, Grad-CAM, surrogate trees, region
importance, trust checks, figures and the explorer widget).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lepton_nb.explain.settings import AttributionConfig, SurrogateConfig
from lepton_nb.settings import SEED_CNN, CNNConfig, DataConfig, Mode, TrainConfig, by_mode

__all__ = ["InterpretabilityConfig", "SECTION", "get_config", "quality_failures", "randomization_markdown",
           "surrogate_markdown", "tabular_markdown"]

SECTION = "05_interpretability"


@dataclass(frozen=True)
class InterpretabilityConfig:
    """Notebook 05.

    Attributes:
        data, train, model: the data, the training run and the CNN explained (the seed CNN).
        per_class: images per class in the Grad-CAM grid.
        n_eval: test images used for faithfulness, sanity and localization figures.
        n_influence: test images aggregated in the per-class region importance.
        faithfulness_steps: points of the deletion/insertion curves.
        localization_images: images of the localization benchmark.
        tabular_train: training of the breast-cancer MLP.
        explorer_images: test images offered in the explorer widget.
        min_fidelity: quality floor of the surrogate's held-out fidelity (%), outside smoke mode.
    """

    mode: Mode = "default"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(verbose=0, tensorboard=False))
    model: CNNConfig = SEED_CNN
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    per_class: int = 3
    n_eval: int = 200
    n_influence: int = 1000
    faithfulness_steps: int = 28
    localization_images: int = 2400
    tabular_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=80, batch_size=32, early_stopping_patience=10, verbose=0, tensorboard=False))
    explorer_images: int = 200
    min_fidelity: float = 78.0


def _smoke() -> InterpretabilityConfig:
    quiet = dict(verbose=0, tensorboard=False, early_stopping_patience=None)
    return InterpretabilityConfig(
        data=DataConfig(max_train=600, max_test=300), train=TrainConfig(epochs=1, **quiet),
        attribution=AttributionConfig(ig_steps=8, smoothgrad_samples=4),
        surrogate=SurrogateConfig(max_depth=4, max_leaf_nodes=16),
        per_class=1, n_eval=12, n_influence=100, faithfulness_steps=8, localization_images=600,
        tabular_train=TrainConfig(epochs=3, batch_size=32, **quiet), explorer_images=20)


def _full() -> InterpretabilityConfig:
    return InterpretabilityConfig(
        data=DataConfig(full=True),
        train=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4, verbose=0, tensorboard=False),
        n_eval=500, n_influence=5000, localization_images=6000, explorer_images=500)


def get_config(mode: Mode | None = None) -> InterpretabilityConfig:
    """Settings of notebook 05 for ``mode`` (default: ``LEPTON_NB_SMOKE`` / ``LEPTON_NB_FULL``)."""
    return by_mode(mode, smoke=_smoke, default=InterpretabilityConfig, full=_full)


def surrogate_markdown(sur, cfg: InterpretabilityConfig, held_out: int) -> str:
    """The surrogate tree's size and fidelity against the notebook's floor, numbers from ``sur``."""
    text = (f"The tree has depth {sur.depth} and {sur.leaves} leaves; it agrees with the CNN on "
            f"**{100 * sur.fidelity:.1f} %** of {held_out:,} held-out images ({100 * sur.fidelity_train:.1f} % on the "
            f"training images); its own accuracy is {100 * sur.accuracy:.1f} % against the CNN's "
            f"{100 * sur.model_accuracy:.1f} %. ")
    gap = cfg.min_fidelity - 100 * sur.fidelity
    if gap <= 0:
        return text + f"That meets the notebook's {cfg.min_fidelity:g} % fidelity floor."
    return text + (f"That misses the notebook's {cfg.min_fidelity:g} % fidelity floor by {gap:.1f} points: a tree "
                   "this small cannot follow every turn of the CNN.")


def tabular_markdown(mlp, tab_sur, features, test_size: int) -> str:
    """The tabular model's accuracy, its surrogate's fidelity and top splits, and the top attributions."""
    return (f"The MLP reaches {100 * mlp.report['accuracy']:.1f} % test accuracy. A depth-{tab_sur.depth} tree on the "
            f"raw measurements agrees with it on **{100 * tab_sur.fidelity:.1f} %** of the {test_size} held-out tumours; "
            f"its top splits are {', '.join(tab_sur.importances(top=3)['feature'])}. The features with the largest "
            f"mean attribution are {', '.join(features.index[:3])}.")


def randomization_markdown(final) -> str:
    """The rank correlation of each method's maps after every layer was randomized."""
    from lepton_nb.explain.plotting import METHOD_TITLES

    return ("With every layer randomized, the rank correlation with the trained model's heatmaps is "
            + ", ".join(f"{METHOD_TITLES[m]} {v:.2f}" for m, v in final.items())
            + ". Values near 0 mean the maps depend on what the model learned.")


def quality_failures(cfg: InterpretabilityConfig, checks: dict) -> list[str]:
    """What fails notebook 05's checks outside smoke mode (``checks`` as the notebook builds it)."""
    if cfg.mode == "smoke":
        return []
    failures = []
    if checks["gradcam_hit_rate"] < 0.9:
        failures.append(f"Grad-CAM peak inside the patch for {checks['gradcam_hit_rate']:.0%} (< 90 %)")
    if checks["surrogate_fidelity"] < cfg.min_fidelity:
        failures.append(f"surrogate fidelity {checks['surrogate_fidelity']:.1f} % (< {cfg.min_fidelity} %)")
    if checks["deletion_auc_above_random"]:
        failures.append(f"no better than a random pixel order: {checks['deletion_auc_above_random']}")
    if checks["gradcam_spearman_all_random"] >= 0.5:
        failures.append("Grad-CAM maps barely change when the model is randomized")
    return failures
