"""ScatterNet features (lepton_nb.features): the same map as kymatio's Keras layer, a cache keyed by the
images' content, and the ScatterNet + linear DP recipe trained and accounted on the feature set."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import lepton_nb as ln
from lepton_nb import features
from lepton_nb.privacy import DPSGDConfig, PrivacyError, ScatterDPRecipe
from lepton_nb.settings import DataConfig, Scattering, TrainConfig


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_NB_CACHE", str(tmp_path / "cache"))


def test_features_equal_kymatios_keras_layer(tiny):
    from kymatio.keras import Scattering2D

    images = tiny.x_train[:3, ..., 0]
    inp = tf.keras.Input((28, 28))
    keras_feats = tf.keras.Model(inp, Scattering2D(J=2, L=8)(inp)).predict(images, verbose=0)  # (3, 81, 7, 7)
    ours = features.scatter_features(tiny.x_train[:3], progress=False)
    assert ours.shape == (3, 7, 7, 81) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, np.moveaxis(keras_feats, 1, -1), atol=1e-5)
    # control: the features of other images are far from these
    assert np.abs(features.scatter_features(tiny.x_train[3:6], progress=False) - ours).max() > 1e-2
    assert features.scatter_shape((28, 28, 1), Scattering(J=2, L=4)) == (7, 7, 25)


def test_the_cache_is_keyed_by_content_and_settings(tiny, monkeypatch):
    images = tiny.x_train[:4]
    first = features.cached_scatter_features(images, progress=False)
    files = sorted(features.feature_cache_dir().glob("*.npy"))
    assert len(files) == 1 and files[0].stem == features.feature_key(images)

    def fail(*args, **kwargs):
        raise AssertionError("computed again instead of reading the cache")

    monkeypatch.setattr(features, "scatter_features", fail)
    np.testing.assert_array_equal(features.cached_scatter_features(images.copy(), progress=False), first)
    changed = images.copy()
    changed[0, 14, 14, 0] += 0.5  # one pixel: another key, so a new computation
    assert features.feature_key(changed) != features.feature_key(images)
    assert features.feature_key(images, Scattering(L=4)) != features.feature_key(images)
    with pytest.raises(AssertionError, match="computed again"):
        features.cached_scatter_features(changed, progress=False)


def test_scatter_dataset_keeps_labels_and_splits(tiny):
    sub = ln.data.stratified_subset(tiny, 20, 10, seed=0)
    f = features.scatter_dataset(sub, Scattering(L=4), progress=False)
    assert f.input_shape == (7, 7, 25) and f.x_test.shape == (10, 7, 7, 25)
    np.testing.assert_array_equal(f.y_train, sub.y_train)
    assert f.class_names == sub.class_names and f.name.endswith("-scatter-J2-L4")
    assert sub.horizontal_flip_ok and not f.horizontal_flip_ok  # a mirrored feature map is not a mirrored image
    with pytest.raises(ValueError, match="one channel"):
        features.scatter_features(np.zeros((2, 28, 28, 3), np.float32), progress=False)


def test_scatter_linear_model_is_zero_initialised_groupnorm_and_linear():
    m = ln.models.build_scatter_linear()
    assert ln.models.count_params(m) == 39_700  # 3,969 x 10 + 10: the GroupNorm learns nothing
    assert not m.get_layer("groupnorm").trainable_weights
    x = np.random.default_rng(0).random((2, 7, 7, 81), dtype=np.float32)
    np.testing.assert_array_equal(m(x).numpy(), np.zeros((2, 10)))
    ln.privacy.check_dp_model(m)  # the fast path trains it
    with pytest.raises(ValueError, match="equal groups"):
        ln.models.build_scatter_linear(groups=10)


def test_private_feature_mean_is_the_gaussian_mechanism_on_the_normalized_mean(tiny):
    from lepton_nb.privacy.scatter import private_feature_mean

    x = features.scatter_dataset(tiny, Scattering(L=4), progress=False).x_train
    n, d = len(x), int(np.prod(x.shape[1:]))
    normalized = ln.models.build_scatter_linear(x.shape[1:], groups=5).get_layer("groupnorm")(x).numpy().reshape(n, d)
    assert np.linalg.norm(normalized, axis=1).max() <= np.sqrt(d) * (1 + 1e-5)  # the sensitivity the noise is for
    exact = normalized.mean(axis=0)
    assert np.sum(exact ** 2) > 0.05 * d  # a mean worth removing (about a quarter of the energy here)
    err = (private_feature_mean(x, 5, 3.0, seed=0) - exact) * n / np.sqrt(d)  # N(0, 3^2) per coordinate
    assert err.std() == pytest.approx(3.0, rel=0.1) and abs(err.mean()) < 0.5
    np.testing.assert_array_equal(private_feature_mean(x, 5, 3.0, seed=0), private_feature_mean(x, 5, 3.0, seed=0))
    assert not np.array_equal(private_feature_mean(x, 5, 3.0), private_feature_mean(x, 5, 3.0))  # OS entropy
    with pytest.raises(PrivacyError, match="noise > 0"):
        private_feature_mean(x, 5, 0.0)


def test_scatter_linear_model_subtracts_its_center():
    rng = np.random.default_rng(1)
    center = rng.normal(size=7 * 7 * 25).astype(np.float32)
    m = ln.models.build_scatter_linear((7, 7, 25), 10, groups=5, center=center)
    w, b = rng.normal(size=(7 * 7 * 25, 10)).astype(np.float32), rng.normal(size=10).astype(np.float32)
    m.get_layer("logits").set_weights([w, b])
    x = rng.random((3, 7, 7, 25), dtype=np.float32)
    normalized = m.get_layer("groupnorm")(x).numpy().reshape(3, -1)
    np.testing.assert_allclose(m(x).numpy(), (normalized - center) @ w + b, rtol=1e-4, atol=1e-3)
    assert ln.models.count_params(m) == 12_260 and not m.get_layer("center").trainable_weights
    ln.privacy.check_dp_model(m)
    with pytest.raises(ValueError, match="center has 10 values"):
        ln.models.build_scatter_linear((7, 7, 25), 10, groups=5, center=np.zeros(10))


def _recipe(**kw):
    return ScatterDPRecipe(scattering=Scattering(L=4), groups=5,
                           train=TrainConfig(epochs=2, batch_size=60, learning_rate=4.0, optimizer="sgd",
                                             early_stopping_patience=None, verbose=0, tensorboard=False),
                           dp=DPSGDConfig(l2_norm_clip=0.1, noise_multiplier=1.1, delta=1e-4),
                           **({"average_epochs": 1} | kw))


def test_train_dp_on_features_accounts_the_feature_sets_examples(tiny):
    recipe = _recipe(validation_fraction=0.1)
    r = ln.privacy.train_scatter_dp(tiny, recipe)
    n = 540  # the 600 feature vectors minus the 10 % hold-out: what DP-SGD sampled from
    assert r.train_examples == n
    mean = (recipe.mean_noise_multiplier,)  # the DP feature mean's release, composed with the training
    assert r.extra["releases"] == [20.0] and r.model.get_layer("center") is not None
    assert r.extra["epsilon"] == pytest.approx(ln.privacy.epsilon(n, 60, 2, 1.1, 1e-4, releases=mean), rel=1e-3)
    assert r.extra["epsilon"] > ln.privacy.epsilon(n, 60, 2, 1.1, 1e-4) * 1.001
    assert r.extra["epsilon"] != pytest.approx(ln.privacy.epsilon(600, 60, 2, 1.1, 1e-4, releases=mean), rel=1e-3)
    assert r.model.input_shape[1:] == (7, 7, 25) and 0 <= r.report["accuracy"] <= 1
    assert r.extra["averaged_epochs"] == 1 and "centered by a DP mean" in r.extra["features"]
    everything = ln.privacy.train_scatter_dp(tiny, _recipe(validation_fraction=0.0, mean_noise_multiplier=None),
                                             evaluate_test=False)
    assert everything.train_examples == 600 and everything.extra["releases"] == []
    assert everything.extra["epsilon"] == pytest.approx(ln.privacy.epsilon(600, 60, 2, 1.1, 1e-4), rel=1e-3)
    assert "center" not in [layer.name for layer in everything.model.layers]


def test_recipe_settings_are_checked():
    with pytest.raises(PrivacyError, match="average_epochs"):
        ScatterDPRecipe(average_epochs=61)  # more than the 60 epochs trained
    with pytest.raises(PrivacyError, match="label smoothing"):
        ScatterDPRecipe(train=TrainConfig(label_smoothing=0.1))
    with pytest.raises(PrivacyError, match="mean_noise_multiplier"):
        ScatterDPRecipe(mean_noise_multiplier=0.0)


def test_train_dp_refuses_a_model_built_for_other_inputs(tiny):
    feats = features.scatter_dataset(ln.data.stratified_subset(tiny, 100, 10, seed=0), Scattering(L=4),
                                     progress=False)
    with pytest.raises(PrivacyError, match=r"expects inputs \(28, 28, 1\)"):
        ln.privacy.train_dp(ln.models.build_seed_cnn, feats, DPSGDConfig(delta=1e-3),
                            TrainConfig(epochs=1, batch_size=20, verbose=0, tensorboard=False),
                            data_cfg=DataConfig(validation_fraction=0.0))
    with pytest.raises(PrivacyError, match="label_smoothing"):
        ln.privacy.train_dp(ln.models.build_seed_cnn, tiny, DPSGDConfig(delta=1e-3),
                            TrainConfig(epochs=1, batch_size=20, label_smoothing=0.1, verbose=0, tensorboard=False))
