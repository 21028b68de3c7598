"""DP training entry point: check, calibrate, sample, train (fast or stock path), account, evaluate.

Everything that can be wrong is checked before the first step: the model (no BatchNormalization;
on the fast path only layers with a fast per-example norm), the clip, noise, delta and batch, the
microbatch divisibility of the stock path, and whether the target epsilon is reachable.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from lepton_nb.config import DataConfig, TrainConfig
from lepton_nb.data import Dataset, pipeline, split_validation
from lepton_nb.privacy.accounting import PrivacyError, calibrate_noise, epsilon_for_schedule, validate
from lepton_nb.privacy.budget import PrivacyBudget
from lepton_nb.privacy.config import DPConfig
from lepton_nb.privacy.fast_clipping import FastDPModel, check_dp_model
from lepton_nb.privacy.optimizers import check_batches, check_stock_memory, compile_stock, make_stock_optimizer
from lepton_nb.privacy.sampling import poisson_pipeline, shuffle_pipeline
from lepton_nb.privacy.schedules import NoiseScheduleCallback
from lepton_nb.training import EpochTimer, TrainResult, evaluate, make_optimizer, set_seed

__all__ = ["train_dp"]


def _split(data: Dataset, data_cfg: DataConfig):
    if data.x_val is not None:
        return data.x_train, data.y_train, data.x_val, data.y_val
    if data_cfg.validation_fraction > 0:
        return split_validation(data.x_train, data.y_train, data_cfg.validation_fraction, data_cfg.seed)
    return data.x_train, data.y_train, None, None


def train_dp(
    model_fn: Callable[[], tf.keras.Model],
    data: Dataset,
    dp: DPConfig = DPConfig(),
    cfg: TrainConfig = TrainConfig(early_stopping_patience=None),
    *,
    data_cfg: DataConfig = DataConfig(),
    noise_schedule: Sequence[float] | None = None,
    name: str | None = None,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    evaluate_test: bool = True,
) -> TrainResult:
    """Train a logits classifier with DP-SGD and report its epsilon.

    Args:
        model_fn: returns a fresh, uncompiled functional logits model (called after seeding).
        data: the data; ``data_cfg.validation_fraction`` of the training split is held out
            (never trained on, so outside the privacy accounting) for early stopping if enabled.
        dp: clip, noise (or target epsilon to calibrate to), delta, sampling, path.
        cfg: epochs (the plan; the budget may stop earlier), batch size (expected batch under
            Poisson sampling), optimizer and learning rate, seed, early stopping.
        noise_schedule: per-epoch noise multipliers (fast path only), ``len == cfg.epochs``;
            overrides ``dp.noise_multiplier``.

    Returns:
        A :class:`lepton_nb.training.TrainResult` whose ``extra`` holds ``epsilon`` (spent by the
        epochs run), ``delta``, ``noise_multiplier``, ``sampling``, ``path``, ``l2_norm_clip``, and
        ``stopped_by_budget``; ``history["epsilon"]`` is epsilon after each epoch (and
        ``history["noise_multiplier"]`` the schedule); ``result.model`` is the plain logits model.

    Raises:
        PrivacyError: bad settings or an unreachable target epsilon, before training.
        DPModelError: a layer DP-SGD cannot train here, before training.
    """
    from lepton_nb.reports import reports_dir

    x_tr, y_tr, x_val, y_val = _split(data, data_cfg)
    n = len(x_tr)
    b = cfg.batch_size
    validate(n, b, cfg.epochs, dp.noise_multiplier, dp.delta, sampling=dp.sampling, l2_norm_clip=dp.l2_norm_clip)
    mb = check_batches(n, b, dp.num_microbatches) if dp.path == "stock" else None
    # microbatches of several examples double the sensitivity: sigma / 2 is what gets accounted
    sens = 1 if mb is None or mb == b else 2
    if noise_schedule is not None:
        if dp.path != "fast":
            raise PrivacyError("noise schedules need path='fast' (the stock optimizer's noise is fixed at construction)")
        sched = [float(s) for s in noise_schedule]
        if len(sched) != cfg.epochs or min(sched) <= 0:
            raise PrivacyError(f"noise_schedule has {len(sched)} entries (min {min(sched, default=0)}); it needs "
                               f"cfg.epochs={cfg.epochs} positive values")
    else:
        sigma = dp.noise_multiplier
        if sigma is None:
            sigma = sens * calibrate_noise(dp.target_epsilon, n, b, cfg.epochs, dp.delta, dp.sampling,
                                           accountant=dp.accountant)
        sched = [float(sigma)] * cfg.epochs
    if dp.target_epsilon is not None and min(sched) > 0:
        first = epsilon_for_schedule(n, b, [sched[0] / sens], dp.delta, dp.sampling, accountant=dp.accountant)
        if first > dp.target_epsilon:
            raise PrivacyError(f"one epoch already costs epsilon={first:.3g} > target_epsilon={dp.target_epsilon}: "
                               "raise noise_multiplier (or leave it None to calibrate) or the target")

    set_seed(cfg.seed)
    model = model_fn()
    name = name or f"dp_{model.name}"
    check_dp_model(model, fast=dp.path == "fast")
    if mb is not None:
        check_stock_memory(model, b, mb)

    if dp.sampling == "poisson":
        train_ds, steps = poisson_pipeline(x_tr, y_tr, b, seed=cfg.seed)
    else:
        train_ds, steps = shuffle_pipeline(x_tr, y_tr, b, seed=cfg.seed)
        train_ds = train_ds.repeat()  # endless, reshuffled each pass; steps_per_epoch cuts epochs
    val_ds = pipeline(x_val, y_val, batch_size=256, shuffle=False) if x_val is not None else None

    if dp.path == "fast":
        trainer = FastDPModel(model, l2_norm_clip=dp.l2_norm_clip, noise_multiplier=sched[0], expected_batch_size=b)
        trainer.compile(optimizer=make_optimizer(cfg),
                        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    else:
        trainer = compile_stock(model, make_stock_optimizer(
            l2_norm_clip=dp.l2_norm_clip, noise_multiplier=sched[0], num_microbatches=mb,
            learning_rate=cfg.learning_rate, optimizer=cfg.optimizer))

    log_dir = str(reports_dir() / "tensorboard" / name) if cfg.tensorboard else None
    accounted = [s / sens for s in sched]
    budget = PrivacyBudget(num_examples=n, batch_size=b, delta=dp.delta, noise_multiplier=accounted,
                           sampling=dp.sampling, target_epsilon=dp.target_epsilon, log_dir=log_dir,
                           accountant=dp.accountant)
    timer = EpochTimer()
    cbs: list[tf.keras.callbacks.Callback] = [timer, budget, *callbacks]
    if noise_schedule is not None:
        cbs.insert(0, NoiseScheduleCallback(sched))
    if cfg.early_stopping_patience is not None and val_ds is not None:
        cbs.append(tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                                    restore_best_weights=True))
    if log_dir:
        cbs.append(tf.keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0, write_graph=False))
    hist = trainer.fit(train_ds, steps_per_epoch=steps, validation_data=val_ds, epochs=cfg.epochs, callbacks=cbs,
                       verbose=cfg.verbose)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    result = TrainResult(name, model, history, timer.seconds, cfg)
    result.extra.update({
        "epsilon": float(budget.epsilon),  # not rounded: a rounded-up figure could exceed the budget
        "delta": dp.delta,
        "noise_multiplier": sched[0] if noise_schedule is None else f"{sched[0]:.3g}->{sched[-1]:.3g}",
        "l2_norm_clip": dp.l2_norm_clip,
        "sampling": dp.sampling,
        "path": dp.path,
        "stopped_by_budget": budget.stopped_early,
    })
    if evaluate_test:
        result.report = evaluate(model, data.x_test, data.y_test, class_names=data.class_names)
    return result
