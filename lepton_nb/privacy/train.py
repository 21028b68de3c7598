"""DP training entry point: check, calibrate, sample, train (fast or stock path), account, evaluate.

Everything that can be wrong is checked before the first step: the model (no BatchNormalization;
on the fast path only layers with a fast per-example norm), the clip, noise, delta and batch, the
microbatch divisibility of the stock path, and whether the target epsilon is reachable.

Private by default: the model is initialised from ``TrainConfig.seed`` (initialisation is not part
of the mechanism), then the randomness of the mechanism, the Gaussian noise and the sampled
batches, is drawn from fresh OS entropy (:func:`mechanism_randomness`), so whoever has the code
and the seed cannot regenerate it. ``DPSGDConfig(reproducible=True)`` opts in to noise and batches
that follow the seed; such a result is labelled "reproducible, not private".
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from lepton_nb.data import Dataset
from lepton_nb.privacy.accounting import (PrivacyError, calibrate_noise, epsilon_for_schedule, neighbouring_relation,
                                          validate)
from lepton_nb.privacy.budget import PrivacyBudget
from lepton_nb.privacy.fast_clipping import FastDPModel, check_dp_model
from lepton_nb.privacy.optimizers import check_batches, check_stock_memory, make_stock_optimizer
from lepton_nb.privacy.sampling import poisson_pipeline, shuffle_pipeline
from lepton_nb.privacy.schedules import NoiseScheduleCallback
from lepton_nb.privacy.settings import DPSGDConfig
from lepton_nb.settings import DataConfig, TrainConfig
from lepton_nb.training import FitPlan, TrainResult, compile_model, fit, make_optimizer, set_seed, split

__all__ = ["NOT_PRIVATE", "PRIVATE", "dp_trainer", "mechanism_randomness", "train_dp"]

#: ``result.extra["randomness"]`` of a default run and of a ``reproducible=True`` run.
PRIVATE = "fresh OS entropy (private)"
NOT_PRIVATE = "reproducible, not private"


def mechanism_randomness(dp: DPSGDConfig, seed: int) -> tuple[int | None, str]:
    """Set up the randomness of the DP mechanism; call after the model is built, before training.

    Default (``dp.reproducible`` False): clears TensorFlow's global seed, so every random op traced
    from now on (the noise of the fast path's ``add_aggregate_noise`` and of the stock DP-Keras
    optimizers, both ``tf.random.normal``) is seeded by TensorFlow from OS entropy, and returns
    ``None`` as the sampling seed (the pipelines then draw one from OS entropy). With
    ``reproducible=True``: leaves the global seed at ``seed`` (set before the model was built) and
    returns ``seed``.

    Returns:
        ``(sampling seed or None, label)``: the label is :data:`PRIVATE` or
        ":data:`NOT_PRIVATE` (noise and batches follow seed <seed>)".
    """
    if dp.reproducible:
        return seed, f"{NOT_PRIVATE} (noise and batches follow seed {seed})"
    tf.random.set_seed(None)  # no global seed: TF seeds each random op from the OS (std::random_device)
    return None, PRIVATE


def dp_trainer(model: tf.keras.Model, path: str, *, l2_norm_clip: float, noise_multiplier: float, batch_size: int,
               cfg: TrainConfig, num_microbatches: int | None = None,
               optimizer: tf.keras.optimizers.Optimizer | None = None) -> tf.keras.Model:
    """What Keras ``fit`` runs to train ``model`` with DP-SGD on ``path``, compiled.

    "fast": :class:`~lepton_nb.privacy.fast_clipping.FastDPModel` around ``model`` (noise std
    ``noise_multiplier * l2_norm_clip / batch_size`` on the mean of the clipped gradients), whose
    privatized gradients ``optimizer`` applies (default: ``cfg``'s optimizer);
    "stock": ``model`` compiled with tensorflow-privacy's DP-Keras optimizer and a per-example
    loss, ``num_microbatches`` microbatches per batch (default: one example each).
    """
    if path == "fast":
        trainer = FastDPModel(model, l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier,
                              expected_batch_size=batch_size)
        return compile_model(trainer, optimizer or make_optimizer(cfg))
    if optimizer is not None:
        raise PrivacyError("optimizer= applies to path='fast' only: the stock path's optimizer is the DP optimizer")
    if path == "stock":
        stock = make_stock_optimizer(l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier,
                                     num_microbatches=num_microbatches or batch_size,
                                     learning_rate=cfg.learning_rate, optimizer=cfg.optimizer)
        return compile_model(model, stock, per_example_loss=True)
    raise PrivacyError(f"path={path!r}: choose 'fast' or 'stock'")


def train_dp(
    model_fn: Callable[[], tf.keras.Model],
    data: Dataset,
    dp: DPSGDConfig = DPSGDConfig(),
    cfg: TrainConfig = TrainConfig(early_stopping_patience=None),
    *,
    data_cfg: DataConfig = DataConfig(),
    noise_schedule: Sequence[float] | None = None,
    name: str | None = None,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    evaluate_test: bool = True,
    optimizer: tf.keras.optimizers.Optimizer | None = None,
    releases: Sequence[float] = (),
) -> TrainResult:
    """Train a logits classifier with DP-SGD and report its epsilon.

    Args:
        model_fn: returns a fresh, uncompiled functional logits model (called after seeding).
        data: the data; ``data_cfg.validation_fraction`` of the training split is held out
            (never trained on, so outside the privacy accounting) for early stopping if enabled.
        dp: clip, noise (or target epsilon to calibrate to), delta, sampling, path.
        cfg: epochs (the plan; the budget may stop earlier), batch size (expected batch under
            Poisson sampling), optimizer and learning rate, seed of the model's initialisation
            (and of the noise and batches only with ``dp.reproducible``), early stopping.
        noise_schedule: per-epoch noise multipliers (fast path only), ``len == cfg.epochs``;
            overrides ``dp.noise_multiplier``.
        optimizer: fast path only: the Keras optimizer that applies the privatized gradients
            (default: ``cfg.optimizer`` at ``cfg.learning_rate``); the canary audit
            (:mod:`lepton_nb.privacy.audit.canary`) passes one that also records them.
        releases: noise multipliers (noise std / L2 sensitivity) of Gaussian mechanisms already run
            on the same training examples, e.g. the DP feature mean of
            :func:`lepton_nb.privacy.scatter.train_scatter_dp`: composed with the training in the
            calibration, the budget and every epsilon reported.

    Returns:
        A :class:`lepton_nb.training.TrainResult` whose ``extra`` holds ``epsilon`` (spent by the
        epochs run), ``delta``, ``noise_multiplier``, ``sampling``, ``neighbouring_relation``,
        ``path``, ``l2_norm_clip``, ``stopped_by_budget``, ``releases`` and ``randomness`` (:data:`PRIVATE`, or
        "reproducible, not private ..." for an opt-in reproducible run);
        ``history["epsilon"]`` is epsilon after each epoch (and ``history["noise_multiplier"]``
        the schedule); ``result.model`` is the plain logits model.

    Raises:
        PrivacyError: bad settings or an unreachable target epsilon, before training.
        DPModelError: a layer DP-SGD cannot train here, before training.
    """
    from lepton_nb.reports import reports_dir

    if cfg.label_smoothing or cfg.schedule != "constant":
        raise PrivacyError("train_dp trains with plain cross-entropy at a constant learning rate: set "
                           "TrainConfig.label_smoothing=0 and schedule='constant' (the per-example loss that is "
                           "clipped is the fast path's own)")
    examples = split(data, data_cfg)
    x_tr, y_tr = examples.x_train, examples.y_train
    n = len(x_tr)
    b = cfg.batch_size
    validate(n, b, cfg.epochs, dp.noise_multiplier, dp.delta, sampling=dp.sampling, l2_norm_clip=dp.l2_norm_clip,
             releases=releases)
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
                                           accountant=dp.accountant, releases=releases)
        sched = [float(sigma)] * cfg.epochs
    if dp.target_epsilon is not None and min(sched) > 0:
        first = epsilon_for_schedule(n, b, [sched[0] / sens], dp.delta, dp.sampling, accountant=dp.accountant,
                                     releases=releases)
        if first > dp.target_epsilon:
            raise PrivacyError(f"one epoch already costs epsilon={first:.3g} > target_epsilon={dp.target_epsilon}: "
                               "raise noise_multiplier (or leave it None to calibrate) or the target")

    set_seed(cfg.seed)  # the initialisation only, unless dp.reproducible
    model = model_fn()
    name = name or f"dp_{model.name}"
    if tuple(model.input_shape[1:]) != tuple(data.input_shape):
        raise PrivacyError(f"model {model.name!r} expects inputs {tuple(model.input_shape[1:])} but {data.name!r} holds "
                           f"{tuple(data.input_shape)}: build the model for the data's input_shape (features of "
                           "lepton_nb.features.scatter_dataset have their own shape)")
    check_dp_model(model, fast=dp.path == "fast")
    if mb is not None:
        check_stock_memory(model, b, mb)

    sampling_seed, randomness = mechanism_randomness(dp, cfg.seed)
    if dp.sampling == "poisson":
        train_ds, steps = poisson_pipeline(x_tr, y_tr, b, seed=sampling_seed)
    else:
        train_ds, steps = shuffle_pipeline(x_tr, y_tr, b, seed=sampling_seed)
        train_ds = train_ds.repeat()  # endless, reshuffled each pass; steps_per_epoch cuts epochs
    trainer = dp_trainer(model, dp.path, l2_norm_clip=dp.l2_norm_clip, noise_multiplier=sched[0], batch_size=b,
                         cfg=cfg, num_microbatches=mb, optimizer=optimizer)
    budget = PrivacyBudget(num_examples=n, batch_size=b, delta=dp.delta, noise_multiplier=[s / sens for s in sched],
                           sampling=dp.sampling, target_epsilon=dp.target_epsilon, accountant=dp.accountant,
                           releases=releases,
                           log_dir=str(reports_dir() / "tensorboard" / name) if cfg.tensorboard else None)
    plan = FitPlan(model, trainer, train_ds, steps_per_epoch=steps,
                   callbacks=([NoiseScheduleCallback(sched)] if noise_schedule is not None else []) + [budget])
    result = fit(plan, examples, cfg, name=name, test=data if evaluate_test else None, callbacks=callbacks)
    result.extra.update({
        "epsilon": float(budget.epsilon),  # not rounded: a rounded-up figure could exceed the budget
        "delta": dp.delta,
        "noise_multiplier": sched[0] if noise_schedule is None else f"{sched[0]:.3g}->{sched[-1]:.3g}",
        "l2_norm_clip": dp.l2_norm_clip,
        "sampling": dp.sampling,
        "neighbouring_relation": neighbouring_relation(dp.sampling),
        "path": dp.path,
        "stopped_by_budget": budget.stopped_early,
        "releases": [float(z) for z in releases],
        "randomness": randomness,
    })
    return result
