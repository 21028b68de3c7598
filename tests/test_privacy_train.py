"""DP training end to end on tiny data: accounting of the run, budget stop, errors before training, private-by-default
randomness and its reproducible opt-in, the shuffle pipeline."""

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


# ------------------------------------------------------------------ private-by-default randomness


def _weights(result):
    import numpy as np

    return np.concatenate([w.ravel() for w in result.model.get_weights()])


def _run(tiny, *, sigma, batch_size, reproducible=False):
    """One epoch on the tiny data; batch_size=540 (N) makes q = 1: every example in every step."""
    dp = DPSGDConfig(noise_multiplier=sigma, delta=1e-4, reproducible=reproducible)
    return ln.privacy.train_dp(_model, tiny, dp, _cfg(epochs=1, batch_size=batch_size), data_cfg=DATA,
                               evaluate_test=False)


def test_two_default_runs_draw_different_noise(tiny):
    import numpy as np

    # q = 1 fixes the batches; the same seeded initialisation: only the noise can differ
    a, b = _run(tiny, sigma=1.0, batch_size=540), _run(tiny, sigma=1.0, batch_size=540)
    assert not np.allclose(_weights(a), _weights(b))
    assert a.extra["randomness"] == ln.privacy.train.PRIVATE
    # control: without noise the same two default runs agree, so the difference above is the noise
    c, d = _run(tiny, sigma=0.0, batch_size=540), _run(tiny, sigma=0.0, batch_size=540)
    np.testing.assert_allclose(_weights(c), _weights(d), rtol=0, atol=1e-6)


def test_two_default_runs_draw_different_poisson_batches(tiny):
    import numpy as np

    a, b = _run(tiny, sigma=0.0, batch_size=60), _run(tiny, sigma=0.0, batch_size=60)  # no noise: only batches
    assert not np.allclose(_weights(a), _weights(b))


def test_reproducible_opt_in_repeats_exactly_and_is_labelled_not_private(tiny):
    import numpy as np

    a = _run(tiny, sigma=1.0, batch_size=60, reproducible=True)
    b = _run(tiny, sigma=1.0, batch_size=60, reproducible=True)
    np.testing.assert_allclose(_weights(a), _weights(b), rtol=0, atol=1e-6)
    assert a.extra["randomness"].startswith("reproducible, not private")
    assert "reproducible, not private" in str(a.summary()["randomness"])


def test_pipelines_draw_their_seed_from_os_entropy_unless_given_one(tiny):
    import numpy as np

    from lepton_nb.privacy.sampling import poisson_pipeline, shuffle_pipeline

    def first_labels(make, **kw):
        ds, _ = make(tiny.x_train, tiny.y_train, 60, **kw)
        return np.concatenate([y.numpy() for _, y in ds.take(3)])

    for make in (poisson_pipeline, shuffle_pipeline):
        assert not np.array_equal(first_labels(make), first_labels(make)), make.__name__
        np.testing.assert_array_equal(first_labels(make, seed=3), first_labels(make, seed=3))


def test_shuffle_is_a_full_permutation_beyond_ten_thousand_examples():
    import numpy as np

    from lepton_nb.privacy.sampling import shuffle_pipeline

    n = 12_000  # above the general pipeline's 10,000 buffer
    x = np.zeros((n, 2, 2, 1), np.float32)
    ds, steps = shuffle_pipeline(x, np.arange(n), 1000, seed=1)
    order = np.concatenate([y.numpy() for _, y in ds])
    assert steps == 12 and sorted(order) == list(range(n))
    # with a 10,000 buffer the last 2,000 examples could never come first; a full shuffle puts
    # about 1/6 of the first batch there
    assert (order[:1000] >= 10_000).sum() > 100


def test_shuffle_epsilon_is_stated_under_zero_out():
    r = ln.privacy.accounting.neighbouring_relation
    assert r("shuffle").startswith("zero-out") and r("poisson").startswith("add/remove")


def test_speed_paths_time_every_epoch_in_wall_and_cpu_time(tiny):
    """The speed comparison (notebook 03, bench_dp) times each path's epochs on the shared fit core."""
    from lepton_nb.privacy import speed

    x, y = tiny.x_train[:256], tiny.y_train[:256]
    times = speed.epoch_times(_model, x, y, batch_size=32, paths=("nonprivate", "fast"), epochs=2)
    assert set(times) == {"nonprivate", "fast"} and all(t["steps"] == 8 and len(t["epochs"]) == 1 for t in times.values())
    assert set(speed.ratios(times)) == {"fast_vs_nonprivate"}
    r = speed.interleaved_ratios(_model, x, y, batch_size=32, paths=("nonprivate", "fast"), repeats=2)
    assert all(len(r["epochs"][p]) == len(r["cpu"][p]) == 2 for p in ("nonprivate", "fast"))
    assert all(s > 0 for p in r["cpu"] for s in r["cpu"][p])
    assert len(r["ratios"]["fast_vs_nonprivate"]["all"]) == len(r["cpu_ratios"]["fast_vs_nonprivate"]["all"]) == 2
