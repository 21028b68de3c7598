"""DP training end to end on tiny data: accounting of the run, budget stop, errors before training, audit."""

from __future__ import annotations

import pytest

import tensorflow as tf
import tensorflow_privacy  # noqa: F401 - a locked dependency: missing, these tests must fail, not skip

import lepton_nb as ln  # noqa: E402
from lepton_nb.settings import CNNConfig, DataConfig, TrainConfig  # noqa: E402
from lepton_nb.privacy import DPSGDConfig, PrivacyError  # noqa: E402

SMALL = CNNConfig(filters=4, depth=1, norm="group", activation="tanh", dense_units=16)
DATA = DataConfig(validation_fraction=0.1)


def _cfg(**kw):
    return TrainConfig(**({"epochs": 2, "batch_size": 60, "learning_rate": 3e-3, "early_stopping_patience": None,
                           "verbose": 0, "tensorboard": False} | kw))


def _model():
    return ln.models.build_cnn(SMALL)


def test_fast_poisson_run_reports_its_accounted_epsilon(tiny):
    r = ln.privacy.train_dp(_model, tiny, DPSGDConfig(noise_multiplier=1.2, delta=1e-4), _cfg(), data_cfg=DATA)
    n = 540  # 600 minus the 10 % validation hold-out
    assert r.extra["epsilon"] == pytest.approx(ln.privacy.epsilon(n, 60, 2, 1.2, 1e-4), rel=1e-3)
    assert len(r.history["epsilon"]) == 2 and r.history["epsilon"][0] < r.history["epsilon"][1]
    assert r.extra["sampling"] == "poisson" and r.extra["path"] == "fast"
    y_pred = r.model.predict(tiny.x_test, verbose=0).argmax(axis=1)  # the report scores the DP model itself
    assert r.report["accuracy"] == pytest.approx(float((y_pred == tiny.y_test).mean()))


def test_budget_stops_before_the_target_is_exceeded(tiny):
    n, b, sigma, delta = 540, 60, 1.0, 1e-4
    e2, e3 = (ln.privacy.epsilon(n, b, k, sigma, delta) for k in (2, 3))
    target = (e2 + e3) / 2
    r = ln.privacy.train_dp(_model, tiny, DPSGDConfig(noise_multiplier=sigma, target_epsilon=target, delta=delta),
                            _cfg(epochs=6), data_cfg=DATA, evaluate_test=False)
    assert r.epochs_run == 2
    assert r.extra["stopped_by_budget"] is True
    assert r.extra["epsilon"] <= target


def test_noise_schedule_runs_and_is_accounted_per_epoch(tiny):
    sched = (2.0, 1.0)
    r = ln.privacy.train_dp(_model, tiny, DPSGDConfig(delta=1e-4), _cfg(), data_cfg=DATA, noise_schedule=sched,
                            evaluate_test=False)
    assert r.history["noise_multiplier"] == list(sched)
    assert r.extra["epsilon"] == pytest.approx(ln.privacy.epsilon_for_schedule(540, 60, sched, 1e-4), rel=1e-3)


@pytest.mark.parametrize("dp, cfg, match", [
    (DPSGDConfig(noise_multiplier=0.3, target_epsilon=0.5, delta=1e-4), _cfg(), "one epoch already costs"),
    (DPSGDConfig(noise_multiplier=None, target_epsilon=1e-3, delta=1e-4, sampling="shuffle"), _cfg(epochs=50),
     "cannot be reached"),
    (DPSGDConfig(delta=1e-2), _cfg(), "delta"),
    (DPSGDConfig(delta=1e-4), _cfg(batch_size=1000), "batch_size"),
    (DPSGDConfig(delta=1e-4, path="stock", sampling="shuffle", num_microbatches=7), _cfg(), "divisible"),
])
def test_bad_settings_fail_before_training(tiny, dp, cfg, match):
    calls = []

    def model_fn():
        calls.append(1)
        return _model()

    with pytest.raises(PrivacyError, match=match):
        ln.privacy.train_dp(model_fn, tiny, dp, cfg, data_cfg=DATA)
    assert not calls  # refused before a model was even built


def test_batch_normalization_refused_before_training(tiny):
    from lepton_nb.privacy.fast_clipping import DPModelError

    bn = CNNConfig(filters=4, norm="batch")
    with pytest.raises(DPModelError, match="GroupNormalization"):
        ln.privacy.train_dp(lambda: ln.models.build_cnn(bn), tiny, DPSGDConfig(delta=1e-4), _cfg(), data_cfg=DATA)


def test_stock_path_trains_with_a_ragged_data_size(tiny):
    small = ln.data.stratified_subset(tiny, 150, 50, seed=0)  # 135 training examples: 4 batches of 32 + 7
    r = ln.privacy.train_dp(_model, small, DPSGDConfig(noise_multiplier=1.0, delta=1e-3, path="stock", sampling="shuffle"),
                            _cfg(epochs=1, batch_size=32), data_cfg=DATA, evaluate_test=False)
    assert r.epochs_run == 1
    assert r.extra["epsilon"] == pytest.approx(ln.privacy.epsilon(135, 32, 1, 1.0, 1e-3, sampling="shuffle"), rel=1e-3)


def test_membership_attacks(tiny):
    from lepton_nb.privacy.audit import membership_attacks

    x_in, y_in = tiny.x_train[:100], tiny.y_train[:100]
    x_out, y_out = tiny.x_test[:100], tiny.y_test[:100]
    tf.keras.utils.set_random_seed(0)
    model = ln.models.build_cnn(CNNConfig(filters=8, dense_units=64))
    untrained = membership_attacks(model, x_in, y_in, x_out, y_out)
    ln.training.compile_model(model, tf.keras.optimizers.Adam(3e-3))
    model.fit(x_in, y_in, epochs=40, batch_size=20, verbose=0)  # memorises its 100 members
    trained = membership_attacks(model, x_in, y_in, x_out, y_out)
    assert set(trained) == {"threshold", "trained"}
    assert abs(untrained["threshold"].auc - 0.5) < 0.15
    assert trained["threshold"].auc > 0.7 and trained["threshold"].advantage > 0.3
    assert trained["trained"].auc > 0.6 and trained["trained"].advantage > 0.2


def test_stock_microbatches_of_two_examples_are_accounted_with_double_sensitivity(tiny):
    small = ln.data.stratified_subset(tiny, 150, 50, seed=0)
    dp = DPSGDConfig(noise_multiplier=2.0, delta=1e-3, path="stock", sampling="shuffle", num_microbatches=16)
    r = ln.privacy.train_dp(_model, small, dp, _cfg(epochs=1, batch_size=32), data_cfg=DATA, evaluate_test=False)
    assert r.extra["epsilon"] == pytest.approx(ln.privacy.epsilon(135, 32, 1, 1.0, 1e-3, sampling="shuffle"), rel=1e-3)


def test_stock_path_memory_is_estimated_and_refused_before_training():
    from lepton_nb.privacy.optimizers import check_stock_memory, stock_memory_bytes

    model = ln.models.build_cnn(ln.settings.DP_CNN)
    # the DP CNN keeps 62,762 activations per example: at 256 x 256 that is 16.5 GB
    assert stock_memory_bytes(model, 256, 256) == 4 * 62_762 * 256 * 256
    assert stock_memory_bytes(model, 64, 64) * 16 == stock_memory_bytes(model, 256, 256)
    with pytest.raises(PrivacyError, match=r"needs about 16\.5 GB.*path='fast'"):
        check_stock_memory(model, 256, 256, available_bytes=8 * 10**9)
    assert check_stock_memory(model, 64, 64, available_bytes=8 * 10**9) < 1.1e9
