"""The training options of the fast non-private recipe: learning-rate schedules, label smoothing, decoupled
weight decay and Nesterov momentum, whole-pixel shifts with zero fill, and the timing of training phases."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

import lepton_nb as ln
from lepton_nb.data.augment import RandomPixelShift, shift_images
from lepton_nb.optimization import (
    LearningRateSchedule,
    SmoothedSparseCrossentropy,
    TailAverage,
    learning_rate_at,
    make_optimizer,
)
from lepton_nb.settings import Augmentation, SettingsError, TrainConfig


def test_onecycle_and_cosine_rates_at_chosen_steps():
    peak, total = 0.1, 100  # warm-up over the first 20 steps
    sched = LearningRateSchedule("onecycle", peak, total, warmup=0.2)
    expected = {0: peak / 25, 10: peak / 25 + (peak - peak / 25) / 2, 20: peak, 60: peak / 2, 100: 0.0, 150: 0.0}
    for step, lr in expected.items():
        assert float(sched(step)) == pytest.approx(lr, abs=1e-7), step
        assert learning_rate_at(step, kind="onecycle", peak=peak, total_steps=total, warmup=0.2) == \
            pytest.approx(lr, abs=1e-7)
    cos = LearningRateSchedule("cosine", peak, total)
    assert float(cos(0)) == pytest.approx(peak) and float(cos(50)) == pytest.approx(peak / 2)
    assert float(cos(25)) == pytest.approx(peak * (1 + math.cos(math.pi / 4)) / 2, rel=1e-6)
    assert float(LearningRateSchedule("constant", peak, total)(77)) == pytest.approx(peak)


def test_train_follows_the_schedule_per_step(tiny):
    cfg = TrainConfig(epochs=2, batch_size=100, learning_rate=0.05, optimizer="sgd", nesterov=True,
                      schedule="onecycle", warmup=0.25, weight_decay=5e-4, early_stopping_patience=None, verbose=0,
                      tensorboard=False)
    r = ln.training.train(ln.models.build_mlp, tiny, cfg)
    opt = r.model.optimizer
    steps = 2 * math.ceil(540 / 100)
    assert int(opt.iterations) == steps
    last = learning_rate_at(steps - 1, kind="onecycle", peak=0.05, total_steps=steps, warmup=0.25)
    assert float(opt.learning_rate) == pytest.approx(last, rel=1e-5) and last > 1e-3  # the rate of the last step
    assert opt.nesterov and opt.weight_decay == pytest.approx(5e-4)
    with pytest.raises(SettingsError, match="steps per epoch"):
        make_optimizer(cfg)


def test_label_smoothing_changes_the_loss_as_defined():
    logits = tf.constant([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    y = tf.constant([0, 2])
    eps, k = 0.1, 3
    logp = tf.nn.log_softmax(logits).numpy()
    target = (1 - eps) * np.eye(k)[[0, 2]] + eps / k
    by_hand = float(np.mean(-(target * logp).sum(axis=1)))
    assert float(SmoothedSparseCrossentropy(eps)(y, logits)) == pytest.approx(by_hand, rel=1e-6)
    plain = float(tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits))
    assert float(SmoothedSparseCrossentropy(0.0)(y, logits)) == pytest.approx(plain, rel=1e-6)
    assert by_hand != pytest.approx(plain, rel=1e-3)  # control: smoothing does change the loss
    m = ln.training.compile_model(ln.models.build_mlp(), tf.keras.optimizers.SGD(), label_smoothing=eps)
    assert isinstance(m.loss, SmoothedSparseCrossentropy) and m.loss.label_smoothing == eps


def test_pixel_shifts_are_whole_pixels_with_zero_fill():
    x = np.arange(1, 1 + 2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6, 1)
    out = shift_images(tf.constant(x), tf.constant([1, -2]), tf.constant([-2, 0]), 2).numpy()
    expected = np.zeros_like(x)
    expected[0, 1:, :4] = x[0, :4, 2:]  # down 1, left 2
    expected[1, :3, :] = x[1, 2:, :]  # up 2
    np.testing.assert_array_equal(out, expected)

    layer = RandomPixelShift(2, seed=0)
    batch = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32) + 1.0  # no zeros of its own
    shifted = layer(batch, training=True).numpy()
    candidates = {(dy, dx): shift_images(tf.constant(batch), tf.fill([16], dy), tf.fill([16], dx), 2).numpy()
                  for dy in range(-2, 3) for dx in range(-2, 3)}
    found = [next((s for s, c in candidates.items() if np.array_equal(c[i], shifted[i])), None) for i in range(16)]
    assert None not in found and len(set(found)) > 1  # every image is one whole-pixel shift; not all the same
    assert np.array_equal(layer(batch, training=False).numpy(), batch)
    assert any(isinstance(l, RandomPixelShift) for l in ln.data.augmenter(Augmentation(shift=0.0, shift_pixels=2)).layers)
    with pytest.raises(SettingsError, match="not both"):
        Augmentation(shift=0.1, shift_pixels=2)


class _Iterates(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append([v.numpy().copy() for v in self.model.trainable_variables])


def test_tail_average_ends_with_the_mean_of_the_last_epochs_iterates(tiny):
    cfg = TrainConfig(epochs=3, batch_size=100, learning_rate=0.05, optimizer="sgd", early_stopping_patience=None,
                      verbose=0, tensorboard=False)
    iterates = _Iterates()
    r = ln.training.train(ln.models.build_mlp, tiny, cfg, callbacks=[TailAverage(2), iterates], evaluate_test=False)
    per_epoch = math.ceil(540 / 100)
    window = iterates.seen[-2 * per_epoch:]  # the steps of the last two of three epochs
    assert len(iterates.seen) == 3 * per_epoch
    for i, v in enumerate(r.model.trainable_variables):
        np.testing.assert_allclose(v.numpy(), np.mean([w[i] for w in window], axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(r.model.trainable_variables[0].numpy(), iterates.seen[-1][0])  # not the last iterate
    with pytest.raises(SettingsError, match="at least one epoch"):
        TailAverage(0)


class _SlowValidation(tf.keras.callbacks.Callback):
    def on_test_begin(self, logs=None):
        time.sleep(0.3)


def test_recorded_training_time_excludes_validation(tiny):
    cfg = TrainConfig(epochs=2, batch_size=100, early_stopping_patience=None, verbose=0, tensorboard=False)
    r = ln.training.train(ln.models.build_mlp, tiny, cfg, callbacks=[_SlowValidation()])
    assert len(r.train_seconds) == len(r.cpu_seconds) == len(r.loads) == 2
    for whole, phase in zip(r.epoch_seconds, r.train_seconds):
        assert whole - phase >= 0.3  # the sleep in validation is outside the training phase
    s = r.summary()
    assert s["train_seconds"] == pytest.approx(sum(r.train_seconds), abs=0.06)
    assert s["fit_seconds"] >= s["train_seconds"] + 0.6 and s["train_cpu_seconds"] > 0 and s["load_avg"] >= 0


@pytest.mark.parametrize("kw, match", [
    ({"schedule": "step"}, "schedule"), ({"schedule": "onecycle"}, "warmup > 0"), ({"warmup": 0.1}, "warmup"),
    ({"label_smoothing": 1.0}, "label_smoothing"), ({"weight_decay": -1.0}, "weight_decay"),
    ({"nesterov": True}, "nesterov"),
])
def test_bad_training_options_are_refused(kw, match):
    with pytest.raises(SettingsError, match=match):
        replace(TrainConfig(), **kw)
