"""lepton_nb.explain.influence: TracIn and last-layer influence functions, checked against their
definitions, exact refits, retraining and flipped labels, each beside a control."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import lepton_nb as ln
from lepton_nb.explain import influence
from lepton_nb.settings import CNNConfig, DataConfig, TrainConfig

QUIET = dict(verbose=0, tensorboard=False, early_stopping_patience=None)
SMALL = CNNConfig(filters=8, depth=2, dense_units=32)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A small CNN trained 3 epochs without hold-out, a checkpoint per epoch."""
    ckpt = tmp_path_factory.mktemp("ckpt")
    run = ln.training.train(lambda: ln.models.build_cnn(SMALL), tiny, TrainConfig(epochs=3, **QUIET),
                            data_cfg=DataConfig(validation_fraction=0.0), checkpoint_dir=ckpt, name="small")
    return run.model, ckpt


def test_last_layer_gradients_equal_autodiff(trained, tiny):
    model, _ = trained
    x, y = tiny.x_train[:5], tiny.y_train[:5]
    h, logits = influence.features(model, x)
    g = influence.last_layer_grads(h, logits, y)
    head = model.get_layer("logits")
    for i in range(5):
        with tf.GradientTape() as tape:
            loss = tf.keras.losses.sparse_categorical_crossentropy(y[i:i + 1], model(x[i:i + 1]), from_logits=True)
        gw, gb = tape.gradient(loss, [head.kernel, head.bias])
        np.testing.assert_allclose(g[i], np.vstack([gw.numpy(), gb.numpy()[None]]).ravel(), atol=1e-5)


def test_checkpoint_paths_spread_and_keep_the_last(trained, tmp_path):
    _, ckpt = trained
    every = influence.checkpoint_paths(ckpt)
    assert [p[-3:] for p in every] == ["001", "002", "003"]
    assert influence.checkpoint_paths(ckpt, 2) == [every[0], every[2]]
    assert influence.checkpoint_paths(ckpt, 1) == [every[-1]]
    with pytest.raises(ValueError, match="checkpoint_dir"):
        influence.checkpoint_paths(tmp_path)


def test_tracin_is_the_sum_over_checkpoints_of_gradient_products(trained, tiny):
    model, ckpt = trained
    paths = influence.checkpoint_paths(ckpt)
    xtr, ytr, xte, yte = tiny.x_train[:50], tiny.y_train[:50], tiny.x_test[:3], tiny.y_test[:3]
    inf, selfi = influence.tracin(model, paths, xtr, ytr, xte, yte, learning_rate=0.01)
    expect, expect_self = 0, 0
    copy = tf.keras.models.clone_model(model)
    for p in paths:
        copy.load_weights(p).expect_partial()
        gtr = influence.last_layer_grads(*influence.features(copy, xtr), ytr)
        gte = influence.last_layer_grads(*influence.features(copy, xte), yte)
        expect, expect_self = expect + 0.01 * gte @ gtr.T, expect_self + 0.01 * (gtr ** 2).sum(1)
    np.testing.assert_allclose(inf, expect, rtol=1e-6)
    np.testing.assert_allclose(selfi, expect_self, rtol=1e-6)
    # the model itself is not touched: its logits are the final epoch's
    np.testing.assert_allclose(model.get_layer("logits").get_weights()[0],
                               tf.train.load_checkpoint(paths[-1]).get_tensor(
                                   "layer_with_weights-3/kernel/.ATTRIBUTES/VARIABLE_VALUE"), atol=0)


def test_influence_functions_predict_exact_refits_and_random_removals_do_little(trained, tiny):
    model, _ = trained
    inf = influence.LastLayerIF.of_model(model, tiny.x_train[:400], tiny.y_train[:400], damping=1e-2)
    assert np.abs(inf.loss_grad(inf.theta.ravel(), inf.h, inf.y)[1]).max() < 1e-9  # at the optimum
    ht, _ = influence.features(model, tiny.x_test[:2])
    res = influence.refit_validation(inf, ht, tiny.y_test[:2], k=20, singles=8, random_singles=4, seed=0)
    assert min(res["single_spearman"]) > 0.8
    assert res["set_spearman"] > 0.8
    assert res["mean_actual"]["IF top-k"] > 10 * abs(res["mean_actual"]["20 random"])


def test_self_influence_finds_flipped_labels_beside_the_random_control(tiny, tmp_path):
    y, flipped = influence.flip_labels(tiny.y_train, 0.1, 10, seed=0)
    assert flipped.sum() == 60 and (y[flipped] != tiny.y_train[flipped]).all() and (y[~flipped] == tiny.y_train[~flipped]).all()
    noisy = ln.data.Dataset(tiny.x_train, y, tiny.x_test, tiny.y_test, tiny.class_names, "noisy", "test")
    run = ln.training.train(lambda: ln.models.build_cnn(SMALL), noisy, TrainConfig(epochs=3, **QUIET),
                            data_cfg=DataConfig(validation_fraction=0.0), checkpoint_dir=tmp_path, name="noisy")
    _, selfi = influence.tracin(run.model, influence.checkpoint_paths(tmp_path), tiny.x_train, y, tiny.x_train[:1],
                                y[:1], learning_rate=1e-3)
    inf = influence.LastLayerIF.of_model(run.model, tiny.x_train, y, damping=1e-2)
    table = influence.mislabel_detection({"TracIn": selfi, "IF": inf.self_influence()}, flipped)
    assert list(table.index) == ["TracIn", "IF", "random"]
    assert min(table.loc["TracIn", "auc"], table.loc["IF", "auc"]) > max(0.6, table.loc["random", "auc"] + 0.1)
    assert abs(table.loc["random", "auc"] - 0.5) < 0.15


def test_explain_predictions_ranks_helpful_and_harmful(trained, tiny):
    model, ckpt = trained
    out = influence.explain_predictions(model, influence.checkpoint_paths(ckpt), tiny.x_train, tiny.y_train,
                                        tiny.x_test[:2], tiny.y_test[:2], learning_rate=1e-3, damping=1e-2, top=3)
    for r in out:
        for method in ("IF", "TracIn"):
            s = r["scores"][method]
            assert (s[r[method]["helpful"]] >= np.sort(s)[-3]).all() and (s[r[method]["harmful"]] <= np.sort(s)[2]).all()


@pytest.mark.slow
def test_retrain_validation_runs_whole_trainings(tiny, tmp_path):
    res = influence.retrain_validation(lambda: ln.models.build_cnn(SMALL), tiny.x_train[:300], tiny.y_train[:300],
                                       tiny.x_test, tiny.y_test, train_cfg=TrainConfig(epochs=1, **QUIET), k=10,
                                       points=2, workdir=tmp_path, checkpoints=1)
    assert res["retrainings"] == 1 + 2 * 3
    assert {r["set"] for r in res["rows"]} == {"IF top-k", "TracIn top-k", "random"}
    assert np.isfinite([r["actual"] for r in res["rows"]]).all() and -1 <= res["spearman_if"] <= 1
