"""lepton_nb.models: architectures, logits outputs, named layers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import lepton_nb as ln
from lepton_nb.settings import CNNConfig


def test_mlp_is_two_hidden_layers_of_128(random_batch):
    model = ln.models.build_mlp()
    dense = [l for l in model.layers if isinstance(l, tf.keras.layers.Dense)]
    assert [l.units for l in dense] == [128, 128, 10]
    assert dense[-1].activation is tf.keras.activations.linear  # logits
    assert model(random_batch[0]).shape == (8, 10)


def test_seed_cnn_matches_the_article(random_batch):
    model = ln.models.build_seed_cnn()
    kinds = [type(l).__name__ for l in model.layers[1:]]
    assert kinds == ["Conv2D", "Activation", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    conv = model.get_layer("conv_0_0")
    assert conv.filters == 32 and conv.kernel_size == (3, 3)
    assert model.get_layer("hidden").units == 128 and model.get_layer("logits").units == 10
    out = model(random_batch[0]).numpy()
    assert out.shape == (8, 10) and (out < 0).any()  # logits, not probabilities


@pytest.mark.parametrize("norm", ["none", "batch", "group"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_cnn_family_builds_and_names_layers(norm, activation, random_batch):
    cfg = CNNConfig(filters=8, depth=2, convs_per_block=2, norm=norm, activation=activation, dropout=0.2)
    model = ln.models.build_cnn(cfg)
    assert model(random_batch[0]).shape == (8, 10)
    assert ln.models.last_conv_layer(model).name == "conv_1_1"
    assert model.get_layer("conv_1_1").filters == 16
    norm_types = {"batch": tf.keras.layers.BatchNormalization, "group": tf.keras.layers.GroupNormalization}
    if norm != "none":
        assert isinstance(model.get_layer("norm_0_0"), norm_types[norm])
    assert model.get_layer("act_0_0").activation.__name__ == activation


def test_build_cnn_keyword_overrides_and_other_shapes():
    model = ln.models.build_cnn(depth=3, filters=4, input_shape=(28, 28, 3), num_classes=5)
    assert model.output_shape == (None, 5) and model.input_shape == (None, 28, 28, 3)
    assert ln.models.last_conv_layer(model).name == "conv_2_0"


def test_last_conv_layer_finds_nested_models(tiny_cnn):
    outer = tf.keras.Sequential([tf.keras.Input((28, 28, 1)), tiny_cnn, tf.keras.layers.Activation("linear")])
    assert ln.models.last_conv_layer(outer).name == "conv"
    with pytest.raises(ValueError, match="no Conv2D"):
        ln.models.last_conv_layer(ln.models.build_mlp())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"depth": 4}, "1 to 3 pooled blocks"),
    ({"norm": "layer"}, "choose 'none', 'batch' or 'group'"),
    ({"activation": "gelu"}, "choose 'relu' or 'tanh'"),
    ({"dropout": 1.0}, r"\[0, 1\)"),
])
def test_bad_cnn_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CNNConfig(**kwargs)


def test_probabilities_are_a_softmax(random_batch):
    model = ln.models.build_mlp()
    p = ln.models.probabilities(model, random_batch[0])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p, tf.nn.softmax(model(random_batch[0])).numpy(), rtol=1e-5)
    assert ln.models.count_params(model) == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10


def test_flip_averaged_means_the_logits_of_the_image_and_its_left_right_mirror(random_batch):
    x = random_batch[0]
    model = ln.models.build_seed_cnn()
    plain, mirrored = model(x).numpy(), model(x[:, :, ::-1]).numpy()
    averaged = ln.models.flip_averaged(model)(x).numpy()
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    # controls: the model is not mirror-invariant, and an up-down flip gives other logits
    assert np.abs(averaged - plain).max() > 1e-4
    assert np.abs(averaged - (plain + model(x[:, ::-1]).numpy()) / 2).max() > 1e-4
    assert ln.models.flip_averaged(model).count_params() == model.count_params()  # shares the weights
