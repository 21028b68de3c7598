"""Frozen settings, one dataclass per concern, with default, smoke and full variants.

The mode comes from the environment so that a notebook's single ``parameters`` cell works
unchanged under ``make run`` / ``make test``:

- ``LEPTON_NB_SMOKE=1``: seconds-long settings (tiny subsets, one epoch) that check everything runs;
- ``LEPTON_NB_FULL=1``: the full 60k/10k data and longer training (the real figures);
- neither: the default, real training on the bundled 6,000/4,000 sample.

Override a field with :func:`dataclasses.replace`, e.g. ``replace(cfg.train, epochs=3)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Literal

Mode = Literal["smoke", "default", "full"]

__all__ = [
    "Augmentation",
    "BaselinesConfig",
    "CNNConfig",
    "DataConfig",
    "TrainConfig",
    "baselines",
    "mode",
    "replace",
]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def mode() -> Mode:
    """The run mode named by the environment (``LEPTON_NB_SMOKE`` wins over ``LEPTON_NB_FULL``)."""
    if _flag("LEPTON_NB_SMOKE"):
        return "smoke"
    if _flag("LEPTON_NB_FULL"):
        return "full"
    return "default"


@dataclass(frozen=True)
class Augmentation:
    """Random geometric augmentation applied to training batches only.

    Attributes:
        rotation: maximum rotation as a fraction of a full turn (0.05 = 18 degrees).
        shift: maximum translation as a fraction of the image side.
        horizontal_flip: mirror left-right; only where the classes are mirror-invariant
            (clothing, histology), never for laterality-bearing images such as chest X-rays.
    """

    rotation: float = 0.03
    shift: float = 0.08
    horizontal_flip: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.rotation <= 0.5:
            raise ValueError(f"Augmentation.rotation={self.rotation}: use a fraction of a turn in [0, 0.5]")
        if not 0 <= self.shift < 1:
            raise ValueError(f"Augmentation.shift={self.shift}: use a fraction of the image side in [0, 1)")


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
            raise ValueError(
                f"DataConfig.validation_fraction={self.validation_fraction}: use a value in [0, 0.5)"
            )


@dataclass(frozen=True)
class TrainConfig:
    """One training run (Adam by default, as in the seed article).

    Attributes:
        epochs: maximum number of passes over the training set.
        batch_size: examples per step (global batch under a distribution strategy).
        learning_rate: Adam's step size.
        early_stopping_patience: epochs without validation-loss improvement before stopping
            (best weights restored); ``None`` trains for all epochs.
        optimizer: "adam" or "sgd" (momentum 0.9).
        seed: seeds Python, NumPy and TensorFlow before the model is built.
        verbose: Keras progress output (0 silent, 1 bar, 2 one line per epoch).
        tensorboard: write TensorBoard logs under ``reports/tensorboard/<run name>``.
    """

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    early_stopping_patience: int | None = 4
    optimizer: Literal["adam", "sgd"] = "adam"
    seed: int = 0
    verbose: int = 2
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs={self.epochs}: train for at least one epoch")
        if self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size={self.batch_size}: use a positive batch size")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate={self.learning_rate}: must be positive")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"TrainConfig.optimizer={self.optimizer!r}: choose 'adam' or 'sgd'")


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
            raise ValueError(f"CNNConfig.depth={self.depth}: 28x28 inputs allow 1 to 3 pooled blocks")
        if self.norm not in ("none", "batch", "group"):
            raise ValueError(f"CNNConfig.norm={self.norm!r}: choose 'none', 'batch' or 'group'")
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"CNNConfig.activation={self.activation!r}: choose 'relu' or 'tanh'")
        if self.filters < 1 or self.convs_per_block < 1 or self.dense_units < 0:
            raise ValueError("CNNConfig: filters and convs_per_block must be >= 1, dense_units >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"CNNConfig.dropout={self.dropout}: use a rate in [0, 1)")

    @property
    def label(self) -> str:
        """A short readable name such as ``cnn-d2x2-f32-batch-relu``."""
        return f"cnn-d{self.depth}x{self.convs_per_block}-f{self.filters}-{self.norm}-{self.activation}"


SEED_CNN = CNNConfig()

#: The family members notebook 01 compares beside the seed CNN, by mode.
_FAMILY = {
    "smoke": (CNNConfig(filters=8, depth=2, norm="batch"),),
    "default": (
        CNNConfig(filters=32, depth=2, norm="batch", dropout=0.3),
    ),
    "full": (
        CNNConfig(filters=32, depth=2, norm="batch", dropout=0.3),
        CNNConfig(filters=32, depth=2, convs_per_block=2, norm="batch", dropout=0.4, dense_units=256),
    ),
}


@dataclass(frozen=True)
class BaselinesConfig:
    """Notebook 01: the data, the seed MLP and CNN, and a few members of the CNN family."""

    mode: Mode = "default"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    family: tuple[CNNConfig, ...] = _FAMILY["default"]
    family_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=25, early_stopping_patience=5))
    augment_family: Augmentation | None = field(default_factory=Augmentation)


def baselines(which: Mode | None = None) -> BaselinesConfig:
    """Settings of notebook 01 for ``which`` mode (default: the environment's :func:`mode`)."""
    which = which or mode()
    if which == "smoke":
        return BaselinesConfig(
            mode="smoke",
            data=DataConfig(max_train=600, max_test=300),
            train=TrainConfig(epochs=1, early_stopping_patience=None, verbose=0, tensorboard=False),
            family=_FAMILY["smoke"],
            family_train=TrainConfig(epochs=1, early_stopping_patience=None, verbose=0, tensorboard=False),
            augment_family=Augmentation(),
        )
    if which == "full":
        return BaselinesConfig(
            mode="full",
            data=DataConfig(full=True),
            train=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4),
            family=_FAMILY["full"],
            family_train=TrainConfig(epochs=40, batch_size=128, early_stopping_patience=6),
        )
    if which != "default":
        raise ValueError(f"mode {which!r}: choose 'smoke', 'default' or 'full'")
    return BaselinesConfig()


# Settings of the later notebooks live beside their code and are reachable here too, imported on
# first use (PEP 562) so that this module stays free of TensorFlow and of import cycles:
# ``ln.config.interpretability()``, ``ln.config.federated()``, ``ln.config.distributed()``, ...
_ELSEWHERE = {
    "CaseStudyConfig": ("lepton_nb.case_study", "CaseStudyConfig"),
    "case_study": ("lepton_nb.case_study", "case_study"),
    "DistributedConfig": ("lepton_nb.distributed", "DistributedConfig"),
    "distributed": ("lepton_nb.distributed", "config"),  # imports TensorFlow
    "DPNotebookConfig": ("lepton_nb.privacy.config", "DPNotebookConfig"),
    "dp_notebook": ("lepton_nb.privacy.config", "dp_notebook"),
    "differential_privacy": ("lepton_nb.privacy.config", "dp_notebook"),
    "ExplainConfig": ("lepton_nb.explain.config", "ExplainConfig"),
    "interpretability": ("lepton_nb.explain.config", "interpretability"),
    "FederatedConfig": ("lepton_nb.federated.config", "FederatedConfig"),
    "federated": ("lepton_nb.federated.config", "federated"),
}
__all__ += list(_ELSEWHERE)


def __getattr__(name: str):
    if name in _ELSEWHERE:
        import importlib

        module, attr = _ELSEWHERE[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lepton_nb.config' has no attribute {name!r}")
