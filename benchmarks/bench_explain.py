"""Explanations: Grad-CAM's computation against tf-explain's and Xplique's computation (rendering
apart), every method's throughput, and the explorer's update latency in the kernel and end to end
in the browser.

Writes reports/bench/explain.json with, among ``ratios``:

- ``tfexplain_vs_ours_gradcam``: seconds per map of tf-explain 0.3.1's Grad-CAM computation
  (``GradCAM.get_gradients_and_filters`` + ``generate_ponderated_output``, one call per target
  class, as its API takes one class per batch; no ``explain()``, so no image rendering) / ours
  (``cam.gradcam_raw``, every image its own class, one compiled function);
- ``tfexplain_one_by_one_vs_ours_gradcam``: the same, tf-explain called one image at a time;
- ``xplique_vs_ours_gradcam``: Xplique's ``GradCAM.explain`` (explainer built once) / ours.

and ``results.explorer``: kernel-side update times (cold = a heatmap is computed, cached = served
from the cache) per method, and ``results.explorer_browser``: the browser measurement of
tests/test_browser.py (control event to the new heatmap image loaded in Chromium), which this
script runs (``--browser run``, the default where Chromium is installed), reads from a previous
run (``--browser read``) or leaves out (``--browser skip``).

    .venv/bin/python benchmarks/bench_explain.py [--full] [--browser run|read|skip]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, timed, write


def _stats(ms: list[float]) -> dict:
    v = sorted(ms)
    return {"median": statistics.median(v), "p95": v[min(len(v) - 1, round(0.95 * (len(v) - 1)))], "n": len(v)}


def browser_latency(mode: str, out_dir: Path) -> dict | None:
    """The explorer's end-to-end latency from tests/test_browser.py (run, or read from ``out_dir``)."""
    path = out_dir / "explorer_browser.json"
    if mode == "run":
        if not Path("/usr/bin/chromium").exists():
            return {"skipped": "no /usr/bin/chromium (apt-get install chromium)"}
        env = {**os.environ, "LEPTON_NB_BROWSER_BENCH": "1", "LEPTON_NB_BROWSER_JSON": str(path),
               "LEPTON_NB_SMOKE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(REPO / "tests" / "test_browser.py"), "-k", "latency_only"],
                              cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the browser measurement failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        seconds = time.perf_counter() - t0
    elif mode == "read":
        if not path.exists():
            return {"skipped": f"{path} does not exist: run with --browser run (or tests/test_browser.py with "
                               "LEPTON_NB_BROWSER_JSON pointing there)"}
        seconds = None
    else:
        return None
    import json

    data = json.loads(path.read_text())
    data.pop("samples", None)
    data["measured_seconds"] = seconds
    data["file_modified"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(path.stat().st_mtime))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="more images and more updates")
    parser.add_argument("--browser", choices=("run", "read", "skip"), default="run",
                        help="the end-to-end latency in Chromium: measure it now, read the last measurement, or skip")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    import lepton_nb as ln
    from lepton_nb.explain import _common, attribution, cam, widgets
    from lepton_nb.explain import xplique as xq
    from lepton_nb.explain.settings import EXPLAINED_CNN, AttributionConfig
    from lepton_nb.settings import TrainConfig

    batch = 512 if args.full else 128
    single = 48 if args.full else 16
    per_method = 32 if args.full else 8
    updates = 12 if args.full else 5

    ds = ln.data.load("fashion-mnist")
    run = ln.training.train(lambda: ln.models.build_cnn(EXPLAINED_CNN), ds,
                            TrainConfig(epochs=2, verbose=0, tensorboard=False, early_stopping_patience=None),
                            name="explained_cnn", evaluate_test=False)
    model = run.model
    x = ds.x_test[:batch]
    pred = _common.predict_logits(model, x).argmax(1).astype(np.int32)
    layer = ln.explain.default_layer(model)

    # ---- Grad-CAM computation: ours (batched, per-image classes) vs tf-explain vs Xplique
    from tf_explain.core.grad_cam import GradCAM
    import xplique.attributions as xa

    def tfx_by_class():
        for c in np.unique(pred):
            sel = x[pred == c]
            feats, grads = GradCAM.get_gradients_and_filters(model, sel, layer, int(c), False)
            GradCAM.generate_ponderated_output(feats, grads)

    def tfx_one_by_one():
        for i in range(single):
            feats, grads = GradCAM.get_gradients_and_filters(model, x[i:i + 1], layer, int(pred[i]), False)
            GradCAM.generate_ponderated_output(feats, grads)

    xq_gradcam = xa.GradCAM(model, conv_layer=layer, batch_size=batch)
    ours = timed(lambda: cam.gradcam_raw(model, x, pred, layer), repeats=5)
    tfx = timed(tfx_by_class, repeats=3)
    tfx1 = timed(tfx_one_by_one, repeats=3)
    xqt = timed(lambda: xq_gradcam.explain(x, xq.one_hot(pred, 10)), repeats=3)
    per = {"ours": ours["median"] / batch, "tf_explain_by_class": tfx["median"] / batch,
           "tf_explain_one_by_one": tfx1["median"] / single, "xplique": xqt["median"] / batch}

    # ---- every method: maps per second (explainers built per call, as in a notebook cell)
    cfg = AttributionConfig()
    rates = {}
    for m in attribution.METHODS:
        n = per_method if m not in attribution.BLACK_BOX else max(2, per_method // 4)
        t = timed(lambda m=m, n=n: attribution.maps(model, x[:n], m, pred[:n], **cfg.options(m)), repeats=2)
        rates[m] = {"images": n, "seconds": t, "maps_per_s": n / t["median"]}

    # ---- explorer, kernel side: cold (new image) and cached (alpha) updates per method
    ui = widgets.explorer(model, ds.x_test[:200], ds.y_test[:200], ds.class_names, attribution=cfg)
    kernel, raw, pos = {}, {}, 0
    for m in ui.logic.methods:
        if m in ("lime", "kernelshap", "sobol", "rise") and not args.full:
            continue  # seconds per cold update (see methods_per_s); --full times them too
        ui.method.value = m
        cold, cached = [], []
        for _ in range(updates):
            pos = pos % 199 + 1
            ui.position.value = pos
            cold.append(ui.timings[-1]["ms"])
            ui.alpha.value = 0.3 if ui.alpha.value != 0.3 else 0.6
            cached.append(ui.timings[-1]["ms"])
        kernel[m], raw[m] = {"cold": _stats(cold), "cached": _stats(cached)}, {"cold": cold, "cached": cached}
    fast = [m for m in ("gradcam", "hirescam", "integrated_gradients", "vanilla_gradients") if m in kernel]
    browser = browser_latency(args.browser, Path(os.environ.get("LEPTON_NB_REPORTS", REPO / "reports")) / "bench")

    results = {
        "gradcam_seconds": {"ours_batched": ours, "tf_explain_by_class": tfx, "tf_explain_one_by_one": tfx1,
                            "xplique": xqt},
        "gradcam_maps_per_s": {k: 1 / v for k, v in per.items()},
        "methods_per_s": rates,
        "explorer": kernel,
        "explorer_kernel_ms": {kind: _stats([v for m in fast for v in raw[m][kind]]) for kind in ("cold", "cached")},
        "explorer_kernel_methods": fast,
        "explorer_browser": browser,
        "tf_version": tf.__version__,
    }
    ratios = {
        "tfexplain_vs_ours_gradcam": per["tf_explain_by_class"] / per["ours"],
        "tfexplain_one_by_one_vs_ours_gradcam": per["tf_explain_one_by_one"] / per["ours"],
        "xplique_vs_ours_gradcam": per["xplique"] / per["ours"],
    }
    line = (f"Grad-CAM computation: ours {1 / per['ours']:,.0f} maps/s, tf-explain by class x{ratios['tfexplain_vs_ours_gradcam']:.1f}"
            f" slower, one by one x{ratios['tfexplain_one_by_one_vs_ours_gradcam']:.0f}, Xplique x{ratios['xplique_vs_ours_gradcam']:.1f}; "
            f"explorer kernel median cold {results['explorer_kernel_ms']['cold']['median']:.0f} ms / cached "
            f"{results['explorer_kernel_ms']['cached']['median']:.0f} ms")
    if browser and "browser_ms" in browser:
        b = browser["browser_ms"]
        line += (f"; in the browser cold {b['cold']['median']:.0f} ms (p95 {b['cold']['p95']:.0f}), cached "
                 f"{b['cached']['median']:.0f} ms (p95 {b['cached']['p95']:.0f})")
    write("explain", config={"model": f"{EXPLAINED_CNN.label} (2 epochs)", "layer": layer, "batch": batch,
                             "single": single, "updates_per_method": updates, "attribution": vars(cfg),
                             "full": args.full, "browser": args.browser},
          results=results, ratios=ratios, summary=line)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
