"""Where lepton_nb and Xplique 1.5.2 (or scikit-learn) compute the same thing, these tests decide
which one is kept: equal results mean ours stays only for a reason shown here (a defect or a
missing feature of the library's version), and the library's metrics are checked against the
controls that expose their blind spots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import lepton_nb as ln
from lepton_nb.explain import _common, attribution, cam, faithfulness
from lepton_nb.explain import xplique as xq
from lepton_nb.settings import CNNConfig, TrainConfig

QUIET = dict(verbose=0, tensorboard=False, early_stopping_patience=None)
REPO = Path(__file__).resolve().parent.parent


def test_xplique_tests_package_does_not_shadow_ours(request):
    """The Xplique wheel installs a top-level ``tests`` package into site-packages. Ours has no
    ``__init__.py``: pytest imports our files by their own names with tests/ on sys.path, so every
    collected test and our conftest come from this repository, whatever ``import tests`` finds."""
    import importlib.util

    import conftest

    assert Path(conftest.__file__).resolve() == REPO / "tests" / "conftest.py"
    assert not (REPO / "tests" / "__init__.py").exists()
    spec = importlib.util.find_spec("tests")
    if spec is not None and spec.origin:  # Xplique's suite: never ours, never collected
        assert REPO / "tests" not in Path(spec.origin).resolve().parents
    assert all(Path(str(item.fspath)).resolve().is_relative_to(REPO / "tests") for item in request.session.items)


def test_gradcam_equals_xplique_at_the_same_layer_but_xplique_defaults_elsewhere(small_d2, small_batch):
    """Same feature-level maps at the same layer (keep tf-explain-based Grad-CAM, which also picks
    the paper's rectified layer, resizes without negative values and normalizes); Xplique's
    default layer is the Conv2D itself."""
    import xplique.attributions as xa

    x, t = small_batch
    layer = ln.explain.default_layer(small_d2)
    raw, _, _ = cam.gradcam_raw(small_d2, x, t, layer)
    e = xa.GradCAM(small_d2, conv_layer=layer)
    fm, gr = xa.GradCAM._gradient(e.model, tf.constant(x), tf.constant(xq.one_hot(t, 10)))
    theirs = xa.GradCAM._apply_weights(xa.GradCAM._compute_weights(gr, fm), fm).numpy()
    np.testing.assert_allclose(np.maximum(raw, 0), theirs, atol=1e-6)
    assert xa.GradCAM(small_d2).conv_layer.name == "conv_1_0" != layer


def test_ig_trapezoid_equals_xplique_and_ours_adds_the_delta(small_d2, small_batch):
    x, t = small_batch
    ours = attribution.integrated_gradients(small_d2, x, t, steps=32, rule="trapezoid")
    import xplique.attributions as xa

    theirs = np.asarray(xa.IntegratedGradients(small_d2, steps=32, reducer="sum").explain(x, xq.one_hot(t, 10)))
    np.testing.assert_allclose(ours, theirs.reshape(ours.shape), atol=1e-5)
    _, delta = attribution.integrated_gradients(small_d2, x, t, return_delta=True)
    assert delta.shape == (len(x),)


def test_occlusion_equals_xplique_divided_by_coverage(small_d2, small_batch):
    """Xplique sums the drops of the patches covering a pixel, ours averages them (border pixels,
    covered by fewer patches, are not down-weighted), and ours gives every class in one pass."""
    x, t = small_batch
    import xplique.attributions as xa

    ours = attribution.occlusion(small_d2, x[:4], t[:4], patch=4, stride=2)
    theirs = np.asarray(xa.Occlusion(small_d2, patch_size=4, patch_stride=2, occlusion_value=0.0,
                                     operator=xq.prob_operator).explain(x[:4], xq.one_hot(t[:4], 10)))
    cover = np.zeros((28, 28))
    for r in range(0, 25, 2):
        for c in range(0, 25, 2):
            cover[r:r + 4, c:c + 4] += 1
    np.testing.assert_allclose(ours, theirs.reshape(ours.shape) / cover, atol=1e-5)


def test_gradients_signed_where_xplique_saliency_is_absolute(small_d2, small_batch):
    import xplique.attributions as xa

    x, t = small_batch
    ours = attribution.vanilla_gradients(small_d2, x, t)
    theirs = np.asarray(xa.Saliency(small_d2).explain(x, xq.one_hot(t, 10))).reshape(ours.shape)
    np.testing.assert_allclose(np.abs(ours), theirs, atol=1e-6)
    assert (ours < 0).any()  # the sign the sanity check and the tabular case read


def test_xplique_smoothgrad_is_the_gradient_without_noise(small_d2, small_batch):
    """SmoothGrad is Xplique's (ours was the same estimator): with no noise it is the gradient."""
    x, t = small_batch
    sg = xq.explain("smoothgrad", small_d2, x, t, nb_samples=3, noise=0.0)
    np.testing.assert_allclose(sg, attribution.vanilla_gradients(small_d2, x, t), rtol=1e-4, atol=1e-6)
    noisy = xq.explain("smoothgrad", small_d2, x, t, nb_samples=8)
    np.testing.assert_allclose(noisy, xq.explain("smoothgrad", small_d2, x, t, nb_samples=8))  # reproducible
    assert not np.allclose(noisy, sg, atol=1e-6)


def test_deletion_engine_equals_xplique_on_a_tie_free_map(small_d2, small_batch):
    """Same mean AUCs; ours is kept for the per-image AUCs (standard errors) and random tie-breaking."""
    from xplique.metrics import Deletion, Insertion

    x, t = small_batch
    hm = attribution.integrated_gradients(small_d2, x, t, steps=8).astype(np.float64)
    hm = hm + 1e-9 * np.arange(784).reshape(28, 28)[None] / 784 * (np.abs(hm).max() + 1)
    ours = faithfulness.deletion_insertion(small_d2, x, hm, t, fill="zero", steps=28)  # 28 pixels per step
    oh = xq.one_hot(t, 10)
    for kind, cls in (("deletion", Deletion), ("insertion", Insertion)):
        theirs = cls(small_d2, x, oh, baseline_mode=0.0, steps=28, activation="softmax").evaluate(hm)
        assert abs(float(theirs) - ours[kind + "_auc"].mean()) < 1e-6
        assert ours[kind + "_auc"].shape == (len(x),)


def test_xplique_mufidelity_scores_a_random_positive_map_and_centring_fixes_it(small_d2, small_batch):
    """The defect behind centring: Xplique draws each cell into the subset independently, so the
    subset size varies and any positive map 'correlates' with the drop."""
    from xplique.metrics import MuFidelity

    x, t = small_batch
    m = MuFidelity(small_d2, x, xq.one_hot(t, 10), grid_size=7, nb_samples=64, baseline_mode=0.0)
    rnd = np.random.default_rng(0).random(x.shape[:3]).astype(np.float32)
    tf.random.set_seed(0)
    raw = m.evaluate(rnd)
    tf.random.set_seed(0)
    centred = m.evaluate(rnd - rnd.mean(axis=(1, 2), keepdims=True))
    assert raw > 0.1 and abs(centred) < 0.15
    with pytest.raises(tf.errors.InvalidArgumentError):  # why every map is cast to float32 first
        m.evaluate(rnd.astype(np.float64))


def test_xplique_model_randomization_scores_a_constant_map_as_perfect(small_d2, small_batch):
    """Why the randomization verdict is ours: Xplique's metric scores a constant map 0.0 (best)."""
    from xplique.metrics import ModelRandomizationMetric

    x, t = small_batch
    const = xq.Explainer(lambda m, xx, tt: np.ones(xx.shape[:3]), small_d2)
    assert ModelRandomizationMetric(small_d2, x[:6], xq.one_hot(t[:6], 10), seed=0).evaluate(const) == pytest.approx(0.0)
    from lepton_nb.explain import sanity

    assert sanity.summary(sanity.foreground_similarity(np.ones((6, 28, 28)), np.ones((6, 28, 28)), x[:6]))[
        "spearman_abs"] == 0  # ours: no ranking, no evidence


def test_gradcampp_runs_at_our_layer(small_d2, small_batch):
    x, t = small_batch
    m = xq.explain("gradcampp", small_d2, x[:4], t[:4])
    assert m.shape == (4, 28, 28) and np.isfinite(m).all()
    with pytest.raises(ValueError, match="unknown Xplique method"):
        xq.explainer("deeplift", small_d2)


def test_sklearn_permutation_importance_runs_on_the_keras_wrapper():
    from sklearn.inspection import permutation_importance

    from lepton_nb.explain import importance, tabular

    tab = tabular.breast_cancer(seed=0)
    run = ln.training.train(lambda: tabular.build_tabular_mlp(len(tab.feature_names)), tab.dataset,
                            TrainConfig(epochs=5, batch_size=32, **QUIET), name="bc")
    x, y = tab.dataset.x_test, tab.dataset.y_test
    clf = tabular.KerasClassifier(run.model)
    assert clf.score(x, y) == pytest.approx(run.report["accuracy"])
    r = permutation_importance(clf, x, y, n_repeats=2, random_state=0)
    df = importance.permutation_importance(run.model, x, y, tab.feature_names, repeats=2, seed=0)
    np.testing.assert_allclose(sorted(100 * r.importances_mean), sorted(df["accuracy drop"]))
    with pytest.raises(NotImplementedError, match="lepton_nb.training.train"):
        clf.fit(x, y)
