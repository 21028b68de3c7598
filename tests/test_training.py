"""lepton_nb.training: the shared entry point learns, stops early, logs, and refuses mismatches."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nb as ln
from lepton_nb.config import DataConfig, TrainConfig


def test_a_few_steps_lower_the_loss(tiny, tiny_cnn):
    ln.training.compile_model(tiny_cnn, TrainConfig())
    before = tiny_cnn.evaluate(tiny.x_train, tiny.y_train, verbose=0)[0]
    res = ln.training.train(tiny_cnn, tiny, TrainConfig(epochs=2, verbose=0, tensorboard=False))
    after = tiny_cnn.evaluate(tiny.x_train, tiny.y_train, verbose=0)[0]
    assert after < before
    assert res.history["loss"][-1] < res.history["loss"][0]
    assert res.epochs_run == 2 and len(res.epoch_seconds) == 2
    assert 0.0 <= res.report["accuracy"] <= 1.0 and len(res.report["y_pred"]) == len(tiny.y_test)


def test_seed_cnn_learns_the_sample(tiny):
    res = ln.training.train(ln.models.build_seed_cnn, tiny, TrainConfig(epochs=3, verbose=0, tensorboard=False))
    assert res.report["accuracy"] > 0.5  # chance is 0.1
    s = res.summary()
    assert {"accuracy", "recall_macro", "f1_macro", "params", "epochs", "train_seconds"} <= set(s)


def test_same_seed_same_result(tiny):
    cfg = TrainConfig(epochs=1, verbose=0, tensorboard=False)
    a = ln.training.train(ln.models.build_mlp, tiny, cfg).history["loss"]
    b = ln.training.train(ln.models.build_mlp, tiny, cfg).history["loss"]
    assert a == pytest.approx(b, rel=1e-4)


def test_early_stopping_restores_and_stops(tiny):
    cfg = TrainConfig(epochs=30, learning_rate=0.05, early_stopping_patience=1, verbose=0, tensorboard=False)
    res = ln.training.train(ln.models.build_mlp, tiny, cfg)
    assert res.epochs_run < 30
    assert "val_loss" in res.history


def test_tensorboard_logs_under_reports(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_NB_REPORTS", str(tmp_path))
    ln.training.train(ln.models.build_mlp, tiny, TrainConfig(epochs=1, verbose=0), name="tb_run")
    assert any((tmp_path / "tensorboard" / "tb_run").rglob("events.out.tfevents.*"))


def test_augmented_training_runs(tiny):
    res = ln.training.train(ln.models.build_mlp, tiny, TrainConfig(epochs=1, verbose=0, tensorboard=False),
                            augment=ln.config.Augmentation())
    assert np.isfinite(res.history["loss"][0])


def test_mismatched_model_and_data_are_refused_before_training(tiny):
    with pytest.raises(ValueError, match="5 outputs but the data has 10 classes"):
        ln.training.train(lambda: ln.models.build_mlp(num_classes=5), tiny, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="expects inputs"):
        ln.training.train(lambda: ln.models.build_mlp(input_shape=(32, 32, 1)), tiny, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="larger than the 540 training examples"):
        ln.training.train(ln.models.build_mlp, tiny, TrainConfig(epochs=1, batch_size=1000))


def test_no_validation_split_trains_on_everything(tiny):
    res = ln.training.train(ln.models.build_mlp, tiny, TrainConfig(epochs=1, verbose=0, tensorboard=False),
                            data_cfg=DataConfig(validation_fraction=0.0))
    assert "val_loss" not in res.history
