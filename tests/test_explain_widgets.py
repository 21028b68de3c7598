"""lepton_nb.explain.widgets (explorer logic and its ipywidgets front end, no browser) and
lepton_nb.explain.plotting (figures that draw)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import lepton_nb as ln
from lepton_nb.settings import TrainConfig
from lepton_nb.explain import plotting, widgets


@pytest.fixture(scope="module")
def cnn(tiny):
    run = ln.training.train(lambda: ln.models.build_seed_cnn(), tiny,
                            TrainConfig(epochs=1, verbose=0, tensorboard=False, early_stopping_patience=None))
    return run.model


FAST = dict(ig_steps=4, smoothgrad_samples=2, rise_masks=20, lime_samples=12, sobol_designs=2)


@pytest.fixture()
def logic(cnn, tiny):
    return widgets.ExplorerModel(cnn, tiny.x_test[:30], tiny.y_test[:30], tiny.class_names,
                                 attribution=ln.explain.settings.AttributionConfig(**FAST))


def test_widgets_module_imports_ipywidgets_lazily():
    import subprocess

    code = ("import sys, lepton_nb as ln; ln.explain.widgets; ln.explain.settings.AttributionConfig(); "
            "print('ipywidgets' in sys.modules, 'tensorflow' in sys.modules, 'tf_explain' in sys.modules, "
            "'xplique' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False", "False"]


def test_explorer_model_views_and_cache(logic):
    v = logic.view(3, "gradcam", "predicted", alpha=0.4)
    assert v["image"].shape == (28, 28, 3) and v["overlay"].dtype == np.uint8
    assert v["heatmap"].shape == (28, 28) and 0 <= v["heatmap"].min() and v["heatmap"].max() <= 1
    np.testing.assert_allclose(v["probs"].sum(), 1, atol=1e-5)
    assert v["target"] == v["pred"] == int(logic.probs[3].argmax())
    np.testing.assert_allclose(v["heatmap"], ln.explain.gradcam(logic.model, logic.x[3:4], v["target"])[0], atol=1e-5)
    calls = logic.stats["batched_calls"]
    # other targets of the same image come from the cache: all classes were computed at once
    assert logic.view(3, "gradcam", "true")["target"] == logic.labels[3]
    assert logic.view(3, "gradcam", "class", class_index=7)["target"] == 7
    assert logic.stats["batched_calls"] == calls and logic.stats["hits"] == 2


def test_explorer_model_every_method_and_layer(logic):
    assert set(logic.methods) == set(widgets.EXPLORER_METHODS) >= {"hirescam", "gradcampp", "rise", "lime", "sobol"}
    for method in logic.methods:
        maps = logic.class_maps(0, method)
        assert maps.shape == (10, 28, 28) and np.isfinite(maps).all(), method
    np.testing.assert_allclose(logic.class_maps(0, "hirescam")[3], ln.explain.cam.hirescam(logic.model, logic.x[:1], 3)[0],
                               atol=1e-5)
    assert logic.class_maps(0, "gradcam", "pool_0").shape == (10, 28, 28)
    assert not np.allclose(logic.class_maps(0, "gradcam", "pool_0"), logic.class_maps(0, "gradcam", "act_0_0"))
    with pytest.raises(ValueError, match="layer"):
        logic.class_maps(0, "gradcam", "logits")
    with pytest.raises(ValueError, match="method"):
        logic.class_maps(0, "deeplift")
    with pytest.raises(ValueError, match="class_index"):
        logic.view(0, "gradcam", "class", class_index=12)


def test_explorer_model_misclassified_and_prefetch(logic):
    wrong = logic.indices(only_misclassified=True)
    assert (logic.pred[wrong] != logic.labels[wrong]).all()
    assert len(logic.indices()) == 30
    calls = logic.stats["batched_calls"]
    assert logic.prefetch(range(5, 15), "vanilla_gradients") == 10
    assert logic.stats["batched_calls"] == calls + 1
    assert logic.prefetch(range(5, 15), "vanilla_gradients") == 0
    small = widgets.ExplorerModel(logic.model, logic.x[:4], logic.labels[:4], logic.class_names, cache_size=2)
    for i in range(4):
        small.class_maps(i, "gradcam")
    assert len(small._cache) == 2


def test_explorer_model_rejects_bad_input(cnn, tiny):
    with pytest.raises(ValueError, match="one label per image"):
        widgets.ExplorerModel(cnn, tiny.x_test[:5], tiny.y_test[:4], tiny.class_names)
    with pytest.raises(ValueError, match="class names"):
        widgets.ExplorerModel(cnn, tiny.x_test[:5], tiny.y_test[:5], tiny.class_names[:3])


def test_explorer_widget_updates_in_place_and_times_each_update(logic):
    ui = widgets.Explorer(logic)
    assert ui.timings[-1]["kind"] == "cold" and ui.timings[-1]["method"] == "gradcam"
    ui.alpha.value = 0.3
    assert ui.timings[-1]["kind"] == "cached" and ui.timings[-1]["ms"] > 0
    first = ui.overlay.value
    assert first[:4] == b"\x89PNG" and "image 0" in ui.caption.value
    ui.position.value = 2
    assert "image 2" in ui.caption.value and ui.overlay.value != first
    ui.alpha.value = 0.0  # overlay becomes the plain image
    assert ui.overlay.value == ui.image.value
    assert ui.class_index.disabled
    ui.target.value = "class"
    assert not ui.class_index.disabled
    ui.method.value = "vanilla_gradients"
    assert ui.layer.disabled and "vanilla_gradients" in ui.caption.value
    ui.misclassified.value = True
    wrong = logic.indices(True)
    assert len(wrong) > 0, "a one-epoch CNN makes errors on these images"
    assert ui.position.max == len(wrong) - 1
    assert ui.index == wrong[0] and f"image {wrong[0]}" in ui.caption.value


def test_png_bytes_scale():
    from PIL import Image
    import io

    data = widgets.png_bytes(np.zeros((28, 28, 3), np.uint8), scale=4)
    assert Image.open(io.BytesIO(data)).size == (112, 112)


# ------------------------------------------------------------------------------------ plotting


def test_overlay_rgb_alpha_extremes():
    img = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4, 1)
    hm = np.ones((4, 4))
    plain = plotting.overlay_rgb(img, hm, alpha=0.0)
    assert (plain[..., 0] == plain[..., 1]).all() and plain[-1, -1, 0] == 255
    full = plotting.overlay_rgb(img, hm, alpha=1.0)
    assert (full == full[0, 0]).all()  # one colour: the colormap's top
    with pytest.raises(ValueError, match="alpha"):
        plotting.overlay_rgb(img, hm, alpha=2)
    with pytest.raises(ValueError, match="same height"):
        plotting.overlay_rgb(img, np.ones((3, 3)))


def test_figures_draw(tiny, assert_drawn):
    import pandas as pd

    rng = np.random.default_rng(0)
    x = tiny.x_test[:20]
    hm = rng.random((20, 28, 28))
    faith = pd.DataFrame([{"fill": f, "method": m, "deletion": rng.random(), "deletion_se": 0.01,
                           "insertion": rng.random(), "insertion_se": 0.01, "faithful": m == "gradcam"}
                          for f in ("zero", "blur") for m in ("gradcam", "random", "input")])
    steps = ["independently trained", "top 1 (logits)", "all 2"]
    cascade = pd.DataFrame([{"method": m, "step": s, "spearman_abs": rng.random(), "spearman_abs_se": 0.02,
                             "spearman_signed": rng.random(), "spearman_signed_se": 0.02}
                            for m in ("gradcam", "input") for s in steps])
    maps = {s: {m: hm[:2] for m in ("gradcam", "input")} for s in ["trained", *steps]}
    ranking = {"IF": {"helpful": np.arange(3), "harmful": np.arange(3, 6)},
               "TracIn": {"helpful": np.arange(6, 9), "harmful": np.arange(9, 12)},
               "scores": {"IF": rng.random(20), "TracIn": rng.random(20)}}
    rows = [{"set": s, "predicted": rng.random(), "actual": rng.random()} for s in ("IF top-k", "random") for _ in range(3)]
    figs = [
        plotting.gradcam_per_class(x, hm, tiny.y_test[:20], tiny.class_names, y_pred=tiny.y_test[:20], per_class=2),
        plotting.methods_side_by_side(x[:3], {"gradcam": hm[:3], "occlusion": hm[:3]}),
        plotting.activation_grid(rng.random((28, 28, 12)), image=x[0], max_channels=8),
        plotting.region_importance(rng.random((10, 7, 7)), tiny.class_names),
        plotting.localization_examples(x[:4], {"gradcam": hm[:4], "input": x[:4, ..., 0]}, hm[:4] > 0.5, count=4),
        plotting.faithfulness(faith),
        plotting.randomization(cascade, maps, image=x[0]),
        plotting.training_influence(x[0], "right: Coat", ranking, x, tiny.y_test[:20], tiny.class_names),
        plotting.influence_validation(rows),
    ]
    for fig in figs:
        assert_drawn(fig)
    assert len(figs[1].axes) == 9  # 3 images x (image + 2 methods)
    assert len(figs[6].axes) == 1 + 1 * 4  # the curve, then one row of maps (the input control's are not drawn)
    with pytest.raises(ValueError, match="channels"):
        plotting.activation_grid(rng.random((28, 28)))
