"""Notebook 01, data and baselines: its settings, the CNN-family runs and the prose about the claim.

The seed article's 2x128 MLP and CNN and members of the CNN family are trained with
:func:`lepton_nb.training.train` and scored beside the article's claimed accuracy / macro recall /
macro F1 (:data:`lepton_nb.metrics.SEED_CLAIM`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lepton_nb.settings import Augmentation, CNNConfig, DataConfig, Mode, TrainConfig, by_mode

__all__ = ["BaselinesConfig", "SECTION", "claim_markdown", "confusions_markdown", "get_config", "quality_failures",
           "train_family"]

SECTION = "01_data_and_baselines"


@dataclass(frozen=True)
class BaselinesConfig:
    """Notebook 01.

    Attributes:
        data: the data (the bundled sample by default).
        train: training of the seed's MLP and CNN (Adam 1e-3, early stopping).
        family: members of the CNN family trained beside them.
        family_train: their training.
        augment_family: augmentation of the family members' training batches.
        min_seed_cnn_accuracy: quality floor (%) of the seed CNN, checked outside smoke mode.
        min_family_accuracy: quality floor (%) of the best family member, checked outside smoke mode.
    """

    mode: Mode = "default"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    family: tuple[CNNConfig, ...] = (CNNConfig(filters=32, depth=2, norm="batch", dropout=0.3),)
    family_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=25, early_stopping_patience=5))
    augment_family: Augmentation | None = field(default_factory=Augmentation)
    min_seed_cnn_accuracy: float | None = 85.0
    min_family_accuracy: float | None = None


def _smoke() -> BaselinesConfig:
    quick = TrainConfig(epochs=1, early_stopping_patience=None, verbose=0, tensorboard=False)
    return BaselinesConfig(data=DataConfig(max_train=600, max_test=300), train=quick,
                           family=(CNNConfig(filters=8, depth=2, norm="batch"),), family_train=quick,
                           min_seed_cnn_accuracy=None)


def _full() -> BaselinesConfig:
    return BaselinesConfig(
        data=DataConfig(full=True),
        train=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4),
        family=(CNNConfig(filters=32, depth=2, norm="batch", dropout=0.3),
                CNNConfig(filters=32, depth=2, convs_per_block=2, norm="batch", dropout=0.4, dense_units=256)),
        family_train=TrainConfig(epochs=40, batch_size=128, early_stopping_patience=6),
        min_seed_cnn_accuracy=None, min_family_accuracy=92.0)


def get_config(mode: Mode | None = None) -> BaselinesConfig:
    """Settings of notebook 01 for ``mode`` (default: ``LEPTON_NB_SMOKE`` / ``LEPTON_NB_FULL``)."""
    return by_mode(mode, smoke=_smoke, default=BaselinesConfig, full=_full)


def train_family(ds, cfg: BaselinesConfig) -> dict:
    """Each member of ``cfg.family`` trained on ``ds`` with augmentation; ``{label: TrainResult}``."""
    from lepton_nb.models import build_cnn
    from lepton_nb.training import train

    data_cfg = replace(cfg.data, augment=cfg.augment_family)
    return {c.label: train(lambda c=c: build_cnn(c, input_shape=ds.input_shape, num_classes=ds.num_classes), ds,
                           cfg.family_train, data_cfg=data_cfg, name=c.label)
            for c in cfg.family}


def claim_markdown(results: dict[str, dict], claim: dict[str, float] | None = None) -> str:
    """A paragraph comparing measured figures with the seed's claim, every number from ``results``.

    ``results`` maps model names to :func:`lepton_nb.metrics.report` dicts (fractions).
    """
    from lepton_nb.metrics import SEED_CLAIM

    claim = claim or SEED_CLAIM
    best = max(results, key=lambda k: results[k]["accuracy"])
    b = results[best]
    parts = [f"The seed article claims accuracy {claim['accuracy']:.1f} %, macro recall "
             f"{claim['recall_macro']:.1f} % and macro F1 {claim['f1_macro']:.1f} % for a 2x128 MLP."]
    for name, r in results.items():
        parts.append(f"**{name}** measured {100 * r['accuracy']:.1f} / {100 * r['recall_macro']:.1f} / "
                     f"{100 * r['f1_macro']:.1f} % on {r['n']:,} test images.")
    gap = 100 * b["accuracy"] - claim["accuracy"]
    parts.append(f"The best model here, {best}, is {abs(gap):.1f} points {'below' if gap < 0 else 'above'} "
                 "the claimed accuracy.")
    return " ".join(parts)


def confusions_markdown(rep: dict, model: str, k: int = 3) -> str:
    """A sentence naming the ``k`` most frequent confusions of a report, counts from the run."""
    from lepton_nb.metrics import top_confusions

    pairs = top_confusions(rep, k)
    if not pairs:
        return f"{model} made no errors on these {rep['n']:,} test images."
    listed = "; ".join(f"{t} taken for {p} {c} times" for t, p, c in pairs)
    wrong = rep["n"] - sum(np.diag(np.asarray(rep["confusion"])))
    return (f"Titles in red are wrong predictions. {model} got {wrong:,} of {rep['n']:,} test images wrong; "
            f"its most frequent confusions: {listed}.")


def quality_failures(cfg: BaselinesConfig, accuracy: dict[str, float]) -> list[str]:
    """What fails notebook 01's quality floors (``accuracy``: model name -> test accuracy %)."""
    failures = []
    if cfg.min_seed_cnn_accuracy is not None and accuracy["seed_cnn"] < cfg.min_seed_cnn_accuracy:
        failures.append(f"seed CNN reached {accuracy['seed_cnn']} % (< {cfg.min_seed_cnn_accuracy} %)")
    if cfg.min_family_accuracy is not None:
        best = max(accuracy[c.label] for c in cfg.family)
        if best < cfg.min_family_accuracy:
            failures.append(f"best CNN-family accuracy {best} % (< {cfg.min_family_accuracy} %)")
    return failures
