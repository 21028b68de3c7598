"""Optimizers, learning-rate schedules and the loss that :class:`~lepton_nb.settings.TrainConfig` names.

- :func:`make_optimizer`: Adam or SGD (momentum 0.9, optionally Nesterov), with decoupled weight
  decay (Loshchilov & Hutter 2019) and a per-step learning-rate schedule.
- :class:`LearningRateSchedule`: "constant", "cosine" (Loshchilov & Hutter 2017, "SGDR") or
  "onecycle" (Smith & Topin 2019, "Super-Convergence": linear warm-up from lr/25 to lr, then cosine
  to 0), evaluated per optimizer step.
- :func:`loss_for`: sparse cross-entropy on logits, with label smoothing (Szegedy et al. 2016) when
  asked: the target of an example of class y is ``(1 - eps) one_hot(y) + eps / K``.
- :class:`TailAverage`: the model ends with the average of its weights over the steps of the last
  epochs (tail averaging of the iterates; Polyak & Juditsky 1992). Under DP-SGD the iterates are
  already private, so their average is post-processing and costs no privacy.
"""

from __future__ import annotations

import math

import tensorflow as tf

from lepton_nb.settings import SettingsError, TrainConfig

__all__ = ["LearningRateSchedule", "SmoothedSparseCrossentropy", "TailAverage", "learning_rate_at", "loss_for",
           "make_optimizer"]

#: One-cycle starts at ``learning_rate / ONECYCLE_START_DIVISOR`` (Smith & Topin 2019 use 25).
ONECYCLE_START_DIVISOR = 25.0


def learning_rate_at(step: float, *, kind: str, peak: float, total_steps: int, warmup: float = 0.0) -> float:
    """The learning rate of step ``step`` (0-based) of ``total_steps``, in plain Python (see the module doc).

    "constant": ``peak``. "cosine": linear from 0 to ``peak`` over ``warmup * total_steps`` steps,
    then ``peak (1 + cos(pi t)) / 2`` with t from 0 to 1 over the rest. "onecycle": the same, but the
    warm-up starts at ``peak / 25``.
    """
    if kind == "constant":
        return peak
    w = warmup * total_steps
    if step < w:
        start = peak / ONECYCLE_START_DIVISOR if kind == "onecycle" else 0.0
        return start + (peak - start) * step / w
    t = min((step - w) / max(total_steps - w, 1), 1.0)
    return peak * 0.5 * (1 + math.cos(math.pi * t))


class LearningRateSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Keras schedule of :func:`learning_rate_at`: the learning rate of each optimizer step."""

    def __init__(self, kind: str, peak: float, total_steps: int, warmup: float = 0.0):
        if kind not in ("constant", "cosine", "onecycle"):
            raise SettingsError(f"schedule {kind!r}: choose 'constant', 'cosine' or 'onecycle'")
        if total_steps < 1:
            raise SettingsError(f"a schedule needs total_steps >= 1, got {total_steps}")
        self.kind, self.peak, self.total_steps, self.warmup = kind, float(peak), int(total_steps), float(warmup)

    def __call__(self, step):
        s = tf.cast(step, tf.float32)
        peak = tf.constant(self.peak, tf.float32)
        if self.kind == "constant":
            return peak
        w = self.warmup * self.total_steps
        start = peak / ONECYCLE_START_DIVISOR if self.kind == "onecycle" else tf.constant(0.0)
        up = start + (peak - start) * s / max(w, 1e-12)
        t = tf.minimum((s - w) / max(self.total_steps - w, 1.0), 1.0)
        down = peak * 0.5 * (1 + tf.cos(math.pi * t))
        return tf.where(s < w, up, down)

    def get_config(self) -> dict:
        return {"kind": self.kind, "peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup}


def make_optimizer(cfg: TrainConfig, learning_rate: float | None = None, *,
                   steps_per_epoch: int | None = None) -> tf.keras.optimizers.Optimizer:
    """The optimizer ``cfg`` names, at ``learning_rate`` (default ``cfg.learning_rate``).

    A schedule other than "constant" runs over ``cfg.epochs * steps_per_epoch`` steps, so it needs
    ``steps_per_epoch``; ``cfg.weight_decay`` is Keras' decoupled weight decay.

    Raises:
        SettingsError: a schedule without ``steps_per_epoch``.
    """
    lr = cfg.learning_rate if learning_rate is None else learning_rate
    if cfg.schedule != "constant":
        if not steps_per_epoch:
            raise SettingsError(f"TrainConfig.schedule={cfg.schedule!r} needs the steps per epoch: pass "
                                "steps_per_epoch= to make_optimizer (train() does)")
        lr = LearningRateSchedule(cfg.schedule, lr, cfg.epochs * steps_per_epoch, cfg.warmup)
    wd = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        return tf.keras.optimizers.SGD(lr, momentum=0.9, nesterov=cfg.nesterov, weight_decay=wd)
    return tf.keras.optimizers.Adam(lr, weight_decay=wd)


class SmoothedSparseCrossentropy(tf.keras.losses.Loss):
    """Cross-entropy of logits against integer labels smoothed to ``(1 - eps) one_hot + eps / K``.

    ``label_smoothing=0`` equals ``SparseCategoricalCrossentropy(from_logits=True)``.
    """

    def __init__(self, label_smoothing: float = 0.0, reduction=tf.keras.losses.Reduction.AUTO,
                 name: str = "smoothed_sparse_crossentropy"):
        super().__init__(reduction=reduction, name=name)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        k = tf.shape(y_pred)[-1]
        onehot = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), k, dtype=y_pred.dtype)
        return tf.keras.losses.categorical_crossentropy(onehot, y_pred, from_logits=True,
                                                        label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def loss_for(label_smoothing: float = 0.0, *, per_example: bool = False) -> tf.keras.losses.Loss:
    """The training loss on logits: sparse cross-entropy, smoothed when ``label_smoothing > 0``.

    ``per_example``: one value per example (``reduction=NONE``), as tensorflow-privacy's DP-Keras
    optimizers need.
    """
    reduction = tf.keras.losses.Reduction.NONE if per_example else tf.keras.losses.Reduction.AUTO
    if label_smoothing:
        return SmoothedSparseCrossentropy(label_smoothing, reduction=reduction)
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)


class TailAverage(tf.keras.callbacks.Callback):
    """At the end of training, set the trainable weights to their mean over the steps of the last ``epochs`` epochs.

    The mean is taken after every optimizer step of epochs ``E - epochs .. E - 1`` of the ``E``
    planned (a run stopped earlier averages the steps of the window it reached; one stopped before
    the window keeps its last weights). Validation during training sees the raw iterates; what
    ``fit`` evaluates afterwards is the average.
    """

    def __init__(self, epochs: int):
        super().__init__()
        if epochs < 1:
            raise SettingsError(f"TailAverage(epochs={epochs}): average over at least one epoch")
        self.epochs = int(epochs)

    def on_train_begin(self, logs=None):
        self._start = max(0, int(self.params.get("epochs", self.epochs)) - self.epochs)
        self._vars = list(self.model.trainable_variables)
        self._sums = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self._vars]
        self._count = 0
        self._active = False

    def on_epoch_begin(self, epoch, logs=None):
        self._active = epoch >= self._start

    def on_train_batch_end(self, batch, logs=None):
        if self._active:
            for s, v in zip(self._sums, self._vars):
                s.assign_add(v)
            self._count += 1

    def on_train_end(self, logs=None):
        if self._count:
            for s, v in zip(self._sums, self._vars):
                v.assign(s / self._count)
