"""Explanations: batched Grad-CAM against tf-explain's explain() one image at a time, the other
methods' throughput, and the explorer widget's update latency.

Writes reports/bench/explain.json with ``ratios.tfexplain_vs_batched`` (seconds per heatmap with
tf-explain's ``GradCAM.explain`` one image at a time / seconds per heatmap with
``ln.explain.gradcam`` on a batch) and ``results.widget_update_ms_median``.

    .venv/bin/python benchmarks/bench_explain.py [--full]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import timed, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="larger batches, more images and updates")
    args = parser.parse_args()

    import lepton_nb as ln
    from lepton_nb.settings import TrainConfig
    from lepton_nb.explain import attribution, widgets
    from lepton_nb.explain.settings import AttributionConfig

    batch = 1024 if args.full else 256
    single = 64 if args.full else 24
    updates = 40 if args.full else 15

    ds = ln.data.load("fashion-mnist")
    run = ln.training.train(lambda: ln.models.build_seed_cnn(), ds,
                            TrainConfig(epochs=3, verbose=0, tensorboard=False, early_stopping_patience=None),
                            name="seed_cnn", evaluate_test=False)
    model = run.model
    x = ds.x_test[:batch]
    pred = ln.training.predict_classes(model, x)
    layer = ln.explain._common.default_layer(model)

    # ---- Grad-CAM: batched vs one image at a time
    batched = timed(lambda: ln.explain.gradcam(model, x), repeats=5)

    from tf_explain.core.grad_cam import GradCAM

    explainer = GradCAM()

    def tfx_one_by_one():
        for i in range(single):
            explainer.explain((x[i:i + 1], None), model, class_index=int(pred[i]), layer_name=layer,
                              use_guided_grads=False)

    tfx = timed(tfx_one_by_one, repeats=3)
    ours_single = timed(lambda: [ln.explain.gradcam(model, x[i:i + 1]) for i in range(single)], repeats=3)
    per_batched = batched["median"] / batch
    per_tfx = tfx["median"] / single
    per_single = ours_single["median"] / single

    # ---- other methods, batched (heatmaps per second)
    cfg = AttributionConfig()
    n_methods = 64
    method_rates = {}
    for m in ("integrated_gradients", "smoothgrad", "vanilla_gradients", "occlusion"):
        t = timed(lambda m=m: attribution.heatmaps(model, x[:n_methods], m, **cfg.options(m)), repeats=2)
        method_rates[m] = {"seconds": t, "heatmaps_per_s": n_methods / t["median"]}

    # ---- explorer widget: image changes (cache misses) and target/alpha changes (hits)
    ui = widgets.explorer(model, ds.x_test[:200], ds.y_test[:200], ds.class_names, attribution=cfg)
    for m in ui.logic.methods:  # trace every compiled function once, as a user's first clicks would
        ui.method.value = m
    cold, warm, per_method = [], [], {}
    pos = 1
    for m in ui.logic.methods:
        ui.method.value = m
        ms = []
        for _ in range(updates):
            pos = pos % 199 + 1
            ui.position.value = pos
            ms.append(ui.last_update_ms)
            ui.target.value = "true"
            warm.append(ui.last_update_ms)
            ui.target.value = "predicted"
            warm.append(ui.last_update_ms)
            ui.alpha.value = 0.3 if ui.alpha.value != 0.3 else 0.6
            warm.append(ui.last_update_ms)
        cold += ms
        per_method[m] = {"cold_median_ms": statistics.median(ms), "cold_max_ms": max(ms)}
    all_updates = cold + warm

    results = {
        "gradcam_batched": {"seconds": batched, "images": batch, "heatmaps_per_s": 1 / per_batched},
        "gradcam_tf_explain_one_by_one": {"seconds": tfx, "images": single, "heatmaps_per_s": 1 / per_tfx},
        "gradcam_ours_one_by_one": {"seconds": ours_single, "images": single, "heatmaps_per_s": 1 / per_single},
        "methods_batched": method_rates,
        "widget_update_ms_median": statistics.median(all_updates),
        "widget_cold_update_ms_median": statistics.median(cold),
        "widget_cold_update_ms_max": max(cold),
        "widget_warm_update_ms_median": statistics.median(warm),
        "widget_per_method": per_method,
        "widget_updates": len(all_updates),
        "widget_cache": ui.logic.stats,
    }
    ratios = {
        "tfexplain_vs_batched": per_tfx / per_batched,
        "ours_single_vs_batched": per_single / per_batched,
        "tfexplain_vs_ours_single": per_tfx / per_single,
    }
    write("explain", config={"model": "seed_cnn (3 epochs)", "layer": layer, "batch": batch, "single": single,
                             "updates_per_method": updates, "attribution": vars(cfg), "full": args.full},
          results=results, ratios=ratios,
          summary=(f"Grad-CAM batched {1 / per_batched:,.0f} heatmaps/s vs tf-explain one by one {1 / per_tfx:,.1f}/s "
                   f"(x{ratios['tfexplain_vs_batched']:,.0f}); widget update median "
                   f"{results['widget_update_ms_median']:.1f} ms (cold {results['widget_cold_update_ms_median']:.1f} ms, "
                   f"max {results['widget_cold_update_ms_max']:.0f} ms)"))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
