"""The ScatterNet + linear DP recipe (Tramer & Boneh 2021): fixed features, then DP-SGD on a linear model.

"Differentially Private Learning Needs Better Features (or Much More Data)" (Tramer & Boneh, ICLR
2021) trains a linear model with DP-SGD on ScatterNet features and beats end-to-end CNNs at every
epsilon on MNIST, Fashion-MNIST and CIFAR-10. Here:

1. the features: :func:`lepton_nb.features.scatter_dataset` (kymatio's Scattering2D, J=2, L=8:
   28x28 -> 7x7x81), fixed wavelets, so computing them on the private images costs no privacy;
2. the model: :func:`lepton_nb.models.build_scatter_linear`, per-example GroupNorm without affine
   (no statistic of the data set is learnt, so the normalization is free too) and a zero-initialised
   linear layer;
3. the training: :func:`lepton_nb.privacy.train_dp` on the features, the same fit core, Poisson
   sampling and accounting as any DP run: epsilon counts the feature set's examples (the training
   split minus any hold-out), the sampling rate ``B / N`` and the steps that really ran.

As in the papers, the epsilon covers one training run, not the search over hyperparameters that
chose the recipe; the defaults of :class:`~lepton_nb.privacy.settings.ScatterDPRecipe` come from
Tramer & Boneh's published grid and a small search on a validation split of Fashion-MNIST.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import tensorflow as tf

from lepton_nb.data import Dataset
from lepton_nb.privacy.settings import ScatterDPRecipe
from lepton_nb.settings import DataConfig
from lepton_nb.training import TrainResult

__all__ = ["recipe_data_config", "recipe_features", "recipe_model_fn", "train_scatter_dp"]


def recipe_features(data: Dataset, recipe: ScatterDPRecipe = ScatterDPRecipe(), *, progress: bool = True) -> Dataset:
    """The data set of ``data``'s ScatterNet features (computed once, then read from the cache)."""
    from lepton_nb.features import scatter_dataset

    return scatter_dataset(data, recipe.scattering, progress=progress)


def recipe_model_fn(features: Dataset, recipe: ScatterDPRecipe = ScatterDPRecipe()) -> Callable[[], tf.keras.Model]:
    """A function building the recipe's fresh linear model for ``features``' shape and classes."""
    from lepton_nb.models import build_scatter_linear

    return lambda: build_scatter_linear(features.input_shape, features.num_classes, groups=recipe.groups)


def recipe_data_config(recipe: ScatterDPRecipe, data_cfg: DataConfig = DataConfig()) -> DataConfig:
    """``data_cfg`` with the recipe's hold-out and no augmentation (the features are fixed)."""
    return replace(data_cfg, validation_fraction=recipe.validation_fraction, augment=None)


def train_scatter_dp(data: Dataset, recipe: ScatterDPRecipe = ScatterDPRecipe(), *,
                     data_cfg: DataConfig = DataConfig(), features: Dataset | None = None, name: str | None = None,
                     callbacks: Sequence[tf.keras.callbacks.Callback] = (), evaluate_test: bool = True) -> TrainResult:
    """Train the recipe's linear model on ``data``'s ScatterNet features with DP-SGD.

    Args:
        data: the images; their features are computed (or read from the cache) unless
            ``features`` gives them.
        recipe: features, normalization groups, training, DP settings and hold-out.
        data_cfg: the hold-out's seed (its fraction is ``recipe.validation_fraction``).
        features: ``recipe_features(data, recipe)`` when already at hand.

    Returns:
        :func:`lepton_nb.privacy.train_dp`'s result (the model takes features; evaluate it on
        ``features.x_test``), ``extra`` also naming the features. With ``recipe.average_epochs``
        the model holds the tail average of the weights (what the test report scores); the
        per-epoch validation history scores the raw iterates.
    """
    from lepton_nb.optimization import TailAverage
    from lepton_nb.privacy.train import train_dp

    feats = features if features is not None else recipe_features(data, recipe)
    averaging = [TailAverage(recipe.average_epochs)] if recipe.average_epochs else []
    result = train_dp(recipe_model_fn(feats, recipe), feats, recipe.dp, recipe.train,
                      data_cfg=recipe_data_config(recipe, data_cfg), name=name or "dp_scatter_linear",
                      callbacks=[*averaging, *callbacks], evaluate_test=evaluate_test)
    result.extra["features"] = f"scatter J={recipe.scattering.J} L={recipe.scattering.L}, groupnorm {recipe.groups}"
    result.extra["averaged_epochs"] = recipe.average_epochs
    return result
