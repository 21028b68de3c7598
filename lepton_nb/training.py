"""The one training entry point every notebook uses: seed, build, compile, fit, time, evaluate.

Models output logits (see :mod:`lepton_nb.models`), so the loss is
``SparseCategoricalCrossentropy(from_logits=True)``. Early stopping watches the validation loss of
a stratified hold-out of the training set and restores the best weights; the test set is used only
for the final evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from lepton_nb import metrics
from lepton_nb.config import Augmentation, DataConfig, TrainConfig
from lepton_nb.data import Dataset, pipeline, split_validation

__all__ = ["EpochTimer", "TrainResult", "compile_model", "evaluate", "predict_classes", "set_seed", "train"]

ModelFn = Callable[[], tf.keras.Model]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (weights, shuffling, dropout, augmentation)."""
    tf.keras.utils.set_random_seed(seed)


def make_optimizer(cfg: TrainConfig) -> tf.keras.optimizers.Optimizer:
    if cfg.optimizer == "sgd":
        return tf.keras.optimizers.SGD(cfg.learning_rate, momentum=0.9)
    return tf.keras.optimizers.Adam(cfg.learning_rate)


def compile_model(model: tf.keras.Model, cfg: TrainConfig, **compile_kwargs) -> tf.keras.Model:
    """Compile a logits model with the configured optimizer, cross-entropy and accuracy."""
    model.compile(
        optimizer=compile_kwargs.pop("optimizer", None) or make_optimizer(cfg),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        **compile_kwargs,
    )
    return model


class EpochTimer(tf.keras.callbacks.Callback):
    """Records the wall time of every epoch in ``self.seconds``."""

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t0)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained Keras model (best validation weights when early stopping ran).
        history: per-epoch ``loss``, ``accuracy`` (and ``val_*``) lists.
        epoch_seconds: wall time of each epoch (the first includes tracing).
        report: :func:`lepton_nb.metrics.report` on the test set, if a test set was given.
    """

    name: str
    model: tf.keras.Model
    history: dict[str, list[float]]
    epoch_seconds: list[float]
    config: TrainConfig
    report: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def epochs_run(self) -> int:
        return len(self.epoch_seconds)

    @property
    def seconds(self) -> float:
        return float(sum(self.epoch_seconds))

    def summary(self) -> dict:
        """Figures for reports: metrics in percent, epochs, time, parameters."""
        from lepton_nb.models import count_params

        out = {"params": count_params(self.model), "epochs": self.epochs_run,
               "train_seconds": round(self.seconds, 1)}
        if self.report:
            out.update({k: round(100 * self.report[k], 2) for k in ("accuracy", "recall_macro", "f1_macro")})
        return {**out, **self.extra}


def train(
    model_fn: ModelFn | tf.keras.Model,
    data: Dataset,
    cfg: TrainConfig = TrainConfig(),
    *,
    data_cfg: DataConfig = DataConfig(),
    augment: Augmentation | None = None,
    name: str | None = None,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    evaluate_test: bool = True,
) -> TrainResult:
    """Train a classifier on ``data`` and evaluate it on the test split.

    Args:
        model_fn: a function returning a fresh, uncompiled logits model (called after seeding),
            or a model.
        data: the data set; a stratified ``data_cfg.validation_fraction`` of its training split
            is held out for early stopping (MedMNIST's own validation split is used when present).
        cfg: epochs, batch size, optimizer, early stopping, seed, TensorBoard.
        augment: augmentation of training batches (``None`` for none; defaults to ``data_cfg.augment``).
        name: run name for logs and reports (default: the model's name).

    Returns:
        A :class:`TrainResult` with history, epoch times and the test-set report.
    """
    from lepton_nb.reports import reports_dir

    set_seed(cfg.seed)
    model = model_fn() if not isinstance(model_fn, tf.keras.Model) else model_fn
    name = name or model.name
    if model.output_shape[-1] != data.num_classes:
        raise ValueError(f"model {model.name!r} has {model.output_shape[-1]} outputs but the data has "
                         f"{data.num_classes} classes; build it with num_classes={data.num_classes}")
    if tuple(model.input_shape[1:]) != data.input_shape:
        raise ValueError(f"model {model.name!r} expects inputs {model.input_shape[1:]} but the images "
                         f"are {data.input_shape}")
    if not model.optimizer:
        compile_model(model, cfg)

    if data.x_val is not None:
        x_tr, y_tr, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    elif data_cfg.validation_fraction > 0:
        x_tr, y_tr, x_val, y_val = split_validation(data.x_train, data.y_train,
                                                    data_cfg.validation_fraction, data_cfg.seed)
    else:
        x_tr, y_tr, x_val, y_val = data.x_train, data.y_train, None, None
    if cfg.batch_size > len(x_tr):
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the {len(x_tr)} training examples")

    augment = augment if augment is not None else data_cfg.augment
    train_ds = pipeline(x_tr, y_tr, batch_size=cfg.batch_size, shuffle=True, augment=augment, seed=cfg.seed)
    val_ds = pipeline(x_val, y_val, batch_size=256, shuffle=False) if x_val is not None else None

    timer = EpochTimer()
    cbs: list[tf.keras.callbacks.Callback] = [timer, *callbacks]
    if cfg.early_stopping_patience is not None and val_ds is not None:
        cbs.append(tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                                    restore_best_weights=True))
    if cfg.tensorboard:
        cbs.append(tf.keras.callbacks.TensorBoard(log_dir=str(reports_dir() / "tensorboard" / name),
                                                  histogram_freq=0, write_graph=False))
    hist = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=cbs, verbose=cfg.verbose)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    result = TrainResult(name, model, history, timer.seconds, cfg)
    if evaluate_test:
        result.report = evaluate(model, data.x_test, data.y_test, class_names=data.class_names)
    return result


def predict_classes(model: tf.keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted class indices (N,)."""
    return model.predict(x, batch_size=batch_size, verbose=0).argmax(axis=1)


def evaluate(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, *, class_names=None,
             batch_size: int = 256) -> dict:
    """:func:`lepton_nb.metrics.report` of ``model`` on ``(x, y)``, plus ``y_pred``."""
    y_pred = predict_classes(model, x, batch_size)
    rep = metrics.report(y, y_pred, class_names=class_names, num_classes=len(class_names) if class_names else None)
    rep["y_pred"] = y_pred
    return rep
