"""DP-SGD speed: epoch time of the fast path (and the stock path) against non-private training.

Same model, same data, same batch, same Keras ``fit``; each path trains its own freshly seeded
copy. The fast path and non-private training (and the fast path fed by Poisson batches,
``fast_poisson``) run in alternating epochs after one warm-up epoch each
(:func:`lepton_nb.privacy.speed.interleaved_ratios`), so the load of a shared machine falls on
both sides; each repeat gives a ratio, and the figures are min / median / max over repeats, in
wall time and in process CPU time (all threads; far less sensitive to other processes). Writes
``reports/bench/dp.json``: ``ratios.fast_vs_nonprivate`` (the DP CNN: GroupNorm, tanh),
``seed_cnn_...`` (the seed CNN), ``scatter_linear_...`` (the ScatterNet + linear DP recipe, on its
cached features) and ``dp_cnn_no_norm_...`` (tanh, notebook 03's end-to-end full-mode model),
batch 64 unsuffixed and batch 256 as ``..._b256``, medians (min / max in ``results``);
``stock_vs_nonprivate`` and ``stock_vs_fast`` at batch 64 from a few timed steps of
tensorflow-privacy's stock path (its memory grows with the batch squared: 18.5 GB at 256,
OOM-killed here, so not at 256).

The non-private side of the DP CNN and of the ScatterNet recipe runs Keras' GroupNormalization,
which is slower than the closed form the fast path uses (with its gradient for the CNN, forward
only for the recipe's weightless GroupNorm), so their ratios can fall below 1: they compare what a
user runs on each side, not the cost of privacy alone.

Default (sized for about 3 minutes on 2 cores): the DP CNN, the seed CNN and the ScatterNet recipe, 1,280 images of the
bundled sample at batch 64 and 2,048 at 256, 3 repeats, 4 timed stock steps. ``config.noise_sampler`` says
which sampler drew the fast path's noise (:mod:`lepton_nb.privacy.native_noise`'s kernel, or
TensorFlow's ops when it could not be built). ``--full``: the three
models, the whole 6,000-image sample, 9 repeats, then DP training on the full
Fashion-MNIST (60k/10k) at epsilon <= 3, delta = 1e-5, Poisson sampling, with notebook 03's
full-mode settings, recording test accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from _common import write

import lepton_nb as ln
from lepton_nb.privacy import native_noise
from lepton_nb.privacy.settings import ScatterDPRecipe
from lepton_nb.settings import DP_CNN, DP_CNN_NO_NORM, CNNConfig


MODELS = {"dp_cnn": DP_CNN, "seed_cnn": CNNConfig(), "scatter_linear": ScatterDPRecipe(),
          "dp_cnn_no_norm": DP_CNN_NO_NORM}
DEFAULT_MODELS = ("dp_cnn", "seed_cnn", "scatter_linear")


def label(name: str) -> str:
    """What model ``name`` of :data:`MODELS` is."""
    m = MODELS[name]
    if isinstance(m, ScatterDPRecipe):
        return f"scatternet-J{m.scattering.J}-L{m.scattering.L} + groupnorm({m.groups}) + linear"
    return m.label


def model_and_data(name: str, ds: ln.data.Dataset):
    """``(model_fn, x, y)`` of model ``name`` on ``ds``'s training split (ScatterNet features for the recipe)."""
    m = MODELS[name]
    if isinstance(m, ScatterDPRecipe):
        from lepton_nb.privacy.scatter import recipe_features, recipe_model_fn

        feats = recipe_features(ds, m, progress=False)
        return recipe_model_fn(feats, m), feats.x_train, feats.y_train
    return (lambda: ln.models.build_cnn(m)), ds.x_train, ds.y_train


def speed(n: int, batch: int, repeats: int, stock_steps: int | None, suffix: str = "",
          models: tuple[str, ...] = tuple(MODELS), paths: tuple[str, ...] = ("nonprivate", "fast", "fast_poisson"),
          ) -> tuple[dict, dict]:
    """Interleaved epochs of non-private, fast and fast-Poisson training for each model in
    :data:`MODELS` (and the stock path's epoch time from ``stock_steps`` steps, if given)."""
    from lepton_nb.privacy.speed import epoch_times, interleaved_ratios

    ds = ln.data.stratified_subset(ln.data.load("fashion-mnist"), n, 10, seed=0)
    results, flat = {}, {}
    for name in models:
        prefix = "" if name == "dp_cnn" else f"{name}_"
        build, x, y = model_and_data(name, ds)
        print(f"   {name}: {repeats} interleaved epochs of {n} images per path, batch {batch} ...", file=sys.stderr,
              flush=True)
        r = interleaved_ratios(build, x, y, batch_size=batch, repeats=repeats, paths=paths)
        results[name] = r
        for key, spread in r["ratios"].items():
            flat[f"{prefix}{key}{suffix}"] = spread["median"]
        if stock_steps:
            print(f"   {name}: stock path, {stock_steps} timed steps ...", file=sys.stderr, flush=True)
            stock = epoch_times(build, x, y, batch_size=batch, paths=("stock",), epochs=2,
                                max_steps={"stock": stock_steps})["stock"]
            results[name]["stock"] = stock
            flat[f"{prefix}stock_vs_nonprivate{suffix}"] = round(stock["median"] / r["median"]["nonprivate"], 3)
            flat[f"{prefix}stock_vs_fast{suffix}"] = round(stock["median"] / r["median"]["fast"], 3)
    return results, flat


def full_accuracy(target_epsilon: float = 3.0, delta: float = 1e-5) -> dict:
    """DP training on the full Fashion-MNIST at epsilon <= target (Poisson sampling), with the
    model and settings of notebook 03's full mode (``nb03_privacy.get_config("full")``)."""
    from lepton_nb.stories import nb03_privacy

    nb = nb03_privacy.get_config("full")
    ds = ln.data.from_config(nb.data)
    dp = replace(nb.dp, noise_multiplier=None, target_epsilon=target_epsilon, delta=delta)
    t0 = time.perf_counter()
    r = ln.privacy.train_dp(lambda: ln.models.build_cnn(nb.model), ds, dp, replace(nb.train, tensorboard=False),
                            data_cfg=nb.data)
    return {"model": nb.model.label, "train": {"epochs": nb.train.epochs, "batch_size": nb.train.batch_size,
                                               "optimizer": nb.train.optimizer, "learning_rate": nb.train.learning_rate},
            "dp": {"l2_norm_clip": dp.l2_norm_clip, "delta": delta, "sampling": dp.sampling,
                   "target_epsilon": target_epsilon},
            **r.summary(), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="6,000 images, plus the full-data epsilon-3 run")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock path's few timed steps")
    parser.add_argument("--images", type=int, help="images per epoch at every batch size (default 1,280 / 2,048)")
    parser.add_argument("--repeats", type=int, help="interleaved epochs per path (default 3, --full 9)")
    parser.add_argument("--models", default=None, help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--paths", default="nonprivate,fast,fast_poisson", help="paths, the first the reference")
    args = parser.parse_args()
    repeats = args.repeats or (9 if args.full else 3)
    stock = None if args.no_stock else (6 if args.full else 4)
    plans = {64: (args.images or (6000 if args.full else 1280), stock),  # batch -> (images, stock steps)
             256: (args.images or (6000 if args.full else 2048), None)}
    models = tuple(args.models.split(",")) if args.models else (tuple(MODELS) if args.full else DEFAULT_MODELS)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models {','.join(unknown)}: unknown; choose from {', '.join(MODELS)}")
    paths = tuple(args.paths.split(","))
    load = [os.getloadavg()]
    results, ratios = {}, {}
    for batch, (n, stock_steps) in plans.items():
        res, rat = speed(n, batch, repeats, stock_steps, suffix="" if batch == 64 else f"_b{batch}", models=models,
                         paths=paths)
        results[f"batch_{batch}"] = res
        ratios.update(rat)
    load.append(os.getloadavg())
    config = {"batches": {b: {"images": n, "stock_timed_steps": s or "not run"} for b, (n, s) in plans.items()},
              "repeats": repeats, "warmup_epochs": 1, "interleaved": True,
              "models": {k: label(k) for k in models}, "paths": paths,
              "l2_norm_clip": 1.0, "noise_multiplier": 1.0, "full": args.full,
              "noise_sampler": native_noise.status(),
              "load_average_1_5_15min": {"before": load[0], "after": load[1]}}
    if args.full:
        results["full_fashion_mnist_eps3"] = full_accuracy()

    def spread(batch, model, key="fast_vs_nonprivate", kind="ratios"):
        r = results[f"batch_{batch}"][model][kind][key]
        return f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"

    summary = "fast vs non-private, wall median (min-max): " + "; ".join(
        f"batch {b}: " + ", ".join(f"{m} {spread(b, m)}" for m in models) for b in plans)
    summary += " | CPU: " + "; ".join(
        f"batch {b}: " + ", ".join(f"{m} {spread(b, m, kind='cpu_ratios')}" for m in models) for b in plans)
    if "stock_vs_nonprivate" in ratios:
        summary += f" | stock (batch 64) {ratios['stock_vs_nonprivate']:.1f}x non-private (DP CNN)"
    summary += f" | load {load[0][0]:.1f} -> {load[1][0]:.1f}"
    if args.full:
        summary += f"; full FMNIST eps<=3 accuracy {results['full_fashion_mnist_eps3'].get('accuracy')} %"
    write("dp", config=config, results=results, ratios=ratios, summary=summary)


if __name__ == "__main__":
    main()
