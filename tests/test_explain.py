"""lepton_nb.explain: Grad-CAM and HiResCAM, integrated gradients' quadrature, the checks that can
fail (faithfulness, sanity, localization) with their controls, the surrogate and the tabular case.

Real models and real libraries (TensorFlow, tf-explain, Xplique, scikit-learn) on tiny data.
Comparisons with Xplique's own versions are in tests/test_explain_xplique.py, training-data
influence in tests/test_explain_influence.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import lepton_nb as ln
from lepton_nb.explain import (_common, attribution, cam, faithfulness, importance, localization, plotting, sanity,
                               surrogate, tabular)
from lepton_nb.settings import CNNConfig, TrainConfig

QUIET = dict(verbose=0, tensorboard=False, early_stopping_patience=None)


@pytest.fixture(scope="module")
def shapes():
    """The localization benchmark's CNN and Grad-CAM's scores (a known answer for several tests)."""
    return localization.benchmark({"gradcam": lambda m, x, t: ln.explain.gradcam(m, x, t)}, evaluated=40)


@pytest.fixture(scope="module")
def seed_cnn(tiny):
    """The seed CNN trained for 2 epochs on the tiny Fashion-MNIST subset."""
    return ln.training.train(lambda: ln.models.build_seed_cnn(), tiny, TrainConfig(epochs=2, **QUIET), name="seed_cnn").model


def reference_gradcam(model, images, layer_name, classes):
    """An independent Grad-CAM, one image at a time with its own GradientTape (keras-io style)."""
    grad_model = tf.keras.Model(model.inputs, [model.get_layer(layer_name).output, model.output])
    out = []
    for img, c in zip(images, classes):
        with tf.GradientTape() as tape:
            feats, preds = grad_model(img[None], training=False)
            score = preds[0, int(c)]
        grads = tape.gradient(score, feats)[0]
        cam_ = tf.nn.relu(tf.tensordot(feats[0], tf.reduce_mean(grads, axis=(0, 1)), axes=1))
        cam_ = np.maximum(tf.image.resize(cam_[..., None], images.shape[1:3], method="bilinear").numpy()[..., 0], 0)
        out.append(cam_ / cam_.max() if cam_.max() > 0 else cam_)
    return np.stack(out)


# ------------------------------------------------------------------------------------ Grad-CAM


@pytest.mark.parametrize("layer_name", ["act_0_0", "pool_0"])
def test_gradcam_matches_independent_gradienttape(seed_cnn, tiny, layer_name):
    x = tiny.x_test[:12]
    classes = np.arange(12) % 10
    ours = ln.explain.gradcam(seed_cnn, x, classes, layer_name)
    np.testing.assert_allclose(ours, reference_gradcam(seed_cnn, x, layer_name, classes), atol=2e-4)
    assert ours.shape == (12, 28, 28) and ours.dtype == np.float32 and ours.min() >= 0


def test_gradcam_raw_equals_tf_explain_computation(seed_cnn, tiny):
    from tf_explain.core.grad_cam import GradCAM

    x = tiny.x_test[:8]
    for guided in (False, True):
        feats, grads = GradCAM.get_gradients_and_filters(seed_cnn, x, "act_0_0", 3, guided)
        ref = np.stack([c.numpy() for c in GradCAM.generate_ponderated_output(feats, grads)])
        raw, targets, _ = cam.gradcam_raw(seed_cnn, x, 3, "act_0_0", guided=guided)
        np.testing.assert_allclose(raw, ref, rtol=1e-5, atol=1e-7)
        assert (targets == 3).all()


def test_default_layer_is_the_rectified_last_convolution(seed_cnn, small_d2, tiny):
    assert ln.explain.default_layer(seed_cnn) == "act_0_0"
    assert ln.explain.default_layer(small_d2) == "act_1_0"
    assert ln.explain.feature_layers(seed_cnn) == ["conv_0_0", "act_0_0", "pool_0"]
    x = tiny.x_test[:6]
    pred = seed_cnn.predict(x, verbose=0).argmax(1)
    np.testing.assert_allclose(ln.explain.gradcam(seed_cnn, x), ln.explain.gradcam(seed_cnn, x, pred, "act_0_0"))
    np.testing.assert_allclose(ln.explain.gradcam(seed_cnn, x[..., 0]), ln.explain.gradcam(seed_cnn, x))


def test_gradcam_constant_map_gives_zeros_not_nan(tiny_cnn):
    out = ln.explain.gradcam(tiny_cnn, np.zeros((3, 28, 28, 1), np.float32))
    assert np.isfinite(out).all() and (out == 0).all()


def test_gradcam_finds_last_conv_inside_nested_model(seed_cnn, tiny):
    from tf_explain.core.grad_cam import GradCAM

    backbone = tf.keras.Model(seed_cnn.inputs, seed_cnn.get_layer("pool_0").output, name="backbone")
    hidden, logits = tf.keras.layers.Dense(128, activation="relu"), tf.keras.layers.Dense(10)
    outer = tf.keras.Sequential([tf.keras.Input((28, 28, 1)), backbone, tf.keras.layers.Flatten(), hidden, logits])
    hidden.set_weights(seed_cnn.get_layer("hidden").get_weights())
    logits.set_weights(seed_cnn.get_layer("logits").get_weights())
    x = tiny.x_test[:8]
    assert _common.default_layer(outer) == "act_0_0"
    np.testing.assert_allclose(ln.explain.gradcam(outer, x), ln.explain.gradcam(seed_cnn, x), atol=1e-5)
    assert GradCAM.infer_grad_cam_target_layer(outer) == "backbone"  # tf-explain cannot reach inside


@pytest.mark.parametrize("images, kwargs, match", [
    (np.zeros((2, 32, 32, 1), np.float32), {}, "do not fit"),
    (np.full((2, 28, 28, 1), np.nan, np.float32), {}, "NaN"),
    (np.zeros((0, 28, 28, 1), np.float32), {}, "no examples"),
    (np.zeros((2, 28, 28, 1), np.float32), {"class_index": 10}, "0..9"),
    (np.zeros((2, 28, 28, 1), np.float32), {"class_index": [1, 2, 3]}, "one per example"),
    (np.zeros((2, 28, 28, 1), np.float32), {"layer_name": "logits"}, "not feature maps"),
    (np.zeros((2, 28, 28, 1), np.float32), {"layer_name": "nope"}, "no layer named"),
])
def test_gradcam_bad_input_raises_clear_error(tiny_cnn, images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ln.explain.gradcam(tiny_cnn, images, **kwargs)
    if "layer_name" in kwargs:
        with pytest.raises(ValueError, match=match):
            cam.hirescam(tiny_cnn, images, **kwargs)


def test_hirescam_is_feature_times_gradient_and_sums_to_the_head_contribution(small_d2, small_batch):
    """HiResCAM (Draelos & Carin 2020) at the last pooled layer, whose Flatten + Dense head is
    linear up to the hidden ReLU: the map summed over positions is the first-order contribution
    of that layer to the logit, sum(A * dy/dA); checked against an independent GradientTape."""
    x, t = small_batch
    sub = tf.keras.Model(small_d2.inputs, [small_d2.get_layer("pool_1").output, small_d2.output])
    with tf.GradientTape() as tape:
        feats, logits = sub(x, training=False)
        score = tf.gather(logits, t, axis=1, batch_dims=1)
    ref = tf.reduce_sum(feats * tape.gradient(score, feats), axis=-1).numpy()
    raw = cam.hirescam(small_d2, x, t, "pool_1", rectify=False)
    small = tf.image.resize(ref[..., None], (28, 28), method="bilinear").numpy()[..., 0]
    np.testing.assert_allclose(raw, small, atol=1e-5)
    rect = cam.hirescam(small_d2, x, t, "pool_1")
    assert rect.min() >= 0 and np.isclose(rect.reshape(12, -1).max(1), 1).sum() >= 6
    assert not np.allclose(rect, ln.explain.gradcam(small_d2, x, t, "pool_1"))  # not Grad-CAM's averaged weights


# --------------------------------------------------------------------- integrated gradients


def test_ig_quadrature_nodes_and_weights():
    for rule in ("gausslegendre", "trapezoid", "riemann_middle", "uniform_mean"):
        a, w = attribution.nodes_weights(16, rule)
        assert np.isclose(w.sum(), 1) and a.min() >= 0 and a.max() <= 1
        # exact for polynomials of degree 1; Gauss-Legendre for degree 2 * 16 - 1
        assert abs((w * a).sum() - 0.5) < (1e-12 if rule != "uniform_mean" else 0.1)
    a, w = attribution.nodes_weights(8, "gausslegendre")
    assert abs((w * a ** 15).sum() - 1 / 16) < 1e-12
    with pytest.raises(ValueError, match="rule"):
        attribution.nodes_weights(8, "simpson")
    with pytest.raises(ValueError, match="at least 2"):
        attribution.nodes_weights(1, "trapezoid")


def test_ig_gauss_legendre_is_complete_within_one_percent_and_the_old_rule_is_not(small_d2, small_batch):
    x, t = small_batch
    a, delta = attribution.integrated_gradients(small_d2, x, t, return_delta=True)  # defaults: Gauss-Legendre, 32 nodes
    f = _common.predict_logits(small_d2, x)[np.arange(len(x)), t] - _common.predict_logits(small_d2, np.zeros_like(x[:1]))[0][t]
    np.testing.assert_allclose(a.reshape(len(x), -1).sum(1) - f, delta, rtol=1e-4, atol=1e-4)
    assert np.median(np.abs(delta) / np.abs(f)) < 0.01
    _, old = attribution.integrated_gradients(small_d2, x, t, steps=8, rule="uniform_mean", return_delta=True)
    assert np.median(np.abs(old) / np.abs(f)) > np.median(np.abs(delta) / np.abs(f))  # the control: first order


def test_ig_and_gradients_equal_tf_explain_where_it_is_right(seed_cnn, tiny):
    from tf_explain.core.integrated_gradients import IntegratedGradients
    from tf_explain.core.vanilla_gradients import VanillaGradients

    x = tiny.x_test[:4]
    ref = VanillaGradients.compute_gradients(tf.constant(x), seed_cnn, 4).numpy()[..., 0]
    np.testing.assert_allclose(attribution.vanilla_gradients(seed_cnn, x, 4), ref, rtol=1e-5, atol=1e-7)
    # tf-explain's IG: mean gradient over linspace(0, 1, steps), without the (x - baseline) factor
    t = int(seed_cnn.predict(x[:1], verbose=0).argmax())
    ig_tfx = IntegratedGradients.get_integrated_gradients(IntegratedGradients.generate_interpolations(x[:1], 16),
                                                          seed_cnn, t, 16).numpy()
    ours = attribution.integrated_gradients(seed_cnn, x[:1], t, steps=16, rule="uniform_mean")
    np.testing.assert_allclose(ours, (ig_tfx * x[:1])[..., 0], rtol=1e-4, atol=1e-6)


def test_occlusion_all_classes_and_registry(seed_cnn, tiny):
    x = tiny.x_test[:3]
    allc = attribution.occlusion_all_classes(seed_cnn, x, patch=7, stride=7)
    assert allc.shape == (3, 10, 28, 28)
    np.testing.assert_allclose(attribution.occlusion(seed_cnn, x, [1, 5, 9], patch=7, stride=7),
                               allc[np.arange(3), [1, 5, 9]], atol=1e-6)
    np.testing.assert_allclose(allc.sum(axis=1), 0, atol=1e-5)  # probabilities sum to 1 in every occluded copy
    with pytest.raises(ValueError, match="unknown method"):
        attribution.heatmaps(seed_cnn, x, "deeplift")


def test_every_method_runs_and_gives_a_map(small_d2, small_batch):
    x, t = small_batch
    cfg = ln.explain.settings.AttributionConfig(ig_steps=8, smoothgrad_samples=4, rise_masks=40, lime_samples=20,
                                                sobol_designs=4)
    maps = attribution.all_maps(small_d2, x[:2], t[:2], config=cfg)
    assert set(maps) == set(attribution.METHODS)
    for name, m in maps.items():
        assert m.shape == (2, 28, 28) and np.isfinite(m).all() and np.abs(m).max() > 0, name
        hm = attribution.to_heatmap(m, attribution.METHODS[name][1])
        assert hm.min() >= 0 and hm.max() <= 1


def test_to_heatmap_scaling():
    m = np.array([[[-2.0, 1.0], [0.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(attribution.to_heatmap(m, "abs")[0], [[1, 0.5], [0, 0.25]])
    np.testing.assert_allclose(attribution.to_heatmap(m, "positive")[0], [[0, 1], [0, 0.5]])
    np.testing.assert_allclose(attribution.to_heatmap(m, "signed")[0], [[0, 0.75], [0.5, 0.625]])
    assert (attribution.to_heatmap(m, "abs")[1] == 0).all()


def test_activation_maps(seed_cnn, tiny):
    acts = attribution.activation_maps(seed_cnn, tiny.x_test[:2], "act_0_0")
    assert acts.shape == (2, 28, 28, 32) and (acts >= 0).all()
    hm = attribution.activation_heatmap(seed_cnn, tiny.x_test[:2], "pool_0")
    assert hm.shape == (2, 28, 28) and np.isclose(hm.max(), 1)


# ------------------------------------------------------------------------------ faithfulness


def test_gaussian_blur_equals_scipy(tiny):
    from scipy.ndimage import gaussian_filter

    x = tiny.x_test[:3]
    ref = np.stack([gaussian_filter(i, (3, 3, 0)) for i in x])
    np.testing.assert_allclose(faithfulness.gaussian_blur(x, 3.0).numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(faithfulness.fill_images(x, "blur"), ref, atol=1e-5)


def test_deletion_insertion_curves_start_and_end_at_the_model(small_d2, small_batch, tiny):
    x, t = small_batch
    p = _common.softmax(_common.predict_logits(small_d2, x))[np.arange(len(x)), t]
    for fill in ("zero", "mean", "blur"):
        r = faithfulness.deletion_insertion(small_d2, x, np.random.default_rng(0).random(x.shape[:3]), t, fill=fill, steps=7,
                                            mean_image=tiny.x_train.mean(0))
        np.testing.assert_allclose(r["deletion"][:, 0], p, atol=1e-5)
        np.testing.assert_allclose(r["insertion"][:, -1], p, atol=1e-5)
        base = faithfulness.fill_images(x, fill, mean_image=tiny.x_train.mean(0))
        pb = _common.softmax(_common.predict_logits(small_d2, base))[np.arange(len(x)), t]
        np.testing.assert_allclose(r["deletion"][:, -1], pb, atol=1e-5)
    with pytest.raises(ValueError, match="mean_image"):
        faithfulness.deletion_insertion(small_d2, x, x[..., 0], t, fill="mean")
    with pytest.raises(ValueError, match="maps must be"):
        faithfulness.deletion_insertion(small_d2, x, x[:3, ..., 0], t)


def test_nli_fill_interpolates_from_the_neighbours():
    img = np.tile(np.linspace(0, 1, 8), (8, 1))
    removed = np.zeros((8, 8), bool)
    removed[3:5, 3:5] = True
    out = faithfulness.nli_impute(img, removed, noise=0.0)
    np.testing.assert_allclose(out, img, atol=0.02)  # a linear ramp is its own neighbour average
    assert (faithfulness.nli_impute(img, np.ones((8, 8), bool)) == 0).all()


def test_faithfulness_table_controls_are_never_faithful_and_a_known_answer_is(tiny):
    """A known answer: on a linear softmax model, each pixel's own deletion effect (occlusion with a
    1x1 patch and the zero fill) ranks pixels as deletion at the zero fill removes them; it beats
    both controls, its reverse does not, and the controls never do."""
    tf.keras.utils.set_random_seed(0)
    linear = ln.training.train(lambda: tf.keras.Sequential([tf.keras.Input((28, 28, 1)), tf.keras.layers.Flatten(),
                                                             tf.keras.layers.Dense(10, name="logits")]),
                               tiny, TrainConfig(epochs=5, **QUIET), name="linear").model
    x = tiny.x_test[:24]
    t = _common.predict_logits(linear, x).argmax(1).astype(np.int32)
    known = attribution.occlusion(linear, x, t, patch=1, stride=1)
    table, _ = faithfulness.faithfulness_table(linear, x, {"known": known, "reversed": -known}, t, fills=("zero",),
                                               steps=28)
    assert set(table["method"]) == {"known", "reversed", "random", "input"}
    assert faithfulness.verdicts(table) == {"known": ["zero"], "reversed": [], "random": [], "input": []}
    with pytest.raises(ValueError, match="reserved"):
        faithfulness.faithfulness_table(linear, x, {"random": known}, t, fills=("zero",))


def test_mufidelity_table_centres_maps_and_scores_known_answers(small_d2, small_batch):
    x, t = small_batch
    occ = attribution.occlusion(small_d2, x, t, patch=4, stride=4)
    table = faithfulness.mufidelity_table(small_d2, x, {"occlusion": occ}, t, fills=("zero",), nb_samples=32, chunks=3)
    r = table.set_index("method")["mufidelity"]
    assert r["occlusion"] > 0.3 and abs(r["random"]) < 0.25 and r["random, uncentred"] > r["random"]
    assert list(table["fill"].unique()) == ["zero"]


# ------------------------------------------------------------------------------------ sanity


def test_foreground_similarity_and_summary():
    rng = np.random.default_rng(0)
    x = np.zeros((4, 28, 28, 1), np.float32)
    x[:, 5:20, 5:20] = 1
    a = rng.random((4, 28, 28))
    sim = sanity.foreground_similarity(a, a, x)
    np.testing.assert_allclose(sim["spearman_signed"], 1)
    np.testing.assert_allclose(sanity.foreground_similarity(a, -a, x)["spearman_signed"], -1)
    const = sanity.foreground_similarity(a, np.ones_like(a), x)
    assert np.isnan(const["spearman_abs"]).all()
    s = sanity.summary(const)
    assert s["spearman_abs"] == 0 and s["spearman_abs_undefined"] == 1
    # background pixels do not count: equal maps on the foreground, different outside, still 1
    b = a.copy()
    b[:, 25:, 25:] = rng.random((4, 3, 3))
    np.testing.assert_allclose(sanity.foreground_similarity(a, b, x)["spearman_signed"], 1)


def test_randomized_copy_offset_seed_randomizes_and_the_training_seed_does_not(small_d2, tiny):
    """The spike's finding: re-initializing the logits layer with the training seed (small_d2 was
    trained with seed 0) rebuilds its initial head, which the trained layers are adapted to."""
    x = tiny.x_test[:32]
    with pytest.raises(RuntimeError, match="re-creates"):
        sanity.randomized_copy(small_d2, 1, seed=-sanity.RANDOMIZATION_SEED_OFFSET, check_logits=x)
    fresh = sanity.randomized_copy(small_d2, 1, seed=0, check_logits=x)  # raises if it did not randomize
    for u, v in zip(sanity.weighted_layers(small_d2)[:-1], sanity.weighted_layers(fresh)[:-1]):
        assert all(np.array_equal(p, q) for p, q in zip(u.get_weights(), v.get_weights()))
    assert not np.array_equal(small_d2.get_layer("logits").get_weights()[0], fresh.get_layer("logits").get_weights()[0])


def test_summary_counts_the_spread_between_draws():
    per_image = np.array([[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1]])  # two draws, four images
    s = sanity.summary({"spearman_abs": per_image})
    assert s["spearman_abs"] == pytest.approx(0.3) and s["spearman_abs_se"] == pytest.approx(0.2)
    assert sanity.summary({"spearman_abs": per_image[0]})["spearman_abs_se"] == 0


def test_cascade_verdict_fails_the_controls(small_d2, small_batch, tiny):
    x, t = small_batch
    ref = ln.training.train(lambda: ln.models.build_cnn(CNNConfig(filters=8, depth=2, dense_units=32)), tiny,
                            TrainConfig(epochs=3, seed=1, **QUIET), name="d2_ref").model
    from lepton_nb.stories.nb05_interpretability import controls

    methods = {"gradcam": lambda m, xx, tt: ln.explain.gradcam(m, xx, tt), **controls()}
    table, maps = sanity.cascade(small_d2, x, t, methods, reference_model=ref, draws=2)
    steps = list(dict.fromkeys(table["step"]))
    assert (table[table["layers_randomized"] > 0]["draws"] == 2).all()
    assert steps[0] == "independently trained" and steps[1] == "top 1 (logits)" and len(steps) == 5
    v = sanity.verdict(table)
    assert not any(v[c]["pass"] for c in ("input", "constant", "random"))
    assert v["input"]["after_logits"] == pytest.approx(1.0) and v["constant"]["reproducible"] == 0
    first = table[table["layers_randomized"] == 1].set_index("method")
    assert first.loc["gradcam", "spearman_abs"] < table.set_index(["method", "step"]).loc[("gradcam", steps[0]), "spearman_abs"]
    assert set(maps) == {"trained", *steps}
    with pytest.raises(ValueError, match="trained-vs-trained"):
        sanity.verdict(sanity.cascade(small_d2, x[:4], t[:4], methods, steps=1)[0])


def test_class_specificity_and_xplique_metrics_beside_controls(small_d2, small_batch):
    x, t = small_batch
    from lepton_nb.stories.nb05_interpretability import controls

    methods = {"gradients": lambda m, xx, tt: attribution.vanilla_gradients(m, xx, tt), **controls()}
    spec = sanity.class_specificity(small_d2, x, methods)
    assert spec.loc["input", "spearman_signed"] == pytest.approx(1.0)
    assert spec.loc["gradients", "spearman_signed"] < 0.9
    xm = sanity.xplique_metrics(small_d2, x[:6], {k: methods[k] for k in ("gradients", "input", "constant")}, t[:6],
                                stability_images=2, stability_samples=3)
    assert xm.loc["constant", "stability_l2"] == 0 and xm.loc["input", "random_logit_ssim"] == pytest.approx(1.0)
    assert xm.loc["gradients", "random_logit_ssim"] < 0.9


# ------------------------------------------------------------------------------ localization


def test_shapes_are_equally_bright_and_the_input_control_scores_at_chance():
    assert all(v.sum() == 20 for v in localization.SHAPES.values())
    x, y, boxes, which = localization.shapes_dataset(900, seed=1)
    assert set(np.unique(y)) == {0, 1, 2, 3} and ((which == 1).sum(axis=(1, 2)) == 20).all()
    assert (x[..., 0][which > 0] == 1).all() and x[..., 0][which == 0].max() <= 0.3
    hits = localization.pointing(x[..., 0], boxes)
    assert abs(hits.mean() - 1 / 3) < 3 * np.sqrt(2 / 9 / 900)
    assert abs(localization.pointing(np.random.default_rng(0).random(x.shape[:3]), boxes).mean() - boxes.mean()) < 0.04
    np.testing.assert_allclose(localization.energy_in_mask(boxes.astype(float), boxes), 1)


def test_localization_benchmark_scores_methods_beside_controls(shapes):
    loc = shapes
    table = loc["table"]
    assert loc["accuracy"] > 0.9, "the shapes CNN did not learn the task, so the benchmark says nothing"
    assert set(table.index) == {"gradcam", "input", "random"}
    assert table.loc["gradcam", "pointing"] > table.loc["input", "pointing"] + 0.3
    assert table.loc["input", "chance_pointing"] == pytest.approx(1 / 3)


def test_background_heat_reference_row():
    x = np.zeros((2, 28, 28, 1), np.float32)
    x[:, 10:18, 10:18] = 1
    on_ink = np.broadcast_to(x[..., 0], (2, 28, 28))
    heat = localization.background_heat({"ink": on_ink, "outside": 1 - on_ink}, x)
    assert heat.loc["ink", "mass_on_background"] == 0 and heat.loc["outside", "mass_on_background"] == 1
    assert heat.loc["(share of the area)", "mass_on_background"] == pytest.approx(1 - 64 / 784)


# ------------------------------------------------------------------------------- surrogate


def test_readable_features_are_what_their_names_say():
    x = np.zeros((2, 28, 28), np.float32)
    x[1, 0:7, 0:7] = 1.0  # the top-left square
    f = surrogate.readable_features(x)
    names = [ft.name for ft in surrogate.FEATURES]
    assert f.shape == (2, len(surrogate.FEATURES)) == (2, 38)
    assert f[1, names.index("ink in the top left square")] == 1 and f[1, 1:16].sum() == 0
    assert f[1, names.index("height of the ink")] == 7 and f[1, names.index("ink area (pixels)")] == 49
    legs = np.zeros((1, 28, 28), np.float32)
    legs[0, 4:26, 8:12] = legs[0, 4:26, 16:20] = 1.0  # trousers
    assert surrogate.readable_features(legs)[0, names.index("ink runs across rows 16-23")] == 2
    with pytest.raises(ValueError, match="28x28"):
        surrogate.readable_features(np.zeros((1, 32, 32)))


def test_distill_reports_baselines_and_the_frontier(small_d2, tiny, assert_drawn):
    cfg = ln.explain.settings.SurrogateConfig(leaves=16, copies=1, frontier=(4, 16), bootstrap=50)
    d = surrogate.distill(small_d2, tiny.x_train, tiny.y_train, tiny.x_test, tiny.y_test, config=cfg)
    f = d.frontier
    assert set(f["features"]) == {"readable", "penultimate", "pixels"}
    assert set(f[f["features"] == "readable"]["variant"]) == set(surrogate.READABLE_VARIANTS)
    assert d.variant in d.validation and d.tree.get_n_leaves() <= 16
    assert d.queries == 2 * (len(tiny.x_train) - len(tiny.x_train) // 10)
    r = d.report
    assert r["ci95"][0] <= r["fidelity"] <= r["ci95"][1] and len(r["per_class_fidelity"]) == 10
    ceiling = d.row("penultimate", "CNN soft labels, queries", 16)["fidelity"]
    assert ceiling > d.row("readable", "true labels (baseline)")["fidelity"]
    assert_drawn(plotting.frontier(f))
    assert_drawn(plotting.picture_tree(d, tiny.class_names, depth=2), min_axes=7)


def test_evaluate_fidelity_on_errors():
    model = np.array([0, 0, 1, 1, 2, 2])
    truth = np.array([0, 1, 1, 1, 2, 0])
    r = surrogate.evaluate(np.array([0, 0, 1, 2, 2, 0]), model, truth, num_classes=3, bootstrap=20)
    assert r["fidelity"] == pytest.approx(4 / 6) and r["fidelity_on_model_errors"] == pytest.approx(0.5)
    assert r["per_class_fidelity"] == [1.0, 0.5, 0.5]


# ------------------------------------------------------------------------------- tabular


def test_tabular_breast_cancer_attributions_permutation_and_tree(assert_drawn):
    tab = tabular.breast_cancer(seed=0)
    run = ln.training.train(lambda: tabular.build_tabular_mlp(30), tab.dataset,
                            TrainConfig(epochs=15, batch_size=32, **QUIET), name="tab")
    x, pred = tab.dataset.x_test, run.report["y_pred"]
    assert run.report["accuracy"] > 0.9
    ig, delta = attribution.integrated_gradients(run.model, x, pred, return_delta=True)
    f = (run.model(x).numpy() - run.model(np.zeros_like(x)).numpy())[np.arange(len(x)), pred]
    assert ig.shape == x.shape and np.median(np.abs(delta) / np.abs(f)) < 0.01
    table = importance.feature_table(ig, pred, tab.feature_names, tab.dataset.class_names, top=None)
    assert list(table["mean |attr|"]) == sorted(table["mean |attr|"], reverse=True)
    perm = importance.permutation_importance(run.model, x, tab.dataset.y_test, tab.feature_names, repeats=3)
    assert len(perm) == 30 and list(perm.columns) == ["accuracy drop", "std"]
    s = surrogate.model_surrogate(run.model, tab.dataset.x_train, x, features_train=tab.raw_train,
                                  features_test=tab.raw_test, feature_names=tab.feature_names,
                                  class_names=tab.dataset.class_names, max_depth=3, max_leaf_nodes=None)
    assert s.fidelity > 0.85 and s.depth <= 3
    assert_drawn(plotting.feature_bars(perm.head(5), column="accuracy drop"))
    assert_drawn(plotting.surrogate_tree(s))


def test_region_importance_shares(tiny):
    maps = np.zeros((4, 28, 28))
    maps[:, :7, :7] = 1.0
    imp = importance.region_importance(maps, np.array([0, 0, 1, 1]), 3, cell=7)
    assert imp.shape == (3, 4, 4) and imp[0, 0, 0] == 1 and np.isnan(imp[2]).all()
    table = importance.region_table(imp, ["a", "b", "c"], cell=7, top=1)
    assert list(table["share %"]) == [100.0, 100.0]
    with pytest.raises(ValueError, match="non-negative"):
        importance.region_importance(-maps, np.zeros(4, int), 3, cell=7)


def test_settings_give_each_method_its_options():
    from lepton_nb.explain.settings import AttributionConfig, FaithfulnessConfig, InfluenceConfig, SurrogateConfig

    cfg = AttributionConfig(ig_steps=16, smoothgrad_samples=4, occlusion_patch=6)
    assert cfg.options("integrated_gradients") == {"steps": 16, "rule": "gausslegendre"}
    assert cfg.options("smoothgrad") == {"nb_samples": 4, "noise": 0.15} == cfg.options("vargrad")
    assert cfg.options("occlusion") == {"patch": 6, "stride": 2} and cfg.options("gradcam") == {}
    assert cfg.options("lime") == {"nb_samples": 200, "cell": 4}
    for bad, match in ((lambda: AttributionConfig(ig_steps=1), "ig_steps >= 2"),
                       (lambda: AttributionConfig(ig_rule="simpson"), "ig_rule"),
                       (lambda: FaithfulnessConfig(fills=("zero", "noise")), "fills"),
                       (lambda: InfluenceConfig(flip_fraction=0.7), "flip_fraction"),
                       (lambda: SurrogateConfig(frontier=()), "frontier")):
        with pytest.raises(ValueError, match=match):
            bad()
