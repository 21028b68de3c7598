"""Settings of notebook 05 (interpretability), with smoke, default and full variants.

``interpretability()`` picks the variant from :func:`lepton_nb.config.mode` (``LEPTON_NB_SMOKE=1``,
``LEPTON_NB_FULL=1``); override fields with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lepton_nb.config import SEED_CNN, CNNConfig, DataConfig, Mode, TrainConfig, mode

__all__ = ["AttributionConfig", "ExplainConfig", "SurrogateConfig", "interpretability"]


@dataclass(frozen=True)
class AttributionConfig:
    """Options of the attribution methods.

    Attributes:
        ig_steps: points on the integrated-gradients path.
        smoothgrad_samples, smoothgrad_noise: noisy copies and noise level (fraction of the range).
        occlusion_patch, occlusion_stride: occluding square and its step, in pixels.
    """

    ig_steps: int = 32
    smoothgrad_samples: int = 16
    smoothgrad_noise: float = 0.15
    occlusion_patch: int = 4
    occlusion_stride: int = 2

    def __post_init__(self) -> None:
        if self.ig_steps < 2 or self.smoothgrad_samples < 1 or self.occlusion_patch < 1 or self.occlusion_stride < 1:
            raise ValueError("AttributionConfig: ig_steps >= 2, smoothgrad_samples >= 1, occlusion patch/stride >= 1")

    def options(self, method: str) -> dict:
        """Keyword options of :func:`lepton_nb.explain.attribution.heatmaps` for ``method``."""
        return {"integrated_gradients": {"steps": self.ig_steps},
                "smoothgrad": {"samples": self.smoothgrad_samples, "noise": self.smoothgrad_noise},
                "occlusion": {"patch": self.occlusion_patch, "stride": self.occlusion_stride}}.get(method, {})


@dataclass(frozen=True)
class SurrogateConfig:
    """The decision-tree surrogate: region features and tree size.

    Attributes:
        cell, block, bands, cell_ink: regions (see :func:`lepton_nb.explain.surrogate.image_regions`).
        ink_threshold: intensity above which a pixel counts as ink.
        max_depth, max_leaf_nodes: small enough to draw.
    """

    cell: int = 4
    block: int | None = 7
    bands: int | None = 4
    cell_ink: bool = True
    ink_threshold: float = 0.2
    max_depth: int = 9
    max_leaf_nodes: int | None = 64


@dataclass(frozen=True)
class ExplainConfig:
    """Notebook 05.

    Attributes:
        data, train, model: the data, the training run and the CNN explained (the seed CNN).
        per_class: images per class in the Grad-CAM grid.
        n_eval: test images used for faithfulness, sanity and localization figures.
        n_influence: test images aggregated in the per-class region importance.
        faithfulness_steps: points of the deletion/insertion curves.
        tabular_train: training of the breast-cancer MLP.
        explorer_images: test images offered in the explorer widget.
        check_fidelity: quality-check threshold on the surrogate's fidelity (%), outside smoke mode.
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
    check_fidelity: float = 78.0


def interpretability(which: Mode | None = None) -> ExplainConfig:
    """Settings of notebook 05 for ``which`` mode (default: the environment's mode)."""
    which = which or mode()
    if which == "smoke":
        quiet = dict(verbose=0, tensorboard=False, early_stopping_patience=None)
        return ExplainConfig(
            mode="smoke",
            data=DataConfig(max_train=600, max_test=300),
            train=TrainConfig(epochs=1, **quiet),
            attribution=AttributionConfig(ig_steps=8, smoothgrad_samples=4),
            surrogate=SurrogateConfig(max_depth=4, max_leaf_nodes=16),
            per_class=1, n_eval=12, n_influence=100, faithfulness_steps=8, localization_images=600,
            tabular_train=TrainConfig(epochs=3, batch_size=32, **quiet), explorer_images=20,
        )
    if which == "full":
        return ExplainConfig(
            mode="full",
            data=DataConfig(full=True),
            train=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4, verbose=0, tensorboard=False),
            n_eval=500, n_influence=5000, localization_images=6000, explorer_images=500,
        )
    if which != "default":
        raise ValueError(f"mode {which!r}: choose 'smoke', 'default' or 'full'")
    return ExplainConfig()
