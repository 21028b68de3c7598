"""The fast per-example clipping path against tensorflow-privacy's stock DP-Keras clipping."""

from __future__ import annotations

import numpy as np
import pytest

import tensorflow as tf
import tensorflow_privacy  # noqa: F401 - a locked dependency: missing, these tests must fail, not skip

from lepton_nb.privacy import fast_clipping as fc  # noqa: E402

CLIP = 4.0  # between the float32 per-example norms (about 3.6 to 5.1): some clipped, some not


@pytest.fixture()
def float64():
    """Build models in float64. The dtype policy is set too: once any code has set a global policy
    (e.g. lepton_nb.distributed's precision scope restoring "float32"), Keras ignores floatx."""
    policy = tf.keras.mixed_precision.global_policy()
    tf.keras.backend.set_floatx("float64")
    tf.keras.mixed_precision.set_global_policy("float64")
    yield
    tf.keras.mixed_precision.set_global_policy(policy)
    tf.keras.backend.set_floatx("float32")


def _every_layer_model():
    """Conv2D in all three norm forms (depthwise for one input channel, direct, ghost), with and
    without bias, GroupNormalization, Dense on 2-D and 3-D inputs, Dropout (rate 0) and pooling."""
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(1)
    inp = tf.keras.Input((12, 12, 1))
    h = L.Conv2D(4, 3, padding="same", activation="tanh", name="conv_depthwise")(inp)     # C_in = 1
    h = L.Conv2D(6, 3, padding="same", use_bias=False, name="conv_direct")(h)             # T=144: direct
    h = L.GroupNormalization(groups=3, name="gn")(h)
    h = L.Activation("tanh")(h)
    h = L.MaxPooling2D(4)(h)                                                              # 3x3
    h = L.Conv2D(16, 3, strides=2, padding="valid", activation="relu", name="conv_ghost")(h)  # T=1
    h = L.Reshape((4, 4))(h)
    h = L.Dense(5, activation="tanh", name="dense_3d")(h)                                 # (B, 4, 5)
    h = L.Flatten()(h)
    h = L.Dropout(0.0)(h)
    out = L.Dense(3, name="logits")(h)
    return tf.keras.Model(inp, out)


def _data(n=6):
    rng = np.random.default_rng(0)
    return rng.random((n, 12, 12, 1)), rng.integers(0, 3, n)


def _stock_mean_gradient(model, x, y):
    from tensorflow_privacy import DPKerasSGDOptimizer

    opt = DPKerasSGDOptimizer(l2_norm_clip=CLIP, noise_multiplier=0.0, num_microbatches=len(x), learning_rate=1.0)
    tape = tf.GradientTape()
    with tape:
        losses = tf.keras.losses.sparse_categorical_crossentropy(y, model(x, training=True), from_logits=True)
    return [g.numpy() for g, _ in opt._compute_gradients(losses, model.trainable_variables, tape=tape)]


def test_norm_forms_are_all_exercised(float64):
    model = _every_layer_model()
    assert fc.conv_norm_form(144, 36, 6) == "direct"
    assert fc.conv_norm_form(1, 54, 16) == "ghost"
    assert model.get_layer("conv_depthwise").input_shape[-1] == 1


def test_per_example_norms_match_per_example_gradients(float64):
    model = _every_layer_model()
    x, y = _data()
    norms = fc.per_example_gradient_norms(model, x, y).numpy()
    ref = []
    for i in range(len(x)):
        with tf.GradientTape() as t:
            loss = tf.keras.losses.sparse_categorical_crossentropy(y[i:i + 1], model(x[i:i + 1], training=True),
                                                                   from_logits=True)
        ref.append(np.sqrt(sum(np.sum(g.numpy() ** 2) for g in t.gradient(loss, model.trainable_variables))))
    np.testing.assert_allclose(norms, ref, rtol=1e-8)


@pytest.mark.parametrize("bookkeeping", [True, False])
def test_fast_clipped_mean_equals_stock_with_noise_zero(bookkeeping):
    # float32: tensorflow-privacy's GaussianSumQuery casts the clip norm to float32
    model = _every_layer_model()
    x, y = (a.astype(np.float32) if a.dtype == np.float64 else a for a in _data())
    stock = _stock_mean_gradient(model, x, y)
    fast, norms, _, _ = fc.clipped_gradient_sum(model, tf.constant(x), tf.constant(y), CLIP, bookkeeping=bookkeeping)
    assert 1 <= (norms.numpy() > CLIP).sum() < len(x)
    assert len(fast) == len(stock) == len(model.trainable_variables)
    for v, f, s in zip(model.trainable_variables, fast, stock):
        np.testing.assert_allclose(f.numpy() / len(x), s, atol=1e-5, rtol=0, err_msg=v.name)


def test_fast_model_update_equals_stock_update():
    model = _every_layer_model()
    x, y = (a.astype(np.float32) if a.dtype == np.float64 else a for a in _data())
    stock = _stock_mean_gradient(model, x, y)
    before = [v.numpy().copy() for v in model.trainable_variables]
    dp = fc.FastDPModel(model, l2_norm_clip=CLIP, noise_multiplier=0.0, expected_batch_size=len(x))
    dp.compile(optimizer=tf.keras.optimizers.SGD(1.0),
               loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dp.train_on_batch(x, y)
    for v, b, s in zip(model.trainable_variables, before, stock):
        np.testing.assert_allclose(b - v.numpy(), s, atol=1e-5, rtol=0, err_msg=v.name)


def test_noise_is_added_with_the_right_scale():
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(200, name="d")])
    x = np.zeros((10, 4), np.float32)  # zero inputs and ... zero kernel gradients
    dp = fc.FastDPModel(model, l2_norm_clip=2.0, noise_multiplier=1.5, expected_batch_size=10)
    dp.compile(optimizer=tf.keras.optimizers.SGD(1.0),
               loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    k0 = model.layers[0].kernel.numpy().copy()
    dp.train_on_batch(x, np.zeros(10, np.int64))
    delta = (k0 - model.layers[0].kernel.numpy()).ravel()  # pure noise / B, std = 1.5 * 2 / 10
    assert np.std(delta) == pytest.approx(0.3, rel=0.1)


def test_batch_normalization_is_refused_with_a_fix():
    from lepton_nb.privacy.fast_clipping import DPModelError
    import lepton_nb as ln

    bn = ln.models.build_cnn(ln.settings.CNNConfig(filters=4, norm="batch"))
    for fast in (True, False):
        with pytest.raises(DPModelError, match="norm_0_0.*BatchNormalization.*GroupNormalization"):
            fc.check_dp_model(bn, fast=fast)
    fc.check_dp_model(ln.models.build_cnn(ln.settings.CNNConfig(filters=4, norm="group", activation="tanh")))


def test_unsupported_layer_is_named():
    from lepton_nb.privacy.fast_clipping import DPModelError

    model = tf.keras.Sequential([tf.keras.Input((8, 8, 2)), tf.keras.layers.DepthwiseConv2D(3, name="dw"),
                                 tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)])
    with pytest.raises(DPModelError, match="'dw' \\(DepthwiseConv2D\\).*path='stock'"):
        fc.FastDPModel(model, l2_norm_clip=1.0, noise_multiplier=1.0, expected_batch_size=4)
    fc.check_dp_model(model, fast=False)  # the stock path takes it


def test_shared_layer_is_refused():
    from lepton_nb.privacy.fast_clipping import DPModelError

    inp = tf.keras.Input((4,))
    shared = tf.keras.layers.Dense(4, name="shared")
    out = tf.keras.layers.Dense(2)(shared(shared(inp)))
    with pytest.raises(DPModelError, match="'shared' is called more than once"):
        fc.check_dp_model(tf.keras.Model(inp, out))


def test_empty_poisson_batches_are_trained_through():
    """Poisson sampling may draw no example; the step then adds noise to a zero sum."""
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((6, 6, 1)), tf.keras.layers.Conv2D(2, 3, name="c"),
                                 tf.keras.layers.Flatten(), tf.keras.layers.Dense(3, name="d")])
    dp = fc.FastDPModel(model, l2_norm_clip=1.0, noise_multiplier=1.0, expected_batch_size=4)
    dp.compile(optimizer=tf.keras.optimizers.SGD(0.1),
               loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def batches():
        for n in (3, 0, 5, 0):
            yield np.ones((n, 6, 6, 1), np.float32), np.zeros((n,), np.int64)

    ds = tf.data.Dataset.from_generator(batches, output_signature=(tf.TensorSpec((None, 6, 6, 1)),
                                                                   tf.TensorSpec((None,), tf.int64)))
    before = model.get_layer("d").kernel.numpy().copy()
    dp.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(model.get_layer("d").kernel.numpy()).all()
    assert not np.allclose(model.get_layer("d").kernel.numpy(), before)


def test_noise_is_fresh_every_step_and_follows_the_seed():
    def noise_updates(seed):
        tf.keras.utils.set_random_seed(seed)
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2000, name="d")])
        dp = fc.FastDPModel(model, l2_norm_clip=0.5, noise_multiplier=2.0, expected_batch_size=4)
        dp.compile(optimizer=tf.keras.optimizers.SGD(1.0),
                   loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        out = []
        for _ in range(2):
            k0 = model.layers[0].kernel.numpy().copy()
            dp.train_on_batch(np.zeros((4, 4), np.float32), np.zeros(4, np.int64))  # zero gradients: pure noise
            out.append(k0 - model.layers[0].kernel.numpy())
        return out

    a1, a2 = noise_updates(0)
    b1, _ = noise_updates(0)
    c1, _ = noise_updates(1)
    assert not np.allclose(a1, a2)  # a new draw each step
    np.testing.assert_array_equal(a1, b1)  # the global seed reproduces the noise (keep it secret for a release)
    assert not np.allclose(a1, c1)
    # std of the noisy mean update: noise_multiplier * C / expected batch = 2 * 0.5 / 4
    assert abs(np.std(a1) - 0.25) < 0.01 and abs(np.mean(a1)) < 0.01


def _per_example_reference(model, x, y):
    """Per-example gradients (one GradientTape per example), as numpy arrays per variable."""
    out = []
    for i in range(len(x)):
        with tf.GradientTape() as t:
            loss = tf.keras.losses.sparse_categorical_crossentropy(y[i:i + 1], model(x[i:i + 1], training=True),
                                                                   from_logits=True)
        out.append([tf.convert_to_tensor(g).numpy() for g in t.gradient(loss, model.trainable_variables)])
    return out


def _check_clipped_sum(model, x, y):
    """``fc.clipped_gradient_sum`` against per-example gradients, clipped at their median norm (some
    clipped, some not): exact norms and clipped sum. Returns ``(ref, ref_norms, clip)``."""
    ref = _per_example_reference(model, x, y)
    ref_norms = np.array([np.sqrt(sum(np.sum(g ** 2) for g in r)) for r in ref])
    clip = float(np.median(ref_norms))
    grads, norms, _, _ = fc.clipped_gradient_sum(model, tf.constant(x), tf.constant(y), clip)
    np.testing.assert_allclose(norms.numpy(), ref_norms, rtol=1e-10)
    for j, v in enumerate(model.trainable_variables):
        want = sum(min(1.0, clip / n) * r[j] for r, n in zip(ref, ref_norms))
        np.testing.assert_allclose(tf.convert_to_tensor(grads[j]).numpy(), want, atol=1e-12, err_msg=v.name)
    return ref, ref_norms, clip


def test_embedding_trains_on_the_fast_path_with_exact_clipping(float64):
    """tensorflow-privacy's Embedding function needed a second backward pass on a one-shot tape (a crash);
    ours gives exact norms and the clipped sum, repeated ids within an example included."""
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((6,), dtype="int32")
    h = L.Embedding(5, 4, mask_zero=True, name="emb")(inp)
    h = L.GlobalAveragePooling1D()(h)  # uses the mask
    model = tf.keras.Model(inp, L.Dense(3, name="logits")(h))
    x = np.array([[1, 1, 2, 0, 0, 0], [4, 3, 2, 1, 4, 4], [2, 2, 2, 2, 2, 2], [3, 0, 0, 0, 0, 0]])
    y = np.array([0, 1, 2, 1])
    ref, ref_norms, clip = _check_clipped_sum(model, x, y)
    dp = fc.FastDPModel(model, l2_norm_clip=clip, noise_multiplier=0.0, expected_batch_size=4)
    dp.compile(optimizer=tf.keras.optimizers.SGD(1.0),
               loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [v.numpy().copy() for v in model.trainable_variables]
    dp.train_on_batch(x, y)
    for j, (v, b) in enumerate(zip(model.trainable_variables, before)):
        want = sum(min(1.0, clip / n) * r[j] for r, n in zip(ref, ref_norms)) / 4
        np.testing.assert_allclose(b - v.numpy(), want, atol=1e-12, err_msg=v.name)


def _scatter_linear_model():
    from lepton_nb.models import build_scatter_linear

    model = build_scatter_linear((3, 3, 6), 4, groups=3)  # the weightless GroupNorm first: forward only
    logits = model.get_layer("logits")
    logits.kernel.assign(np.random.default_rng(1).normal(size=logits.kernel.shape))
    return model


def _weightless_group_norm_inside():
    L = tf.keras.layers
    inp = tf.keras.Input((3, 3, 6))
    h = L.Conv2D(6, 2, padding="same", activation="tanh", name="conv")(inp)  # its gradient goes through the GroupNorm
    h = L.GroupNormalization(groups=3, center=False, scale=False, name="groupnorm")(h)
    return tf.keras.Model(inp, L.Dense(4, name="logits")(L.Flatten()(h)))


@pytest.mark.parametrize("build", [_scatter_linear_model, _weightless_group_norm_inside], ids=["input", "inside"])
def test_group_norm_without_weights_runs_in_closed_form_with_exact_clipping(float64, monkeypatch, build):
    """A GroupNorm with nothing to train (the ScatterNet linear model's) runs in closed form in the fast
    path's forward pass instead of Keras' slower layer; the per-example norms and the clipped sum are
    those of the Keras model itself, also when gradients flow back through it."""
    tf.keras.utils.set_random_seed(4)
    model = build()
    rng = np.random.default_rng(2)
    x = rng.random((5, 3, 3, 6)) * np.array([1, 10, 0.1, 5, 2, 0.5])  # groups of unequal scale
    y = np.array([0, 1, 2, 3, 1])
    calls = []
    closed_form = fc._layer_group_norm
    monkeypatch.setattr(fc, "_layer_group_norm", lambda layer, h: calls.append(layer.name) or closed_form(layer, h))
    _check_clipped_sum(model, x, y)  # the reference runs Keras' GroupNormalization
    assert calls == ["groupnorm"]


def test_weight_regularization_is_added_unclipped_after_the_noise(float64):
    """kernel_regularizer reads only the weights: its gradient joins the noisy mean gradient exactly
    (it was dropped before); the per-example losses are clipped as without it."""
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(4)
    reg = tf.keras.regularizers.L2(0.3)
    model = tf.keras.Sequential([tf.keras.Input((5,)), L.Dense(4, activation="tanh", kernel_regularizer=reg, name="a"),
                                 L.Dense(3, bias_regularizer=reg, name="b")])
    rng = np.random.default_rng(1)
    x, y = rng.random((6, 5)), rng.integers(0, 3, 6)
    ref = _per_example_reference(model, x, y)
    ref_norms = np.array([np.sqrt(sum(np.sum(g ** 2) for g in r)) for r in ref])
    clip = float(np.median(ref_norms))
    with tf.GradientTape() as t:
        penalty = tf.add_n(model.losses)
    reg_grads = [tf.convert_to_tensor(g).numpy() for g in
                 t.gradient(penalty, model.trainable_variables, unconnected_gradients="zero")]
    assert sum(np.abs(g).sum() for g in reg_grads) > 0
    dp = fc.FastDPModel(model, l2_norm_clip=clip, noise_multiplier=0.0, expected_batch_size=8)
    dp.compile(optimizer=tf.keras.optimizers.SGD(1.0),
               loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [v.numpy().copy() for v in model.trainable_variables]
    dp.train_on_batch(x, y)
    for j, (v, b) in enumerate(zip(model.trainable_variables, before)):
        want = sum(min(1.0, clip / n) * r[j] for r, n in zip(ref, ref_norms)) / 8 + reg_grads[j]
        np.testing.assert_allclose(b - v.numpy(), want, atol=1e-12, err_msg=v.name)


def test_data_dependent_losses_are_refused():
    from lepton_nb.privacy.fast_clipping import DPModelError

    L = tf.keras.layers
    act = tf.keras.Sequential([tf.keras.Input((4,)), L.Dense(3, activity_regularizer="l2", name="act_reg")])
    with pytest.raises(DPModelError, match="'act_reg' has an activity_regularizer.*kernel_regularizer are fine"):
        fc.check_dp_model(act)

    inp = tf.keras.Input((4,))
    out = L.Dense(3)(inp)
    model = tf.keras.Model(inp, out)
    model.add_loss(tf.reduce_mean(out))
    with pytest.raises(DPModelError, match="adds a loss computed from the data"):
        fc.check_dp_model(model)

    class Penalized(L.Layer):  # adds a data-dependent loss inside call
        def call(self, h, training=None):
            if training or not self.only_training:
                self.add_loss(tf.reduce_sum(h))
            return h

    inp = tf.keras.Input((4,))
    penalized = Penalized(name="penalized")
    penalized.only_training = False
    with pytest.raises(DPModelError, match="'penalized' adds a loss computed from the data"):
        fc.check_dp_model(tf.keras.Model(inp, L.Dense(3)(penalized(inp))))

    inp = tf.keras.Input((4,))
    penalized = Penalized(name="penalized")
    penalized.only_training = True  # invisible when the model is built: caught when the step is traced
    model = tf.keras.Model(inp, L.Dense(3)(penalized(inp)))
    dp = fc.FastDPModel(model, l2_norm_clip=1.0, noise_multiplier=1.0, expected_batch_size=4)
    dp.compile(optimizer=tf.keras.optimizers.SGD(0.1),
               loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.get_weights()
    with pytest.raises(DPModelError, match="'penalized' adds a loss computed from the data"):
        dp.train_on_batch(np.ones((4, 4), np.float32), np.zeros(4, np.int64))
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("strides,padding,size", [(1, "same", 7), (2, "same", 7), (2, "valid", 8), (3, "valid", 9)])
def test_conv_norms_inside_a_graph_equal_per_example_gradients(strides, padding, size):
    """Inside tf.function in float32, Conv2D layers with several input channels take the grouped
    filter-gradient op (oneDNN, where it works here; the property test runs eagerly in float64 on
    the per-tap path); its norms and clipped sums equal a per-example GradientTape loop, also with
    a batch size unknown when the graph is traced (Poisson sampling)."""
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(5)
    inp = tf.keras.Input((size, size, 3))
    h = L.Conv2D(4, 3, strides=strides, padding=padding, activation="tanh", name="c1")(inp)
    h = L.Conv2D(5, (2, 3), padding=padding, use_bias=False, name="c2")(h)
    model = tf.keras.Model(inp, L.Dense(3, name="logits")(L.Flatten()(h)))
    x = np.random.default_rng(2).standard_normal((5, size, size, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    ref = _per_example_reference(model, x, y)
    ref_norms = np.array([np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in r)) for r in ref])
    clip = float(np.median(ref_norms))
    step = tf.function(lambda a, b: fc.clipped_gradient_sum(model, a, b, clip)[:2],
                       input_signature=[tf.TensorSpec((None, size, size, 3)), tf.TensorSpec((None,), tf.int64)])
    grads, norms = step(tf.constant(x), tf.constant(y))
    np.testing.assert_allclose(norms.numpy(), ref_norms, rtol=2e-5)
    for j, v in enumerate(model.trainable_variables):
        want = sum(min(1.0, clip / n) * r[j] for r, n in zip(ref, ref_norms))
        np.testing.assert_allclose(grads[j].numpy(), want, rtol=1e-4, atol=1e-5, err_msg=v.name)
    # which path ran: on this stack (TF 2.14, Linux x86, oneDNN on by default) the grouped one
    import os

    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0":
        assert fc.grouped_filter_gradients_work("float32")


def test_noisy_mean_gives_every_variable_its_own_noise_at_the_right_scale():
    """Zero sums of variables whose sizes are not multiples of the noise alignment: each comes back
    in its shape and dtype, the sum divided by B plus N(0, (stddev / B)^2) noise, and no two
    variables share a draw (a split that handed two variables the same slice would fail this)."""
    from scipy import stats

    tf.keras.utils.set_random_seed(5)
    shapes = [(3, 3, 1, 7), (7,), (301, 129), (129,), (129, 10), (10,)]
    sums = [tf.fill(shape, 8.0) for shape in shapes]
    out = fc.noisy_mean(sums, tf.constant(3.0), 4)
    assert [tuple(o.shape) for o in out] == shapes and all(o.dtype == tf.float32 for o in out)
    pieces = [(o.numpy() - 2.0).ravel() for o in out]  # (8 + N(0, 9)) / 4 - 2: N(0, 0.75^2)
    noise = np.concatenate(pieces) / 0.75
    assert noise.size == sum(int(np.prod(s)) for s in shapes)
    assert stats.kstest(noise, "norm").pvalue > 1e-3
    for i, a in enumerate(pieces):
        for b in pieces[i + 1:]:
            k = min(a.size, b.size)
            assert not np.isclose(a[:k], b[:k]).any()
    assert fc.NOISE_ALIGNMENT * 4 % 64 == 0  # 64-byte aligned float32 rows: the split makes no copies


def test_standard_normal_is_standard_normal():
    """The Box-Muller noise against N(0, 1): Kolmogorov-Smirnov, moments, the tails, and no
    correlation between the cosine and sine halves; a control (unit-variance uniform noise) fails."""
    from scipy import stats

    tf.keras.utils.set_random_seed(11)
    z = fc.standard_normal(400_001).numpy().astype(np.float64)
    assert z.shape == (400_001,) and np.isfinite(z).all()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01 and abs(stats.kurtosis(z, fisher=False) - 3) < 0.05
    assert abs(np.mean(np.abs(z) > 3) - 2 * stats.norm.sf(3)) < 5e-4
    half = len(z) // 2
    assert abs(np.corrcoef(z[:half], z[half:2 * half])[0, 1]) < 0.01
    z64 = fc.standard_normal(100_000, tf.float64).numpy()
    assert z64.dtype == np.float64 and stats.kstest(z64, "norm").pvalue > 1e-3
    control = (tf.random.uniform([400_001]).numpy() - 0.5) * np.sqrt(12)
    assert stats.kstest(control, "norm").pvalue < 1e-6
