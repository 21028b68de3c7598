"""lepton_nb.training: the one fit core learns, stops early with the best weights, logs, and refuses
mismatches; plain and DP training share its split."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

import lepton_nb as ln
from lepton_nb.settings import Augmentation, DataConfig, TrainConfig

QUIET = TrainConfig(epochs=1, verbose=0, tensorboard=False)


def test_a_few_steps_lower_the_loss_and_the_report_scores_the_predictions(tiny, tiny_cnn):
    ln.training.compile_model(tiny_cnn, tf.keras.optimizers.Adam(1e-3))
    before = tiny_cnn.evaluate(tiny.x_train, tiny.y_train, verbose=0)[0]
    res = ln.training.train(tiny_cnn, tiny, replace(QUIET, epochs=2))
    after = tiny_cnn.evaluate(tiny.x_train, tiny.y_train, verbose=0)[0]
    assert after < before
    assert res.history["loss"][-1] < res.history["loss"][0]
    assert res.epochs_run == 2 and len(res.epoch_seconds) == 2
    y_pred = tiny_cnn.predict(tiny.x_test, verbose=0).argmax(axis=1)
    np.testing.assert_array_equal(res.report["y_pred"], y_pred)
    assert res.report["accuracy"] == pytest.approx(float((y_pred == tiny.y_test).mean()))


def test_seed_cnn_learns_the_sample(tiny):
    res = ln.training.train(ln.models.build_seed_cnn, tiny, replace(QUIET, epochs=3))
    assert res.report["accuracy"] > 0.5  # chance is 0.1
    s = res.summary()
    assert s["accuracy"] == round(100 * res.report["accuracy"], 2) and s["params"] == 804_554 and s["epochs"] == 3


def test_same_seed_same_result(tiny):
    a = ln.training.train(ln.models.build_mlp, tiny, QUIET).history["loss"]
    b = ln.training.train(ln.models.build_mlp, tiny, QUIET).history["loss"]
    assert a == pytest.approx(b, rel=1e-4)


def test_early_stopping_stops_and_restores_the_best_epochs_weights(tiny, tmp_path):
    cfg = TrainConfig(epochs=30, learning_rate=0.05, early_stopping_patience=1, verbose=0, tensorboard=False)
    res = ln.training.train(ln.models.build_mlp, tiny, cfg, checkpoint_dir=tmp_path)
    assert res.epochs_run < 30
    best = int(np.argmin(res.history["val_loss"])) + 1
    assert best < res.epochs_run, "the last epoch was worse, so the restored weights are an earlier epoch's"
    saved = ln.models.build_mlp()
    saved.load_weights(str(tmp_path / f"epoch-{best:03d}")).expect_partial()
    for restored, kept in zip(res.model.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(restored, kept)


def test_tensorboard_logs_under_reports(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_NB_REPORTS", str(tmp_path))
    ln.training.train(ln.models.build_mlp, tiny, TrainConfig(epochs=1, verbose=0), name="tb_run")
    assert any((tmp_path / "tensorboard" / "tb_run").rglob("events.out.tfevents.*"))


def test_augmentation_from_the_data_settings_changes_what_is_trained_on(tiny):
    plain = ln.training.train(ln.models.build_mlp, tiny, QUIET)
    augmented = ln.training.train(ln.models.build_mlp, tiny, QUIET, data_cfg=DataConfig(augment=Augmentation()))
    assert np.isfinite(augmented.history["loss"][0])
    assert augmented.history["loss"][0] != pytest.approx(plain.history["loss"][0], rel=1e-3)
    assert augmented.history["val_loss"][0] != pytest.approx(plain.history["val_loss"][0], rel=1e-4)


def test_mismatched_model_and_data_are_refused_before_training(tiny):
    with pytest.raises(ValueError, match="5 outputs but the data has 10 classes"):
        ln.training.train(lambda: ln.models.build_mlp(num_classes=5), tiny, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="expects inputs"):
        ln.training.train(lambda: ln.models.build_mlp(input_shape=(32, 32, 1)), tiny, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="larger than the 540 training examples"):
        ln.training.train(ln.models.build_mlp, tiny, TrainConfig(epochs=1, batch_size=1000))


def test_split_holds_out_a_stratified_share_or_the_data_sets_own_validation(tiny):
    s = ln.training.split(tiny, DataConfig(validation_fraction=0.1))
    assert len(s.x_train) == 540 and len(s.x_val) == 60 and np.bincount(s.y_val).tolist() == [6] * 10
    none = ln.training.split(tiny, DataConfig(validation_fraction=0.0))
    assert none.x_val is None and len(none.x_train) == 600
    own = replace(tiny, x_val=tiny.x_test[:7], y_val=tiny.y_test[:7])
    assert len(ln.training.split(own, DataConfig(validation_fraction=0.1)).x_val) == 7
    res = ln.training.train(ln.models.build_mlp, tiny, QUIET, data_cfg=DataConfig(validation_fraction=0.0))
    assert "val_loss" not in res.history and res.train_examples == 600


def test_plain_and_dp_training_run_through_the_same_fit_core(tiny, monkeypatch):
    """Both entry points hand fit() a plan over the same split; fit adds the shared callbacks."""
    seen = []
    real_fit = ln.training.fit

    def spy(plan, examples, cfg, **kwargs):
        seen.append((type(plan.trainer).__name__, len(examples.x_train), len(examples.x_val)))
        return real_fit(plan, examples, cfg, **kwargs)

    monkeypatch.setattr(ln.training, "fit", spy)
    import lepton_nb.privacy.train as dp_train

    monkeypatch.setattr(dp_train, "fit", spy)
    cfg = replace(QUIET, batch_size=60)
    ln.training.train(ln.models.build_mlp, tiny, cfg)
    ln.privacy.train_dp(ln.models.build_mlp, tiny, ln.privacy.DPSGDConfig(noise_multiplier=1.0, delta=1e-4), cfg)
    assert seen == [("Functional", 540, 60), ("FastDPModel", 540, 60)]


def test_fit_runs_a_plan_with_its_callbacks_first(tiny):
    order = []

    class Mark(tf.keras.callbacks.Callback):
        def __init__(self, label):
            super().__init__()
            self.label = label

        def on_epoch_end(self, epoch, logs=None):
            order.append(self.label)

    model = ln.models.build_mlp()
    ln.training.compile_model(model, tf.keras.optimizers.Adam(1e-3))
    ds = ln.data.pipeline(tiny.x_train, tiny.y_train, batch_size=100, shuffle=False)
    plan = ln.training.FitPlan(model, model, ds, callbacks=[Mark("plan")])
    res = ln.training.fit(plan, ln.training.Split(tiny.x_train, tiny.y_train, None, None), replace(QUIET, epochs=2),
                          name="plan", callbacks=[Mark("user")], test=tiny)
    assert order == ["plan", "user", "plan", "user"]
    assert res.epochs_run == 2 and res.train_examples == 600 and res.report["n"] == len(tiny.y_test)


def test_test_time_flip_scores_the_flip_averaged_model_and_keeps_the_plain_one(tiny):
    res = ln.training.train(ln.models.build_seed_cnn, tiny, replace(QUIET, test_time_flip=True))
    x = tiny.x_test
    averaged = ln.models.flip_averaged(res.model).predict(x, verbose=0).argmax(axis=1)
    plain = res.model.predict(x, verbose=0).argmax(axis=1)
    np.testing.assert_array_equal(res.report["y_pred"], averaged)
    assert (averaged != plain).any(), "control: on these images the mirror changes some predictions"
    assert res.summary()["test_time_flip"] is True and res.model.name == "seed_cnn"


def test_test_time_flip_is_refused_before_training_for_images_that_are_not_mirror_invariant(tiny):
    class Started(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise AssertionError("training started")

    chest = replace(tiny, name="chestmnist", horizontal_flip_ok=False)
    with pytest.raises(ln.settings.SettingsError, match="not mirror-invariant.*test_time_flip=False"):
        ln.training.train(ln.models.build_seed_cnn, chest, replace(QUIET, test_time_flip=True), callbacks=[Started()])
