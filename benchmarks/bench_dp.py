"""DP-SGD speed: steady-state epoch time of non-private training, the fast path and the stock path.

One run, same model, same data, same batch, same fixed batches; the first epoch (tracing) is a
warm-up. Writes ``reports/bench/dp.json`` with ``ratios.fast_vs_nonprivate``,
``ratios.stock_vs_nonprivate``, ``ratios.stock_vs_fast`` (and ``fast_poisson_vs_nonprivate``: the
fast path fed by the Poisson pipeline) for the seed CNN and the DP CNN
(``dp_cnn_...``), all at batch 64.

DP-SGD trains with large batches (the noise on the mean gradient is sigma * C / B; notebook 03
trains at 128 and 1,024), where the fast path's per-step fixed costs (noise on every weight, the
second backward pass) weigh less: the same comparison without the stock path runs at batch 256
too (``..._b256``). The stock path is left out there: tensorflow-privacy takes the Jacobian of the
per-example losses through the whole batch, so its memory grows with the batch squared (about
16 GB for the DP CNN at batch 256 by ``ln.privacy.optimizers.stock_memory_bytes``).

Default: 1,920 images of the bundled sample at batch 64 and 3,072 at 256.
``--full``: the whole 6,000-image sample for the timings, then DP training on the full
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
from lepton_nb.settings import DP_CNN, CNNConfig


def speed(n: int, batch: int, epochs: dict[str, int], max_steps: dict[str, int], suffix: str = "") -> tuple[dict, dict]:
    """Epoch times of each path in ``epochs`` for the seed CNN and the DP CNN; their ratios."""
    from lepton_nb.privacy.speed import epoch_times, ratios

    ds = ln.data.stratified_subset(ln.data.load("fashion-mnist"), n, 10, seed=0)
    models = {"seed_cnn": CNNConfig(), "dp_cnn": DP_CNN}
    results, flat = {}, {}
    for name, mcfg in models.items():
        times = {}
        for path, k in epochs.items():
            print(f"   {name} {path}: {k} epochs of {n} images, batch {batch} ...", file=sys.stderr, flush=True)
            times.update(epoch_times(lambda c=mcfg: ln.models.build_cnn(c), ds.x_train, ds.y_train, batch_size=batch,
                                     paths=(path,), epochs=k, max_steps=max_steps))
        results[name] = times
        for key, value in ratios(times).items():
            flat[(key if name == "seed_cnn" else f"{name}_{key}") + suffix] = value
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="6,000 images, plus the full-data epsilon-3 run")
    args = parser.parse_args()
    k = 4 if args.full else 6
    plans = {  # batch -> (images, epochs per path, steps timed per epoch)
        64: (6000 if args.full else 1920, {"nonprivate": k, "fast": k, "fast_poisson": k, "stock": 2}, {"stock": 6}),
        256: (6000 if args.full else 3072, {"nonprivate": k, "fast": k, "fast_poisson": k}, {}),
    }
    results, ratios = {}, {}
    for batch, (n, epochs, max_steps) in plans.items():
        res, rat = speed(n, batch, epochs, max_steps, suffix="" if batch == 64 else f"_b{batch}")
        results[f"batch_{batch}"] = res
        ratios.update(rat)
    config = {"batches": {b: {"images": n, "epochs_per_path": e, "timed_steps_per_epoch": m or "all"}
                          for b, (n, e, m) in plans.items()},
              "warmup_epochs": 1, "models": {"seed_cnn": CNNConfig().label, "dp_cnn": DP_CNN.label},
              "l2_norm_clip": 1.0, "noise_multiplier": 1.0, "full": args.full}
    if args.full:
        results["full_fashion_mnist_eps3"] = full_accuracy()
    summary = (f"batch 64: seed CNN fast {ratios['fast_vs_nonprivate']:.2f}x, stock {ratios['stock_vs_nonprivate']:.1f}x "
               f"non-private, stock/fast {ratios['stock_vs_fast']:.1f}x; DP CNN fast "
               f"{ratios['dp_cnn_fast_vs_nonprivate']:.2f}x, stock {ratios['dp_cnn_stock_vs_nonprivate']:.1f}x. "
               f"Batch 256: seed CNN fast {ratios['fast_vs_nonprivate_b256']:.2f}x, DP CNN fast "
               f"{ratios['dp_cnn_fast_vs_nonprivate_b256']:.2f}x")
    if args.full:
        summary += f"; full FMNIST eps<=3 accuracy {results['full_fashion_mnist_eps3'].get('accuracy')} %"
    write("dp", config=config, results=results, ratios=ratios, summary=summary)


if __name__ == "__main__":
    main()
