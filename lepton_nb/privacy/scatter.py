"""The ScatterNet + linear DP recipe (Tramer & Boneh 2021): fixed features, then DP-SGD on a linear model.

"Differentially Private Learning Needs Better Features (or Much More Data)" (Tramer & Boneh, ICLR
2021) trains a linear model with DP-SGD on ScatterNet features and beats end-to-end CNNs at every
epsilon on MNIST, Fashion-MNIST and CIFAR-10. Here:

1. the features: :func:`lepton_nb.features.scatter_dataset` (kymatio's Scattering2D, J=2, L=8:
   28x28 -> 7x7x81), fixed wavelets, so computing them on the private images costs no privacy;
2. the model: :func:`lepton_nb.models.build_scatter_linear`, per-example GroupNorm without affine
   (no statistic of the data set is learnt, so the normalization is free too), the normalized
   features centered by their DP mean (:func:`private_feature_mean`, one Gaussian mechanism), and a
   zero-initialised linear layer;
3. the training: :func:`lepton_nb.privacy.train_dp` on the features, the same fit core, Poisson
   sampling and accounting as any DP run: epsilon counts the feature set's examples (the training
   split minus any hold-out), the sampling rate ``B / N``, the steps that really ran and the mean's
   release, composed with them (``train_dp(releases=...)``).

Why centering helps: every per-example gradient of the linear layer is ``(p - y) x^T``, and with a
clip below its norm (all of them, here) each example adds a vector of norm C. The mean of the
normalized features is a quarter of their energy on Fashion-MNIST and no class differs by it, so
without centering a quarter of each example's clipped norm carries no signal while the noise stays.

As in the papers, the epsilon covers one training run, not the search over hyperparameters that
chose the recipe; the defaults of :class:`~lepton_nb.privacy.settings.ScatterDPRecipe` come from
Tramer & Boneh's published grid and a small search on a validation split of Fashion-MNIST.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from lepton_nb.data import Dataset
from lepton_nb.privacy.accounting import PrivacyError
from lepton_nb.privacy.settings import ScatterDPRecipe
from lepton_nb.settings import DataConfig
from lepton_nb.training import TrainResult

__all__ = ["private_feature_mean", "recipe_data_config", "recipe_features", "recipe_model_fn", "train_scatter_dp"]


def recipe_features(data: Dataset, recipe: ScatterDPRecipe = ScatterDPRecipe(), *, progress: bool = True) -> Dataset:
    """The data set of ``data``'s ScatterNet features (computed once, then read from the cache)."""
    from lepton_nb.features import scatter_dataset

    return scatter_dataset(data, recipe.scattering, progress=progress)


def recipe_model_fn(features: Dataset, recipe: ScatterDPRecipe = ScatterDPRecipe(), *,
                    center: np.ndarray | None = None) -> Callable[[], tf.keras.Model]:
    """A function building the recipe's fresh linear model for ``features``' shape and classes,
    its normalized features minus ``center`` when given (:func:`private_feature_mean`)."""
    from lepton_nb.models import build_scatter_linear

    return lambda: build_scatter_linear(features.input_shape, features.num_classes, groups=recipe.groups,
                                        center=center)


def private_feature_mean(x: np.ndarray, groups: int, noise_multiplier: float, *, seed: int | None = None,
                         batch_size: int = 4096) -> np.ndarray:
    """The mean of the GroupNorm-normalized features of ``x`` (N, H', W', K), released with the
    Gaussian mechanism (Dwork & Roth 2014, Theorem A.1; accounted exactly by dp_accounting).

    Each example's normalized vector (the GroupNormalization of :func:`build_scatter_linear`,
    flattened to d = H' W' K values) has L2 norm at most sqrt(d): a group of m values has sum of
    squares m var / (var + eps) < m. The vectors are clipped to that norm all the same, so adding
    or removing (or zeroing) one example moves their sum by at most sqrt(d), and noise of std
    ``noise_multiplier * sqrt(d)`` on each coordinate of the sum makes one Gaussian mechanism of that
    noise multiplier; pass it to ``train_dp(releases=...)``. The sum is divided by N, the size
    of the training set, public as in the accounting of the training (``q = B / N``).

    Args:
        x: the training examples' features, (N, H', W', K).
        groups: the model's GroupNormalization groups.
        noise_multiplier: z > 0; 20 costs about 0.2 % more training noise at epsilon 3 on 60,000
            examples and puts noise of std ``20 sqrt(d) / N`` (0.02 for d = 3,969) on each mean.
        seed: ``None`` (private) draws the noise from OS entropy; an int repeats it, and whoever
            knows it can remove the noise (tests and demonstrations only).

    Returns:
        (d,) float32, the noisy mean.
    """
    from lepton_nb.models import build_scatter_linear

    if not noise_multiplier > 0:
        raise PrivacyError(f"noise_multiplier={noise_multiplier}: the mean's release needs noise > 0")
    if x.ndim != 4 or not len(x):
        raise PrivacyError(f"x has shape {x.shape}: give the (N, H', W', K) features of at least one example")
    norm = build_scatter_linear(x.shape[1:], groups=groups).get_layer("groupnorm")
    d = int(np.prod(x.shape[1:]))
    total = np.zeros(d)
    for i in range(0, len(x), batch_size):
        v = tf.reshape(norm(tf.convert_to_tensor(x[i:i + batch_size], tf.float32)), (-1, d))
        v = v * tf.minimum(1.0, np.sqrt(d) / tf.maximum(tf.norm(v, axis=1, keepdims=True), 1e-12))
        total += tf.reduce_sum(tf.cast(v, tf.float64), axis=0).numpy()
    noise = np.random.default_rng(seed).normal(0.0, noise_multiplier * np.sqrt(d), d)
    return ((total + noise) / len(x)).astype(np.float32)


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
    from lepton_nb.training import split

    feats = features if features is not None else recipe_features(data, recipe)
    dcfg = recipe_data_config(recipe, data_cfg)
    center, releases = None, ()
    described = f"scatter J={recipe.scattering.J} L={recipe.scattering.L}, groupnorm {recipe.groups}"
    if recipe.mean_noise_multiplier is not None:
        center = private_feature_mean(split(feats, dcfg).x_train, recipe.groups, recipe.mean_noise_multiplier,
                                      seed=recipe.train.seed if recipe.dp.reproducible else None)
        releases = (recipe.mean_noise_multiplier,)
        described += f", centered by a DP mean (noise multiplier {recipe.mean_noise_multiplier:g})"
    averaging = [TailAverage(recipe.average_epochs)] if recipe.average_epochs else []
    result = train_dp(recipe_model_fn(feats, recipe, center=center), feats, recipe.dp, recipe.train,
                      data_cfg=dcfg, name=name or "dp_scatter_linear", callbacks=[*averaging, *callbacks],
                      evaluate_test=evaluate_test, releases=releases)
    result.extra["features"] = described
    result.extra["averaged_epochs"] = recipe.average_epochs
    return result
