"""lepton_nb.explain: Grad-CAM, the other attribution methods, trust checks, surrogate, influence.

Real models and real libraries (TensorFlow, tf-explain, scikit-learn); tiny data so the file runs
in about a minute on 2 cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import lepton_nb as ln
from lepton_nb.settings import TrainConfig

from lepton_nb.explain import _common, attribution, influence, plotting, surrogate, tabular, trust

QUIET = dict(verbose=0, tensorboard=False, early_stopping_patience=None)


@pytest.fixture(scope="module")
def seed_cnn(tiny):
    """The seed CNN trained for 2 epochs on the tiny Fashion-MNIST subset."""
    run = ln.training.train(lambda: ln.models.build_seed_cnn(), tiny, TrainConfig(epochs=2, **QUIET), name="seed_cnn")
    return run.model


@pytest.fixture(scope="module")
def patches():
    """The known-answer task: a small CNN trained on bright-patch images (with a dim distractor)."""
    return trust.localization_check(1200, distractor=0.6, seed=0,
                                    methods={"gradcam": lambda m, x, t: ln.explain.gradcam(m, x, t),
                                             "occlusion": lambda m, x, t: attribution.heatmaps(m, x, "occlusion", t)})


def reference_gradcam(model, images, layer_name, classes):
    """An independent Grad-CAM, one image at a time with its own GradientTape (keras-io style)."""
    grad_model = tf.keras.Model(model.inputs, [model.get_layer(layer_name).output, model.output])
    out = []
    for img, c in zip(images, classes):
        with tf.GradientTape() as tape:
            feats, preds = grad_model(img[None], training=False)
            score = preds[0, int(c)]
        grads = tape.gradient(score, feats)[0]
        weights = tf.reduce_mean(grads, axis=(0, 1))
        cam = tf.nn.relu(tf.tensordot(feats[0], weights, axes=1))
        cam = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear").numpy()[..., 0]
        cam = np.maximum(cam, 0)
        out.append(cam / cam.max() if cam.max() > 0 else cam)
    return np.stack(out)


# ------------------------------------------------------------------------------------ Grad-CAM


@pytest.mark.parametrize("layer_name", ["act_0_0", "pool_0"])
def test_gradcam_matches_independent_gradienttape(seed_cnn, tiny, layer_name):
    x = tiny.x_test[:12]
    classes = np.arange(12) % 10
    ours = ln.explain.gradcam(seed_cnn, x, classes, layer_name)
    ref = reference_gradcam(seed_cnn, x, layer_name, classes)
    assert ours.shape == (12, 28, 28) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    peaks = ours.reshape(12, -1).max(axis=1)
    assert ours.min() >= 0 and (np.isclose(peaks, 1) | (peaks == 0)).all()
    assert np.isclose(peaks, 1).sum() >= 6  # most targets have some positive evidence


def test_gradcam_raw_equals_tf_explain_computation(seed_cnn, tiny):
    from tf_explain.core.grad_cam import GradCAM

    from lepton_nb.explain.cam import gradcam_raw

    x = tiny.x_test[:8]
    for guided in (False, True):
        feats, grads = GradCAM.get_gradients_and_filters(seed_cnn, x, "act_0_0", 3, guided)
        ref = np.stack([c.numpy() for c in GradCAM.generate_ponderated_output(feats, grads)])
        raw, targets, _ = gradcam_raw(seed_cnn, x, 3, "act_0_0", guided=guided)
        np.testing.assert_allclose(raw, ref, rtol=1e-5, atol=1e-7)
        assert (targets == 3).all()


def test_gradcam_defaults_predicted_class_and_rectified_last_conv(seed_cnn, tiny):
    x = tiny.x_test[:10]
    assert ln.explain.default_layer(seed_cnn) == "act_0_0"
    assert ln.explain.feature_layers(seed_cnn) == ["conv_0_0", "act_0_0", "pool_0"]
    pred = seed_cnn.predict(x, verbose=0).argmax(1)
    np.testing.assert_allclose(ln.explain.gradcam(seed_cnn, x), ln.explain.gradcam(seed_cnn, x, pred, "act_0_0"))
    # (N, H, W) without a channel axis is accepted for one-channel models
    np.testing.assert_allclose(ln.explain.gradcam(seed_cnn, x[..., 0]), ln.explain.gradcam(seed_cnn, x))


def test_gradcam_per_image_targets_equal_separate_calls(seed_cnn, tiny):
    x = tiny.x_test[:6]
    classes = np.array([0, 1, 2, 0, 1, 2])
    batched = ln.explain.gradcam(seed_cnn, x, classes)
    for c in range(3):
        sel = classes == c
        np.testing.assert_allclose(batched[sel], ln.explain.gradcam(seed_cnn, x[sel], c), atol=1e-6)


def test_gradcam_constant_map_gives_zeros_not_nan(tiny_cnn):
    # zero images through zero-bias convolutions: every feature map is 0
    out = ln.explain.gradcam(tiny_cnn, np.zeros((3, 28, 28, 1), np.float32))
    assert np.isfinite(out).all() and (out == 0).all()


def _nested_copy(base):
    backbone = tf.keras.Model(base.inputs, base.get_layer("pool_0").output, name="backbone")
    hidden = tf.keras.layers.Dense(128, activation="relu", name="head_hidden")
    logits = tf.keras.layers.Dense(10, name="head_logits")
    outer = tf.keras.Sequential([tf.keras.Input((28, 28, 1)), backbone, tf.keras.layers.Flatten(), hidden, logits],
                                name="nested")
    hidden.set_weights(base.get_layer("hidden").get_weights())
    logits.set_weights(base.get_layer("logits").get_weights())
    return outer


def test_gradcam_finds_last_conv_inside_nested_model(seed_cnn, tiny):
    from tf_explain.core.grad_cam import GradCAM

    outer = _nested_copy(seed_cnn)
    x = tiny.x_test[:8]
    np.testing.assert_allclose(outer(x).numpy(), seed_cnn(x).numpy(), atol=1e-5)
    assert _common.default_layer(outer) == "act_0_0"
    np.testing.assert_allclose(ln.explain.gradcam(outer, x), ln.explain.gradcam(seed_cnn, x), atol=1e-5)
    # tf-explain 0.3.1 picks the whole nested model as its "layer" and cannot reach inside it
    assert GradCAM.infer_grad_cam_target_layer(outer) == "backbone"
    with pytest.raises(ValueError):
        GradCAM.get_gradients_and_filters(outer, x, "act_0_0", 0, False)


def test_gradcam_nested_model_off_a_chain_raises(seed_cnn):
    backbone = tf.keras.Model(seed_cnn.inputs, seed_cnn.get_layer("pool_0").output, name="backbone2")
    inp = tf.keras.Input((28, 28, 1))
    a = tf.keras.layers.Flatten()(backbone(inp))
    b = tf.keras.layers.Flatten()(inp)
    out = tf.keras.layers.Dense(10)(tf.keras.layers.Concatenate()([a, b]))
    model = tf.keras.Model(inp, out)
    with pytest.raises(ValueError, match="not a simple chain"):
        ln.explain.gradcam(model, np.random.default_rng(0).random((2, 28, 28, 1), np.float32))


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


def test_gradcam_needs_a_convolution():
    mlp = ln.models.build_mlp()
    with pytest.raises(ValueError, match="no Conv2D"):
        ln.explain.gradcam(mlp, np.zeros((1, 28, 28, 1), np.float32))


def test_gradcam_peak_inside_patch_for_90_percent(patches):
    """Acceptance: on images whose class is where a bright patch is, the peak lies in the patch."""
    assert patches["accuracy"] > 0.9, "the patch CNN did not learn the task, so the check says nothing"
    assert patches["n_correct"] >= 100
    assert patches["hit_rate"]["gradcam"] >= 0.9
    assert patches["hit_rate"]["occlusion"] >= 0.9


# ---------------------------------------------------------------------------- other methods


def test_vanilla_gradients_equal_tf_explain(seed_cnn, tiny):
    from tf_explain.core.vanilla_gradients import VanillaGradients

    x = tiny.x_test[:8]
    ref = VanillaGradients.compute_gradients(tf.constant(x), seed_cnn, 4).numpy()[..., 0]
    np.testing.assert_allclose(attribution.vanilla_gradients(seed_cnn, x, 4), ref, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_complete_and_built_on_tf_explain_path(seed_cnn, tiny):
    from tf_explain.core.integrated_gradients import IntegratedGradients

    x = tiny.x_test[:4]
    t = seed_cnn.predict(x, verbose=0).argmax(1)
    ig = attribution.integrated_gradients(seed_cnn, x, t, steps=128)
    delta = (seed_cnn(x).numpy() - seed_cnn(np.zeros_like(x)).numpy())[np.arange(4), t]
    np.testing.assert_allclose(ig.reshape(4, -1).sum(axis=1), delta, rtol=0.03, atol=0.05)
    # tf-explain's version is the mean path gradient without the (x - baseline) factor
    ref = IntegratedGradients.get_integrated_gradients(IntegratedGradients.generate_interpolations(x[:1], 16),
                                                       seed_cnn, int(t[0]), 16).numpy()
    np.testing.assert_allclose(attribution.integrated_gradients(seed_cnn, x[:1], t[:1], steps=16),
                               (ref * x[:1])[..., 0], rtol=1e-4, atol=1e-6)


def test_smoothgrad_seeded_and_reduces_to_gradients_without_noise(seed_cnn, tiny):
    x = tiny.x_test[:4]
    a = attribution.smoothgrad(seed_cnn, x, 2, samples=8, seed=1)
    np.testing.assert_allclose(a, attribution.smoothgrad(seed_cnn, x, 2, samples=8, seed=1))
    assert not np.allclose(a, attribution.smoothgrad(seed_cnn, x, 2, samples=8, seed=2))
    np.testing.assert_allclose(attribution.smoothgrad(seed_cnn, x, 2, samples=3, noise=0.0),
                               attribution.vanilla_gradients(seed_cnn, x, 2), rtol=1e-5, atol=1e-7)


def test_occlusion_selects_class_from_all_classes(seed_cnn, tiny):
    x = tiny.x_test[:3]
    allc = attribution.occlusion_all_classes(seed_cnn, x, patch=7, stride=7)
    assert allc.shape == (3, 10, 28, 28)
    np.testing.assert_allclose(attribution.occlusion(seed_cnn, x, [1, 5, 9], patch=7, stride=7),
                               allc[np.arange(3), [1, 5, 9]], atol=1e-6)
    # drops of all classes' probabilities sum to zero for every pixel (probabilities sum to 1)
    np.testing.assert_allclose(allc.sum(axis=1), 0, atol=1e-5)
    with pytest.raises(ValueError, match="patch"):
        attribution.occlusion(seed_cnn, x, patch=0)


def test_activation_maps_and_heatmaps(seed_cnn, tiny):
    x = tiny.x_test[:2]
    acts = attribution.activation_maps(seed_cnn, x, "act_0_0")
    assert acts.shape == (2, 28, 28, 32) and (acts >= 0).all()
    hm = attribution.activation_heatmap(seed_cnn, x, "pool_0")
    assert hm.shape == (2, 28, 28) and hm.min() >= 0 and np.isclose(hm.max(), 1)
    maps = attribution.all_heatmaps(seed_cnn, x, methods=["gradcam", "vanilla_gradients"])
    assert set(maps) == {"gradcam", "vanilla_gradients"}
    with pytest.raises(ValueError, match="unknown method"):
        attribution.heatmaps(seed_cnn, x, "lime")


def test_to_heatmap_scaling():
    m = np.array([[[-2.0, 1.0], [0.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(attribution.to_heatmap(m, "abs")[0], [[1, 0.5], [0, 0.25]])
    np.testing.assert_allclose(attribution.to_heatmap(m, "positive")[0], [[0, 1], [0, 0.5]])
    np.testing.assert_allclose(attribution.to_heatmap(m, "signed")[0], [[0, 0.75], [0.5, 0.625]])
    assert (attribution.to_heatmap(m, "abs")[1] == 0).all()


# ------------------------------------------------------------------------------------- trust


def test_deletion_insertion_curves_and_auc_order(patches, assert_drawn):
    model, x, masks = patches["model"], patches["images"][:40], patches["masks"][:40]
    good = deletion = trust.deletion_insertion(model, x, masks.astype(float), steps=14)
    inverse = trust.deletion_insertion(model, x, 1.0 - masks, steps=14)
    p = ln.models.probabilities(model, x)[np.arange(40), good["targets"]]
    np.testing.assert_allclose(deletion["deletion"][:, 0], p, atol=1e-5)
    np.testing.assert_allclose(good["insertion"][:, -1], p, atol=1e-5)
    assert good["deletion_auc"].mean() < inverse["deletion_auc"].mean()
    assert good["insertion_auc"].mean() > inverse["insertion_auc"].mean()
    table, curves = trust.faithfulness(model, x, {"patch": masks.astype(float)}, steps=7)
    assert list(table.index) == ["patch", "random"]
    assert_drawn(plotting.faithfulness_curves(curves), min_axes=2)
    assert table.loc["patch", "deletion_auc"] < table.loc["random", "deletion_auc"]
    with pytest.raises(ValueError, match="heatmaps must be"):
        trust.deletion_insertion(model, x, masks[:3])


def test_rank_correlation():
    rng = np.random.default_rng(0)
    a = rng.random((3, 8, 8))
    np.testing.assert_allclose(trust.rank_correlation(a, a), 1)
    np.testing.assert_allclose(trust.rank_correlation(a, -a), -1)
    np.testing.assert_allclose(trust.rank_correlation(a, np.ones_like(a)), 0)


def test_model_randomization_cascade(seed_cnn, tiny, assert_drawn):
    copy = trust.randomized_copy(seed_cnn, 1, seed=0)
    for a, b in zip(seed_cnn.layers, copy.layers):
        same = all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
        assert same == (a.name != "logits"), a.name
    methods = {"gradcam": lambda m, x, t: ln.explain.gradcam(m, x, t)}
    table, maps = trust.model_randomization(seed_cnn, tiny.x_test[:16], methods)
    assert list(table["randomized"]) == ["up to logits", "up to hidden", "all layers"]
    assert set(maps) == {"trained", "up to logits", "up to hidden", "all layers"}
    assert_drawn(plotting.randomization(table, maps, image=tiny.x_test[0]), min_axes=2)
    final = table.set_index("randomized").loc["all layers", "spearman"]
    assert final < 0.8  # randomized weights must change Grad-CAM


# ------------------------------------------------------------------------- surrogate, influence


def test_region_features():
    assert len(surrogate.image_regions()) == 49 * 2 + 16 + 2 * 2 * 7
    regs = surrogate.image_regions(28, 28, cell=7, block=None, bands=None, cell_ink=False)
    assert len(regs) == 16 and regs[0].name == "mean[r0:7,c0:7]"
    x = np.zeros((2, 28, 28, 1), np.float32)
    x[1, :7, :7] = 1.0
    f = surrogate.region_features(x, regs)
    assert f.shape == (2, 16) and f[1, 0] == 1 and f[1, 1:].sum() == 0 and f[0].sum() == 0
    with pytest.raises(ValueError, match="divide"):
        surrogate.image_regions(28, 28, cell=5)


def test_surrogate_mimics_patch_cnn(patches, assert_drawn):
    x, y = patches["images"], patches["model"].predict(patches["images"], verbose=0).argmax(1)
    xt, _, _ = trust.patch_dataset(1000, distractor=0.6, seed=5)
    s = surrogate.image_surrogate(patches["model"], xt, x, class_names=list("ABCD"), y_test=y, max_depth=6,
                                  max_leaf_nodes=32)
    assert s.depth <= 6 and s.leaves <= 32
    assert s.fidelity >= 0.85, s.summary()
    assert s.importances(top=3)["feature"].str.startswith(("mean", "ink")).all()
    assert_drawn(plotting.surrogate_tree(s))
    assert_drawn(plotting.surrogate_regions(s, x[0]), min_axes=2)


def test_region_importance_points_to_the_patch_quadrant(patches):
    maps = patches["heatmaps"]["occlusion"]
    pred = patches["model"].predict(patches["images"], verbose=0).argmax(1)
    imp = influence.region_importance(maps, pred, 4, cell=7)
    np.testing.assert_allclose(np.nansum(imp, axis=(1, 2)), 1, atol=1e-6)
    quadrant = [imp[c].reshape(4, 4)[(c // 2) * 2:(c // 2) * 2 + 2, (c % 2) * 2:(c % 2) * 2 + 2].sum() for c in range(4)]
    assert min(quadrant) > 0.6, quadrant
    table = influence.region_table(imp, ["tl", "tr", "bl", "br"], cell=7, top=1)
    assert len(table) == 4 and (table["share %"] > table["uniform %"]).all()
    top_rows = [int(r.split("-")[0]) for r in table["rows"]]
    assert top_rows[0] < 14 and top_rows[1] < 14 and top_rows[2] >= 14 and top_rows[3] >= 14
    with pytest.raises(ValueError, match="non-negative"):
        influence.region_importance(-maps, pred, 4, cell=7)


def test_tabular_breast_cancer_attributions_and_tree(assert_drawn):
    tab = tabular.breast_cancer(seed=0)
    assert tab.dataset.x_train.shape[1] == 30 and len(tab.feature_names) == 30
    np.testing.assert_allclose(tab.dataset.x_train.mean(axis=0), 0, atol=1e-4)
    run = ln.training.train(lambda: tabular.build_tabular_mlp(30), tab.dataset,
                            TrainConfig(epochs=15, batch_size=32, **QUIET), name="tab")
    assert run.report["accuracy"] > 0.9
    x = tab.dataset.x_test
    pred = run.report["y_pred"]
    ig = attribution.integrated_gradients(run.model, x, pred, steps=64)
    assert ig.shape == x.shape
    delta = (run.model(x).numpy() - run.model(np.zeros_like(x)).numpy())[np.arange(len(x)), pred]
    np.testing.assert_allclose(ig.sum(axis=1), delta, rtol=0.05, atol=0.05)
    table = influence.feature_table(ig, pred, tab.feature_names, tab.dataset.class_names, top=None)
    assert len(table) == 30 and set(table.index) == set(tab.feature_names)
    assert list(table["mean |attr|"]) == sorted(table["mean |attr|"], reverse=True)
    perm = influence.permutation_importance(run.model, x, tab.dataset.y_test, tab.feature_names, repeats=2)
    assert len(perm) == 30 and perm["accuracy drop"].max() > 0
    s = surrogate.model_surrogate(run.model, tab.dataset.x_train, x, features_train=tab.raw_train,
                                  features_test=tab.raw_test, feature_names=tab.feature_names,
                                  class_names=tab.dataset.class_names, max_depth=3, max_leaf_nodes=None)
    assert s.fidelity > 0.85 and s.depth <= 3
    assert set(s.importances()["feature"]) <= set(tab.feature_names)
    assert_drawn(plotting.feature_bars(table.head(5)))
    with pytest.raises(ValueError, match="no image regions"):
        plotting.surrogate_regions(s)


def test_attribution_settings_give_each_method_its_options():
    from lepton_nb.explain.settings import AttributionConfig

    cfg = AttributionConfig(ig_steps=16, smoothgrad_samples=4, occlusion_patch=6)
    assert cfg.options("integrated_gradients") == {"steps": 16}
    assert cfg.options("smoothgrad") == {"samples": 4, "noise": 0.15}
    assert cfg.options("occlusion") == {"patch": 6, "stride": 2} and cfg.options("gradcam") == {}
    with pytest.raises(ValueError, match="ig_steps >= 2"):
        AttributionConfig(ig_steps=1)
