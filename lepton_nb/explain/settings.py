"""Settings of the explanation methods and the surrogate tree (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass

from lepton_nb.settings import SettingsError

__all__ = ["AttributionConfig", "SurrogateConfig"]


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
            raise SettingsError("AttributionConfig: ig_steps >= 2, smoothgrad_samples >= 1, occlusion patch/stride >= 1")

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
