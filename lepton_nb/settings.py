"""The one settings pattern: frozen dataclasses, and one helper that picks them by run mode.

Every setting of lepton_nb is a frozen dataclass that checks its fields when it is built (a bad
value raises :class:`SettingsError` naming the field and the fix); override a field with
:func:`dataclasses.replace`, e.g. ``replace(cfg.train, epochs=3)``. This module holds the settings
shared by the whole library (data, training, distribution, the CNN family and its presets);
``privacy``, ``federated`` and ``explain`` keep theirs in their own ``settings`` module, and each
notebook's settings come from its story module's ``get_config(mode)``, built with :func:`by_mode`.

The run mode comes from the environment, so a notebook's single ``parameters`` cell works
unchanged under ``make run`` and ``make test``:

- ``LEPTON_NB_SMOKE=1``: seconds-long settings (tiny subsets, one epoch) that check everything runs;
- ``LEPTON_NB_FULL=1``: the full 60k/10k data and longer training (the real figures);
- neither: the default, real training on the bundled 6,000/4,000 sample.

Importing this module imports neither TensorFlow nor any other heavy library.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, TypeVar

Mode = Literal["smoke", "default", "full"]
MODES: tuple[str, ...] = ("smoke", "default", "full")
T = TypeVar("T")

__all__ = [
    "Augmentation",
    "CNNConfig",
    "DP_CNN",
    "DP_CNN_NO_NORM",
    "DataConfig",
    "DistributionOptions",
    "MODES",
    "FAST_CNN",
    "FAST_CNN_AUGMENT",
    "FAST_CNN_TRAIN",
    "Mode",
    "SEED_CNN",
    "Scattering",
    "SettingsError",
    "TrainConfig",
    "by_mode",
    "cache_dir",
    "mode",
]


class SettingsError(ValueError):
    """A setting is unusable; the message names it and how to fix it."""


def cache_dir(name: str) -> Path:
    """``$LEPTON_NB_CACHE/<name>``, else ``~/.cache/lepton_nb/<name>`` (created when missing)."""
    d = Path(os.environ.get("LEPTON_NB_CACHE") or Path.home() / ".cache" / "lepton_nb") / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def mode() -> Mode:
    """The run mode named by the environment (``LEPTON_NB_SMOKE`` wins over ``LEPTON_NB_FULL``)."""
    if _flag("LEPTON_NB_SMOKE"):
        return "smoke"
    if _flag("LEPTON_NB_FULL"):
        return "full"
    return "default"


def by_mode(which: str | None, *, smoke: Callable[[], T], default: Callable[[], T], full: Callable[[], T]) -> T:
    """The settings of mode ``which`` (``None``: the environment's :func:`mode`), built by its function.

    Each story module's ``get_config(mode=None)`` is one call of this. A result with a ``mode``
    field gets it set to the chosen mode.

    Raises:
        SettingsError: ``which`` is not "smoke", "default" or "full".
    """
    which = which or mode()
    builders = {"smoke": smoke, "default": default, "full": full}
    if which not in builders:
        raise SettingsError(f"mode {which!r}: choose 'smoke', 'default' or 'full' (or leave it None to follow "
                            "LEPTON_NB_SMOKE=1 / LEPTON_NB_FULL=1)")
    cfg = builders[which]()
    if dataclasses.is_dataclass(cfg) and any(f.name == "mode" for f in dataclasses.fields(cfg)):
        cfg = dataclasses.replace(cfg, mode=which)
    return cfg


@dataclass(frozen=True)
class Augmentation:
    """Random geometric augmentation applied to training batches only.

    Attributes:
        rotation: maximum rotation as a fraction of a full turn (0.05 = 18 degrees).
        shift: maximum translation as a fraction of the image side (bilinear resampling).
        horizontal_flip: mirror left-right; only where the classes are mirror-invariant
            (clothing, histology), never for laterality-bearing images such as chest X-rays.
        shift_pixels: maximum translation in whole pixels, each axis drawn uniformly in
            ``-shift_pixels .. shift_pixels`` per image, the uncovered border filled with zeros (no
            interpolation, cheaper than ``shift``); use one of ``shift`` and ``shift_pixels``.
    """

    rotation: float = 0.03
    shift: float = 0.08
    horizontal_flip: bool = False
    shift_pixels: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rotation <= 0.5:
            raise SettingsError(f"Augmentation.rotation={self.rotation}: use a fraction of a turn in [0, 0.5]")
        if not 0 <= self.shift < 1:
            raise SettingsError(f"Augmentation.shift={self.shift}: use a fraction of the image side in [0, 1)")
        if not isinstance(self.shift_pixels, int) or self.shift_pixels < 0:
            raise SettingsError(f"Augmentation.shift_pixels={self.shift_pixels!r}: use a whole number of pixels >= 0")
        if self.shift and self.shift_pixels:
            raise SettingsError("Augmentation: give shift (a fraction, bilinear) or shift_pixels (whole pixels, zero "
                                "fill), not both; set the other to 0")


@dataclass(frozen=True)
class Scattering:
    """The ScatterNet feature map of :mod:`lepton_nb.features` (kymatio's ``Scattering2D``).

    Attributes:
        J: scales; the features are ``2^J`` times smaller than the image on each side.
        L: orientations of the wavelets. J=2, L=8 maps 28x28 images to 7x7x81 (Tramer & Boneh 2021).
    """

    J: int = 2
    L: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.J, int) or not 1 <= self.J <= 4:
            raise SettingsError(f"Scattering.J={self.J!r}: use 1 to 4 scales (J=2 for 28x28 images)")
        if not isinstance(self.L, int) or not 1 <= self.L <= 32:
            raise SettingsError(f"Scattering.L={self.L!r}: use 1 to 32 orientations (L=8 is the usual choice)")


@dataclass(frozen=True)
class DataConfig:
    """Which data to load and how much of it.

    Attributes:
        dataset: "fashion-mnist" or a MedMNIST flag such as "bloodmnist".
        full: the full 60k/10k set instead of the bundled 6k/4k sample.
        path: a folder of idx files or a MedMNIST ``.npz`` to read instead of the defaults.
        max_train, max_test: stratified subsets (smoke mode), ``None`` for everything.
        validation_fraction: share of the training set held out for early stopping.
        augment: augmentation of training batches, ``None`` for none.
        seed: seed of every random choice made on the data.
    """

    dataset: str = "fashion-mnist"
    full: bool = False
    path: str | None = None
    max_train: int | None = None
    max_test: int | None = None
    validation_fraction: float = 0.1
    augment: Augmentation | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.validation_fraction < 0.5:
            raise SettingsError(
                f"DataConfig.validation_fraction={self.validation_fraction}: use a value in [0, 0.5)"
            )


@dataclass(frozen=True)
class TrainConfig:
    """One training run (Adam by default, as in the seed article).

    Attributes:
        epochs: maximum number of passes over the training set.
        batch_size: examples per step (global batch under a distribution strategy).
        learning_rate: the step size (the peak of a schedule).
        early_stopping_patience: epochs without validation-loss improvement before stopping
            (best weights restored); ``None`` trains for all epochs.
        optimizer: "adam" or "sgd" (momentum 0.9).
        seed: seeds Python, NumPy and TensorFlow before the model is built.
        verbose: Keras progress output (0 silent, 1 bar, 2 one line per epoch).
        tensorboard: write TensorBoard logs under ``reports/tensorboard/<run name>``.
        schedule: learning rate per step: "constant"; "cosine" (from ``learning_rate`` to 0 over
            the run, after the warm-up; Loshchilov & Hutter 2017); "onecycle" (linear warm-up from
            ``learning_rate / 25`` to ``learning_rate``, then cosine to 0; Smith & Topin 2019).
        warmup: fraction of the steps spent warming up (linear from 0 for "cosine"); "onecycle"
            needs a warm-up > 0.
        label_smoothing: epsilon of label smoothing (Szegedy et al. 2016): the target is
            ``(1 - epsilon) one_hot + epsilon / K``; 0 for plain cross-entropy.
        weight_decay: decoupled weight decay (Loshchilov & Hutter 2019, "AdamW"/"SGDW"): each step
            multiplies the weights by ``1 - lr * weight_decay`` (Keras' ``weight_decay``).
        nesterov: Nesterov momentum for "sgd".
        test_time_flip: score the test set on the mean logits of each image and its left-right
            mirror (:func:`lepton_nb.models.flip_averaged`; test-time augmentation, Krizhevsky et
            al. 2012); only for mirror-invariant images (``Dataset.horizontal_flip_ok``).
    """

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    early_stopping_patience: int | None = 4
    optimizer: Literal["adam", "sgd"] = "adam"
    seed: int = 0
    verbose: int = 2
    tensorboard: bool = True
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    warmup: float = 0.0
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    test_time_flip: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise SettingsError(f"TrainConfig.epochs={self.epochs}: train for at least one epoch")
        if self.batch_size < 1:
            raise SettingsError(f"TrainConfig.batch_size={self.batch_size}: use a positive batch size")
        if not self.learning_rate > 0:
            raise SettingsError(f"TrainConfig.learning_rate={self.learning_rate}: must be positive")
        if self.optimizer not in ("adam", "sgd"):
            raise SettingsError(f"TrainConfig.optimizer={self.optimizer!r}: choose 'adam' or 'sgd'")
        if self.schedule not in ("constant", "cosine", "onecycle"):
            raise SettingsError(f"TrainConfig.schedule={self.schedule!r}: choose 'constant', 'cosine' or 'onecycle'")
        if not 0 <= self.warmup < 1:
            raise SettingsError(f"TrainConfig.warmup={self.warmup}: use a fraction of the steps in [0, 1)")
        if self.schedule == "onecycle" and not self.warmup > 0:
            raise SettingsError("TrainConfig: schedule='onecycle' warms up first: set warmup > 0 (e.g. 0.2)")
        if self.schedule == "constant" and self.warmup:
            raise SettingsError("TrainConfig.warmup applies to schedule='cosine' or 'onecycle'; set it to 0")
        if not 0 <= self.label_smoothing < 1:
            raise SettingsError(f"TrainConfig.label_smoothing={self.label_smoothing}: use a value in [0, 1)")
        if not self.weight_decay >= 0:
            raise SettingsError(f"TrainConfig.weight_decay={self.weight_decay}: must be >= 0")
        if self.nesterov and self.optimizer != "sgd":
            raise SettingsError("TrainConfig.nesterov applies to optimizer='sgd' only")


@dataclass(frozen=True)
class DistributionOptions:
    """How :func:`lepton_nb.training.train` runs under a ``tf.distribute`` strategy.

    Attributes:
        per_replica_batch: examples per replica per step; the global batch is then this x the
            strategy's replicas. ``None``: the global batch is ``TrainConfig.batch_size``, split
            evenly over the replicas.
        lr_scaling: how the learning rate follows the global batch, relative to
            ``TrainConfig.batch_size`` at ``TrainConfig.learning_rate``: "none", "linear" (Goyal et
            al. 2017) or "sqrt" (Krizhevsky 2014).
        mixed_precision: ``True`` for the device's policy (bfloat16 on TPU, float16 with loss
            scaling on GPU, float32 on CPU), or a Keras policy name; the output layer stays float32.
        jit_compile: compile the train step with XLA.
        steps_per_execution: train steps per ``tf.function`` call (TPUs want tens to hundreds).
    """

    per_replica_batch: int | None = None
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    mixed_precision: bool | str = False
    jit_compile: bool = False
    steps_per_execution: int = 1

    def __post_init__(self) -> None:
        if self.per_replica_batch is not None and self.per_replica_batch < 1:
            raise SettingsError(f"DistributionOptions.per_replica_batch={self.per_replica_batch}: use a positive "
                                "batch, or None to split TrainConfig.batch_size over the replicas")
        if self.lr_scaling not in ("none", "linear", "sqrt"):
            raise SettingsError(f"DistributionOptions.lr_scaling={self.lr_scaling!r}: choose 'none', 'linear' or 'sqrt'")
        if not isinstance(self.steps_per_execution, int) or self.steps_per_execution < 1:
            raise SettingsError(f"DistributionOptions.steps_per_execution={self.steps_per_execution!r}: use an "
                                "integer >= 1")
        policies = (True, False, "float32", "mixed_float16", "mixed_bfloat16")
        if self.mixed_precision not in policies:
            raise SettingsError(f"DistributionOptions.mixed_precision={self.mixed_precision!r}: use True (the "
                                "device's policy), False, or one of 'float32', 'mixed_float16', 'mixed_bfloat16'")


@dataclass(frozen=True)
class CNNConfig:
    """A member of the CNN family built by :func:`lepton_nb.models.build_cnn`.

    ``CNNConfig()`` is the seed article's CNN: Conv2D(32, 3x3, ReLU), MaxPool 2x2, Flatten,
    Dense(128, ReLU), Dense(10).

    Attributes:
        filters: filters of the first block; each further block doubles them.
        depth: number of conv blocks, each ending in 2x2 max pooling (at most 3 for 28x28).
        convs_per_block: convolutions in each block.
        norm: "none", "batch" or "group" normalization after each convolution.
        activation: "relu" or "tanh" (tanh for DP training, Papernot et al. 2021).
        dense_units: width of the hidden dense layer, 0 for none.
        dropout: dropout rate before the classifier.
    """

    filters: int = 32
    depth: int = 1
    convs_per_block: int = 1
    norm: Literal["none", "batch", "group"] = "none"
    activation: Literal["relu", "tanh"] = "relu"
    dense_units: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.depth <= 3:
            raise SettingsError(f"CNNConfig.depth={self.depth}: 28x28 inputs allow 1 to 3 pooled blocks")
        if self.norm not in ("none", "batch", "group"):
            raise SettingsError(f"CNNConfig.norm={self.norm!r}: choose 'none', 'batch' or 'group'")
        if self.activation not in ("relu", "tanh"):
            raise SettingsError(f"CNNConfig.activation={self.activation!r}: choose 'relu' or 'tanh'")
        if self.filters < 1 or self.convs_per_block < 1 or self.dense_units < 0:
            raise SettingsError("CNNConfig: filters and convs_per_block must be >= 1, dense_units >= 0")
        if not 0 <= self.dropout < 1:
            raise SettingsError(f"CNNConfig.dropout={self.dropout}: use a rate in [0, 1)")

    @property
    def label(self) -> str:
        """A short readable name such as ``cnn-d2x2-f32-batch-relu``."""
        return f"cnn-d{self.depth}x{self.convs_per_block}-f{self.filters}-{self.norm}-{self.activation}"


#: The seed article's CNN: Conv2D(32, 3x3, ReLU), MaxPool 2x2, Flatten, Dense(128, ReLU), Dense(10).
SEED_CNN = CNNConfig()
#: The DP-friendly member of the CNN family: GroupNorm (per example) and tanh (Papernot et al.
#: 2021, "Tempered Sigmoid Activations for Deep Learning with Differential Privacy"), small.
DP_CNN = CNNConfig(filters=16, depth=2, norm="group", activation="tanh", dense_units=32)
#: The same without normalization (Papernot et al.'s own CNNs have none): faster under DP on CPUs,
#: where Keras' GroupNormalization is slow.
DP_CNN_NO_NORM = CNNConfig(filters=16, depth=2, norm="none", activation="tanh", dense_units=32)
#: The fast non-private recipe of notebook 01 full mode: two conv blocks with BatchNorm, one convolution
#: each, trained with :data:`FAST_CNN_TRAIN` and :data:`FAST_CNN_AUGMENT`.
FAST_CNN = CNNConfig(filters=32, depth=2, convs_per_block=1, norm="batch", dense_units=128, dropout=0.2)
#: SGD with Nesterov momentum, one-cycle learning rate peaking at 0.1 (20 % warm-up), label smoothing
#: 0.1, decoupled weight decay 5e-4, batch 256, 30 epochs, no early stopping. The epochs were chosen on
#: the 6,000-image validation split of the training set (25 epochs: 93.52 %, 30: 93.88 %), never the test set;
#: 30 epochs train in 390-460 s on 2 quiet CPU cores. The test set is scored with left-right flip averaging,
#: also chosen on validation (two runs: 93.75 -> 94.12 %, 93.87 -> 94.03 %; adding 1-pixel shifts: 94.03 %, no gain).
FAST_CNN_TRAIN = TrainConfig(epochs=30, batch_size=256, learning_rate=0.1, optimizer="sgd", nesterov=True,
                             schedule="onecycle", warmup=0.2, label_smoothing=0.1, weight_decay=5e-4,
                             early_stopping_patience=None, test_time_flip=True)
#: Whole-pixel shifts of up to 2 pixels with zero fill, and left-right flips (for mirror-invariant classes).
FAST_CNN_AUGMENT = Augmentation(rotation=0.0, shift=0.0, shift_pixels=2, horizontal_flip=True)
