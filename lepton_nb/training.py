"""The one training entry point every notebook uses: seed, build, compile, fit, time, evaluate.

Models output logits (see :mod:`lepton_nb.models`), so the loss is
``SparseCategoricalCrossentropy(from_logits=True)``. Early stopping watches the validation loss of
a stratified hold-out of the training set and restores the best weights; the test set is used only
for the final evaluation.

Under a ``tf.distribute`` strategy (:mod:`lepton_nb.distributed`) the model is built and compiled
inside ``strategy.scope()``; the pipeline is batched once with the **global** batch and Keras
splits every batch over the replicas (no double batching); the loss is averaged over the global
batch and metrics are aggregated across replicas. ``backup_dir`` makes a run resumable after a
crash or SIGKILL (Keras ``BackupAndRestore``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from lepton_nb import metrics
from lepton_nb.reports import Summary
from lepton_nb.config import Augmentation, DataConfig, TrainConfig
from lepton_nb.data import Dataset, pipeline, split_validation

__all__ = ["EpochTimer", "TrainResult", "compile_model", "epoch_indexed_pipeline", "evaluate", "predict_classes",
           "resume_epoch", "scaled_learning_rate", "set_seed", "train"]

ModelFn = Callable[[], tf.keras.Model]
LR_SCALING = ("none", "linear", "sqrt")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (weights, shuffling, dropout, augmentation)."""
    tf.keras.utils.set_random_seed(seed)


def make_optimizer(cfg: TrainConfig, learning_rate: float | None = None) -> tf.keras.optimizers.Optimizer:
    lr = cfg.learning_rate if learning_rate is None else learning_rate
    if cfg.optimizer == "sgd":
        return tf.keras.optimizers.SGD(lr, momentum=0.9)
    return tf.keras.optimizers.Adam(lr)


def scaled_learning_rate(cfg: TrainConfig, global_batch: int, rule: str = "none") -> float:
    """The learning rate for ``global_batch`` when ``cfg.learning_rate`` was tuned at ``cfg.batch_size``.

    ``"linear"``: lr x global_batch / cfg.batch_size (Goyal et al. 2017, "Accurate, Large Minibatch
    SGD", for SGD); ``"sqrt"``: lr x sqrt(global_batch / cfg.batch_size) (Krizhevsky 2014; closer to
    what adaptive optimizers such as Adam tolerate); ``"none"``: unchanged.
    """
    if rule not in LR_SCALING:
        raise ValueError(f"lr_scaling={rule!r}: choose one of {', '.join(LR_SCALING)}")
    ratio = global_batch / cfg.batch_size
    return cfg.learning_rate * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


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
        history: per-epoch ``loss``, ``accuracy`` (and ``val_*``) lists (only the epochs this call
            ran: a resumed run lists the epochs after the restored one).
        epoch_seconds: wall time of each epoch (the first includes tracing).
        report: :func:`lepton_nb.metrics.report` on the test set, if a test set was given.
        distribution: strategy choice, replicas, global and per-replica batch, learning rate and
            its scaling rule, precision policy, XLA, steps per execution, resume epoch.
        train_examples: images in one training epoch.
    """

    name: str
    model: tf.keras.Model
    history: dict[str, list[float]]
    epoch_seconds: list[float]
    config: TrainConfig
    report: dict | None = None
    extra: dict = field(default_factory=dict)
    distribution: dict = field(default_factory=dict)
    train_examples: int = 0

    @property
    def epochs_run(self) -> int:
        return len(self.epoch_seconds)

    @property
    def seconds(self) -> float:
        return float(sum(self.epoch_seconds))

    def images_per_second(self) -> float:
        """Training throughput: median over epochs after the first (which includes tracing)."""
        steady = self.epoch_seconds[1:] or self.epoch_seconds
        return float(self.train_examples / np.median(steady)) if steady else float("nan")

    def summary(self) -> dict:
        """Figures for reports: metrics in percent, epochs, time, parameters."""
        from lepton_nb.models import count_params

        out = {"params": count_params(self.model), "epochs": self.epochs_run,
               "train_seconds": round(self.seconds, 1)}
        if self.report:
            out.update({k: round(100 * self.report[k], 2) for k in ("accuracy", "recall_macro", "f1_macro")})
        return Summary({**out, **self.extra})


def resume_epoch(backup_dir: str | os.PathLike) -> int:
    """The epoch a run backed up in ``backup_dir`` resumes at (0 when there is no backup).

    Reads the ``ckpt_saved_epoch`` that Keras ``BackupAndRestore`` stores beside the weights.
    """
    latest = tf.train.latest_checkpoint(os.path.join(os.fspath(backup_dir), "chief"))
    if latest is None:
        return 0
    saved = int(tf.train.load_checkpoint(latest).get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    return saved + 1 if saved >= 0 else 0


def epoch_indexed_pipeline(x: np.ndarray, y: np.ndarray, *, batch_size: int, epochs: int, start_epoch: int = 0,
                           seed: int = 0, augment: Augmentation | None = None,
                           drop_remainder: bool = False) -> tf.data.Dataset:
    """Epochs ``start_epoch .. epochs-1`` back to back, epoch ``e`` in its own fixed order.

    Epoch ``e`` is shuffled with the op seed ``seed * 1_000_003 + e`` (and the global seed that
    :func:`set_seed` sets, as :func:`train` does). Unlike ``shuffle(reshuffle_each_iteration=True)``, whose order depends on how many epochs the
    process has already iterated, epoch ``e`` here is the same permutation in a fresh process, so a
    run resumed at epoch ``e`` sees exactly the batches an uninterrupted run would. Every epoch
    yields ``ceil(N / batch_size)`` batches (``floor`` with ``drop_remainder``) of
    ``(images (B, H, W, C) float32, labels (B,) int64)``.
    """
    from lepton_nb.data import augmenter

    if not 0 <= start_epoch < epochs:
        raise ValueError(f"start_epoch={start_epoch} outside 0..{epochs - 1}")
    base = tf.data.Dataset.from_tensor_slices((np.asarray(x, np.float32), np.asarray(y, np.int64)))
    n = len(x)
    ds = None
    for e in range(start_epoch, epochs):  # one fixed permutation per epoch, chained
        epoch_ds = base.shuffle(n, seed=seed * 1_000_003 + e, reshuffle_each_iteration=False).batch(
            batch_size, drop_remainder=drop_remainder)
        ds = epoch_ds if ds is None else ds.concatenate(epoch_ds)
    if augment is not None:
        layer = augmenter(augment, seed)
        ds = ds.map(lambda a, b: (layer(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _policy(mixed_precision: bool | str | None, strategy: tf.distribute.Strategy | None) -> str | None:
    if mixed_precision is None or mixed_precision is False:
        return None
    if mixed_precision is True:
        from lepton_nb.distributed import precision_policy

        return precision_policy(strategy)
    return str(mixed_precision)


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
    strategy: tf.distribute.Strategy | None = None,
    per_replica_batch: int | None = None,
    lr_scaling: str = "none",
    mixed_precision: bool | str = False,
    jit_compile: bool = False,
    steps_per_execution: int = 1,
    backup_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> TrainResult:
    """Train a classifier on ``data`` and evaluate it on the test split.

    Args:
        model_fn: a function returning a fresh, uncompiled logits model (called after seeding,
            inside ``strategy.scope()``), or a model (only without ``strategy``).
        data: the data set; a stratified ``data_cfg.validation_fraction`` of its training split
            is held out for early stopping (MedMNIST's own validation split is used when present).
        cfg: epochs, batch size, optimizer, early stopping, seed, TensorBoard.
        augment: augmentation of training batches (``None`` for none; defaults to ``data_cfg.augment``).
        name: run name for logs and reports (default: the model's name).
        strategy: a ``tf.distribute`` strategy (:func:`lepton_nb.distributed.strategy`); ``None``
            for the default (current) strategy.
        per_replica_batch: examples per replica per step; the global batch is then
            ``per_replica_batch x strategy.num_replicas_in_sync``. ``None``: the global batch is
            ``cfg.batch_size``, split evenly over the replicas.
        lr_scaling: how the learning rate follows the global batch, relative to ``cfg.batch_size``
            at ``cfg.learning_rate``: "none", "linear" or "sqrt" (:func:`scaled_learning_rate`).
        mixed_precision: ``True`` for the device's policy (bfloat16 on TPU, float16 with loss
            scaling on GPU, float32 on CPU), or a policy name; the output layer stays float32.
        jit_compile: compile the train step with XLA.
        steps_per_execution: train steps run per ``tf.function`` call (fewer host round trips;
            TPUs want tens to hundreds).
        backup_dir: back up the training state every epoch (Keras ``BackupAndRestore``); a run
            restarted with the same arguments after a crash or SIGKILL resumes after the last
            completed epoch, with the same batches (:func:`epoch_indexed_pipeline`). The backup
            is deleted when training completes. Early-stopping counters are not backed up.
        checkpoint_dir: also keep the weights of every epoch there (``epoch-NNN`` checkpoints).

    Returns:
        A :class:`TrainResult` with history, epoch times, the test-set report and ``distribution``.

    Raises:
        ValueError: on mismatched model and data, a batch larger than the data, or options that
            need a model function (strategy) -- before any training starts.
    """
    from lepton_nb.distributed import choice_of, float32_logits, precision_scope, quiet_tf_logging
    from lepton_nb.reports import reports_dir

    prebuilt = isinstance(model_fn, tf.keras.Model)
    if strategy is not None and prebuilt:
        raise ValueError("with strategy=..., pass a function that builds the model (e.g. lambda: "
                         "ln.models.build_seed_cnn()) so it is created inside strategy.scope()")
    if per_replica_batch is not None and per_replica_batch < 1:
        raise ValueError(f"per_replica_batch={per_replica_batch}: use a positive batch size")
    if not isinstance(steps_per_execution, int) or steps_per_execution < 1:
        raise ValueError(f"steps_per_execution={steps_per_execution!r}: use an integer >= 1")
    strat = strategy or tf.distribute.get_strategy()
    replicas = strat.num_replicas_in_sync
    global_batch = per_replica_batch * replicas if per_replica_batch else cfg.batch_size
    learning_rate = scaled_learning_rate(cfg, global_batch, lr_scaling)
    policy = _policy(mixed_precision, strategy)
    choice = choice_of(strat)
    if prebuilt and (policy or jit_compile or steps_per_execution != 1 or lr_scaling != "none") and model_fn.optimizer:
        raise ValueError("mixed_precision, jit_compile, steps_per_execution and lr_scaling apply when train() "
                         "builds and compiles the model: pass a model function instead of a compiled model")

    if jit_compile and choice.kind == "cpu" and replicas > 1:
        raise ValueError("jit_compile=True does not work mirrored over logical CPU devices (XLA's CPU backend "
                         "cannot reach a variable placed on another logical CPU: 'Trying to access resource ... "
                         "located in device CPU:1 from device CPU:0'); use XLA with one replica, or on GPUs/TPU")
    set_seed(cfg.seed)
    with strat.scope(), precision_scope(policy):
        model = model_fn if prebuilt else model_fn()
        if policy and policy != "float32":
            model = float32_logits(model)
        name = name or model.name
        if model.output_shape[-1] != data.num_classes:
            raise ValueError(f"model {model.name!r} has {model.output_shape[-1]} outputs but the data has "
                             f"{data.num_classes} classes; build it with num_classes={data.num_classes}")
        if tuple(model.input_shape[1:]) != data.input_shape:
            raise ValueError(f"model {model.name!r} expects inputs {model.input_shape[1:]} but the images "
                             f"are {data.input_shape}")
        if not model.optimizer:
            compile_model(model, cfg, optimizer=make_optimizer(cfg, learning_rate),
                          steps_per_execution=steps_per_execution, jit_compile=jit_compile or None)

    if data.x_val is not None:
        x_tr, y_tr, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    elif data_cfg.validation_fraction > 0:
        x_tr, y_tr, x_val, y_val = split_validation(data.x_train, data.y_train,
                                                    data_cfg.validation_fraction, data_cfg.seed)
    else:
        x_tr, y_tr, x_val, y_val = data.x_train, data.y_train, None, None
    if global_batch > len(x_tr):
        raise ValueError(f"global batch {global_batch} is larger than the {len(x_tr)} training examples")

    augment = augment if augment is not None else data_cfg.augment
    static = choice.kind == "tpu"  # XLA on TPU wants every batch the same shape
    fit_kwargs: dict = {}
    start_epoch = resume_epoch(backup_dir) if backup_dir is not None else 0
    if backup_dir is not None:
        train_ds = epoch_indexed_pipeline(x_tr, y_tr, batch_size=global_batch, epochs=cfg.epochs,
                                          start_epoch=min(start_epoch, cfg.epochs - 1), seed=cfg.seed,
                                          augment=augment, drop_remainder=static)
        fit_kwargs["steps_per_epoch"] = (len(x_tr) // global_batch if static
                                         else math.ceil(len(x_tr) / global_batch))
    else:
        train_ds = pipeline(x_tr, y_tr, batch_size=global_batch, shuffle=True, augment=augment, seed=cfg.seed,
                            drop_remainder=static)
    val_ds = (pipeline(x_val, y_val, batch_size=256, shuffle=False, drop_remainder=static and len(x_val) >= 256)
              if x_val is not None else None)
    if strategy is not None:  # in-memory data: shard by examples across workers (no files to shard)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_ds = train_ds.with_options(options)
        val_ds = val_ds.with_options(options) if val_ds is not None else None

    timer = EpochTimer()
    cbs: list[tf.keras.callbacks.Callback] = []
    if backup_dir is not None:
        cbs.append(tf.keras.callbacks.BackupAndRestore(os.fspath(backup_dir)))
    cbs += [timer, *callbacks]
    if checkpoint_dir is not None:
        cbs.append(tf.keras.callbacks.ModelCheckpoint(os.path.join(os.fspath(checkpoint_dir), "epoch-{epoch:03d}"),
                                                      save_weights_only=True))
    if cfg.early_stopping_patience is not None and val_ds is not None:
        cbs.append(tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                                    restore_best_weights=True))
    if cfg.tensorboard:
        cbs.append(tf.keras.callbacks.TensorBoard(log_dir=str(reports_dir() / "tensorboard" / name),
                                                  histogram_freq=0, write_graph=False))
    with quiet_tf_logging():  # MirroredStrategy logs each reduction at INFO while tracing
        hist = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=cbs, verbose=cfg.verbose,
                         **fit_kwargs)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    result = TrainResult(name, model, history, timer.seconds, cfg, train_examples=len(x_tr))
    result.distribution = {
        "strategy": choice.kind, "reason": choice.reason, "replicas": replicas, "global_batch": global_batch,
        "per_replica_batch": global_batch / replicas, "learning_rate": learning_rate, "lr_scaling": lr_scaling,
        "precision": model.dtype_policy.name, "jit_compile": bool(jit_compile),
        "steps_per_execution": steps_per_execution, "resumed_at_epoch": start_epoch,
    }
    if evaluate_test:
        with quiet_tf_logging():
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
