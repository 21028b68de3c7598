"""The one training core: split, seed, build, compile, fit (timing, early stopping, TensorBoard,
backup), evaluate.

Plain training (:func:`train`), DP-SGD (:func:`lepton_nb.privacy.train_dp`) and the DP speed
comparison (:mod:`lepton_nb.privacy.speed`) all go through :func:`fit`. They differ only in the
:class:`FitPlan` they hand it: the logits model that learns, what Keras ``fit`` runs (the model
itself, a per-example-clipping wrapper, or the model compiled with a DP optimizer), the training
batches, and callbacks of their own (privacy budget, noise schedule, backup). The validation
hold-out (:func:`split`), compilation (:func:`compile_model`), epoch timing, early stopping,
TensorBoard and the final evaluation are the same for all.

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
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from lepton_nb import metrics
from lepton_nb.data import Dataset, epoch_indexed_pipeline, pipeline, split_validation
from lepton_nb.optimization import loss_for, make_optimizer
from lepton_nb.timing import EpochTimer
from lepton_nb.reports import Summary
from lepton_nb.settings import Augmentation, DataConfig, DistributionOptions, SettingsError, TrainConfig

__all__ = ["EpochTimer", "FitPlan", "Split", "TrainResult", "compile_model", "evaluate",
           "fit", "make_optimizer", "predict_classes", "resume_epoch", "scaled_learning_rate", "set_seed", "split",
           "train"]

ModelFn = Callable[[], tf.keras.Model]
LR_SCALING = ("none", "linear", "sqrt")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (weights, shuffling, dropout, augmentation)."""
    tf.keras.utils.set_random_seed(seed)


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


def compile_model(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer, *, per_example_loss: bool = False,
                  label_smoothing: float = 0.0, **compile_kwargs) -> tf.keras.Model:
    """Compile a logits model (or a training wrapper of one) with cross-entropy and accuracy.

    ``per_example_loss``: the loss returns one value per example (``reduction=NONE``), as
    tensorflow-privacy's DP-Keras optimizers need to clip each microbatch. ``label_smoothing``:
    :func:`lepton_nb.optimization.loss_for`.
    """
    model.compile(
        optimizer=optimizer,
        loss=loss_for(label_smoothing, per_example=per_example_loss),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        **compile_kwargs,
    )
    return model


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained Keras model (best validation weights when early stopping ran).
        history: per-epoch ``loss``, ``accuracy`` (and ``val_*``) lists (only the epochs this call
            ran: a resumed run lists the epochs after the restored one).
        epoch_seconds: wall time of each epoch, validation included (the first includes tracing).
        train_seconds: wall time of each epoch's training phase, validation excluded.
        cpu_seconds: CPU seconds of this process in each training phase.
        loads: the machine's 1-minute load average at the end of each training phase.
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
    train_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

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
        """Figures for reports: metrics in percent, epochs, time, parameters.

        ``train_seconds`` is the wall time of the training phases only (validation and the final
        evaluation excluded), ``fit_seconds`` the whole epochs; ``train_cpu_seconds`` and
        ``load_avg`` (mean 1-minute load at the end of the phases) say how busy the machine was.
        """
        from lepton_nb.models import count_params

        out = {"params": count_params(self.model), "epochs": self.epochs_run,
               "train_seconds": round(float(sum(self.train_seconds or self.epoch_seconds)), 1),
               "fit_seconds": round(self.seconds, 1)}
        if self.cpu_seconds:
            out["train_cpu_seconds"] = round(float(sum(self.cpu_seconds)), 1)
            out["load_avg"] = round(float(np.mean(self.loads)), 2)
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


class Split(NamedTuple):
    """The examples a run trains on and the hold-out early stopping watches (``None`` when none)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None


def split(data: Dataset, data_cfg: DataConfig = DataConfig()) -> Split:
    """The training examples and the validation hold-out of ``data``.

    A data set's own validation split is used when it has one (MedMNIST); otherwise a stratified
    ``data_cfg.validation_fraction`` of the training split is held out (seeded by
    ``data_cfg.seed``), or nothing when the fraction is 0. The hold-out is never trained on, so it
    is outside any privacy accounting.
    """
    if data.x_val is not None:
        return Split(data.x_train, data.y_train, data.x_val, data.y_val)
    if data_cfg.validation_fraction > 0:
        return Split(*split_validation(data.x_train, data.y_train, data_cfg.validation_fraction, data_cfg.seed))
    return Split(data.x_train, data.y_train, None, None)


@dataclass
class FitPlan:
    """What one kind of training hands to :func:`fit`.

    Attributes:
        model: the logits model that learns; returned in the result and evaluated.
        trainer: what Keras ``fit`` runs: ``model`` itself (compiled), a training wrapper around it
            (e.g. :class:`lepton_nb.privacy.fast_clipping.FastDPModel`), or ``model`` compiled
            with a DP optimizer.
        train_ds: batches of ``(images (B, H, W, C), labels (B,))``.
        steps_per_epoch: steps Keras counts as one epoch (``None``: one pass over ``train_ds``).
        callbacks: the plan's own callbacks, run before the common ones (backup, privacy budget,
            noise schedule).
        dataset_options: ``tf.data.Options`` applied to the training and validation data (e.g.
            sharding by examples under a multi-worker strategy).
        static_batches: every validation batch the same size too (TPUs need it).
    """

    model: tf.keras.Model
    trainer: tf.keras.Model
    train_ds: tf.data.Dataset
    steps_per_epoch: int | None = None
    callbacks: list = field(default_factory=list)
    dataset_options: tf.data.Options | None = None
    static_batches: bool = False


def fit(plan: FitPlan, examples: Split, cfg: TrainConfig, *, name: str, test: Dataset | None = None,
        callbacks: Sequence[tf.keras.callbacks.Callback] = (), checkpoint_dir: str | os.PathLike | None = None
        ) -> TrainResult:
    """Run ``plan`` for ``cfg.epochs`` epochs and evaluate the model on ``test``'s test split.

    Adds what every kind of training shares: the validation pipeline (batches of 256 of
    ``examples.x_val``), the plan's callbacks, an :class:`EpochTimer`, ``callbacks``, per-epoch
    weights in ``checkpoint_dir`` (``epoch-NNN``), early stopping on the validation loss with the
    best weights restored (``cfg.early_stopping_patience``), and TensorBoard logs under
    ``reports/tensorboard/<name>`` (``cfg.tensorboard``).

    With ``cfg.test_time_flip`` the test report scores :func:`lepton_nb.models.flip_averaged`
    (``result.model`` stays the plain model).

    Returns:
        A :class:`TrainResult` (``report`` set when ``test`` is given).

    Raises:
        SettingsError: ``cfg.test_time_flip`` on images that are not mirror-invariant (before training).
    """
    from lepton_nb.distributed.strategies import quiet_tf_logging
    from lepton_nb.models import flip_averaged
    from lepton_nb.reports import reports_dir

    if cfg.test_time_flip and test is not None and not test.horizontal_flip_ok:
        raise SettingsError(f"TrainConfig.test_time_flip=True scores mirrored test images, but {test.name!r} images are "
                            "not mirror-invariant (a mirror can change the class): set test_time_flip=False")
    x_val, y_val = examples.x_val, examples.y_val
    val_ds = None
    if x_val is not None:
        val_ds = pipeline(x_val, y_val, batch_size=256, shuffle=False,
                          drop_remainder=plan.static_batches and len(x_val) >= 256)
    train_ds = plan.train_ds
    if plan.dataset_options is not None:
        train_ds = train_ds.with_options(plan.dataset_options)
        val_ds = val_ds.with_options(plan.dataset_options) if val_ds is not None else None

    timer = EpochTimer()
    cbs: list[tf.keras.callbacks.Callback] = [*plan.callbacks, timer, *callbacks]
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
        hist = plan.trainer.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, steps_per_epoch=plan.steps_per_epoch,
                                callbacks=cbs, verbose=cfg.verbose)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    result = TrainResult(name, plan.model, history, timer.seconds, cfg, train_examples=len(examples.x_train),
                         train_seconds=timer.train_seconds, cpu_seconds=timer.cpu_seconds, loads=timer.loads)
    if test is not None:
        with quiet_tf_logging():
            scored = flip_averaged(plan.model) if cfg.test_time_flip else plan.model
            result.report = evaluate(scored, test.x_test, test.y_test, class_names=test.class_names)
        if cfg.test_time_flip:
            result.extra["test_time_flip"] = True
    return result


def _policy(mixed_precision: bool | str, strategy: tf.distribute.Strategy | None) -> str | None:
    if mixed_precision is False:
        return None
    if mixed_precision is True:
        from lepton_nb.distributed.precision import precision_policy

        return precision_policy(strategy)
    return str(mixed_precision)


def train(
    model_fn: ModelFn | tf.keras.Model,
    data: Dataset,
    cfg: TrainConfig = TrainConfig(),
    *,
    data_cfg: DataConfig = DataConfig(),
    name: str | None = None,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    evaluate_test: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    distribution: DistributionOptions = DistributionOptions(),
    backup_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> TrainResult:
    """Train a classifier on ``data`` and evaluate it on the test split.

    Args:
        model_fn: a function returning a fresh, uncompiled logits model (called after seeding,
            inside ``strategy.scope()``), or a model (only without ``strategy``).
        data: the data set; its training split minus the validation hold-out (:func:`split`) is
            trained on.
        cfg: epochs, batch size, optimizer, early stopping, seed, TensorBoard.
        data_cfg: the validation hold-out and the augmentation of training batches
            (``data_cfg.augment``).
        name: run name for logs and reports (default: the model's name).
        strategy: a ``tf.distribute`` strategy (:func:`lepton_nb.distributed.strategy`); ``None``
            for the default (current) strategy.
        distribution: per-replica batch, learning-rate scaling, mixed precision, XLA and steps
            per execution under the strategy (:class:`lepton_nb.settings.DistributionOptions`).
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
    from lepton_nb.distributed.precision import float32_logits, precision_scope
    from lepton_nb.distributed.strategies import choice_of

    dist = distribution
    prebuilt = isinstance(model_fn, tf.keras.Model)
    if strategy is not None and prebuilt:
        raise ValueError("with strategy=..., pass a function that builds the model (e.g. lambda: "
                         "ln.models.build_seed_cnn()) so it is created inside strategy.scope()")
    strat = strategy or tf.distribute.get_strategy()
    replicas = strat.num_replicas_in_sync
    global_batch = dist.per_replica_batch * replicas if dist.per_replica_batch else cfg.batch_size
    learning_rate = scaled_learning_rate(cfg, global_batch, dist.lr_scaling)
    policy = _policy(dist.mixed_precision, strategy)
    choice = choice_of(strat)
    if prebuilt and dist != DistributionOptions(per_replica_batch=dist.per_replica_batch) and model_fn.optimizer:
        raise ValueError("mixed_precision, jit_compile, steps_per_execution and lr_scaling apply when train() "
                         "builds and compiles the model: pass a model function instead of a compiled model")
    if dist.jit_compile and choice.kind == "cpu" and replicas > 1:
        raise ValueError("jit_compile=True does not work mirrored over logical CPU devices (XLA's CPU backend "
                         "cannot reach a variable placed on another logical CPU: 'Trying to access resource ... "
                         "located in device CPU:1 from device CPU:0'); use XLA with one replica, or on GPUs/TPU")
    examples = split(data, data_cfg)
    x_tr, y_tr = examples.x_train, examples.y_train
    if global_batch > len(x_tr):
        raise ValueError(f"global batch {global_batch} is larger than the {len(x_tr)} training examples")
    static = choice.kind == "tpu"  # XLA on TPU wants every batch the same shape
    steps = len(x_tr) // global_batch if static else math.ceil(len(x_tr) / global_batch)

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
            compile_model(model, make_optimizer(cfg, learning_rate, steps_per_epoch=steps),
                          label_smoothing=cfg.label_smoothing, steps_per_execution=dist.steps_per_execution,
                          jit_compile=dist.jit_compile or None)

    start_epoch = resume_epoch(backup_dir) if backup_dir is not None else 0
    if backup_dir is not None:
        plan = FitPlan(model, model, epoch_indexed_pipeline(
            x_tr, y_tr, batch_size=global_batch, epochs=cfg.epochs, start_epoch=min(start_epoch, cfg.epochs - 1),
            seed=cfg.seed, augment=data_cfg.augment, drop_remainder=static),
            steps_per_epoch=steps, callbacks=[tf.keras.callbacks.BackupAndRestore(os.fspath(backup_dir))], static_batches=static)
    else:
        plan = FitPlan(model, model, pipeline(x_tr, y_tr, batch_size=global_batch, shuffle=True,
                                              augment=data_cfg.augment, seed=cfg.seed, drop_remainder=static),
                       static_batches=static)
    if strategy is not None:  # in-memory data: shard by examples across workers (no files to shard)
        plan.dataset_options = tf.data.Options()
        plan.dataset_options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

    result = fit(plan, examples, cfg, name=name, test=data if evaluate_test else None, callbacks=callbacks,
                 checkpoint_dir=checkpoint_dir)
    result.distribution = {
        "strategy": choice.kind, "reason": choice.reason, "replicas": replicas, "global_batch": global_batch,
        "per_replica_batch": global_batch / replicas, "learning_rate": learning_rate, "lr_scaling": dist.lr_scaling,
        "precision": model.dtype_policy.name, "jit_compile": bool(dist.jit_compile),
        "steps_per_execution": dist.steps_per_execution, "resumed_at_epoch": start_epoch,
    }
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
