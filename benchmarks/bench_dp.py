"""DP-SGD speed: steady-state epoch time of non-private training, the fast path and the stock path.

One run, same model, same data, same batch, same fixed batches; the first epoch (tracing) is a
warm-up. Writes ``reports/bench/dp.json`` with ``ratios.fast_vs_nonprivate``,
``ratios.stock_vs_nonprivate``, ``ratios.stock_vs_fast`` (and ``fast_poisson_vs_nonprivate``: the
fast path fed by the Poisson pipeline) for the seed CNN (STACK.md's reference) and the DP CNN.

Default (a few minutes here): 12 batches of the bundled sample per epoch, batch 256.
DP-SGD trains with large batches (the noise on the mean gradient is sigma * C / B: notebook 03
uses 128 to 1,024, Papernot et al. 2021 and De et al. 2022 2,048 to 4,096), so 256 is the
default; ``--batch 64`` measures the small-batch regime, where the per-step fixed costs (noise
on every weight, the second backward pass) weigh most (seed CNN: 2.55x there in one quiet run).
``--full``: 24 batches per epoch for the timings, then DP training on the full Fashion-MNIST
(60k/10k) at epsilon <= 3, delta = 1e-5, Poisson sampling, recording test accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import write

import lepton_nb as ln
from lepton_nb.config import CNNConfig, replace


def speed(n: int, batch: int, epochs: dict[str, int], max_steps: dict[str, int]) -> tuple[dict, dict]:
    from lepton_nb.privacy.speed import epoch_times, ratios

    ds = ln.data.stratified_subset(ln.data.load("fashion-mnist"), n, 10, seed=0)
    models = {"seed_cnn": CNNConfig(), "dp_cnn": ln.privacy.DP_CNN}
    results, flat = {}, {}
    for name, mcfg in models.items():
        times = {}
        for path, k in epochs.items():
            print(f"   {name} {path}: {k} epochs of {n} images ...", file=sys.stderr, flush=True)
            times.update(epoch_times(lambda c=mcfg: ln.models.build_cnn(c), ds.x_train, ds.y_train, batch_size=batch,
                                     paths=(path,), epochs=k, max_steps=max_steps))
        results[name] = times
        for key, value in ratios(times).items():
            flat[f"{key}" if name == "seed_cnn" else f"{name}_{key}"] = value
    return results, flat


def full_accuracy(target_epsilon: float = 3.0, delta: float = 1e-5) -> dict:
    """DP training on the full Fashion-MNIST at epsilon <= target (Poisson sampling), with the
    model and settings of notebook 03's full mode (``ln.privacy.dp_notebook("full")``)."""
    nb = ln.privacy.dp_notebook("full")
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
    parser.add_argument("--full", action="store_true", help="24 batches per epoch, plus the full-data epsilon-3 run")
    parser.add_argument("--batch", type=int, default=256, help="batch size of every path (default 256)")
    args = parser.parse_args()
    if not 8 <= args.batch <= 2000:
        parser.error(f"--batch {args.batch}: use 8 to 2000 (the bundled sample has 6,000 training images)")
    batch = args.batch
    n = min(6000, batch * (24 if args.full else 12))
    epochs = {"nonprivate": 6, "fast": 6, "fast_poisson": 6, "stock": 2} if not args.full else \
        {"nonprivate": 4, "fast": 4, "fast_poisson": 4, "stock": 2}
    # the stock path takes seconds per step here: its epochs are timed on their first steps and scaled
    max_steps = {"stock": 6}
    results, ratios = speed(n, batch, epochs, max_steps)
    config = {"images": n, "batch_size": batch, "epochs_per_path": epochs, "warmup_epochs": 1,
              "timed_steps_per_epoch": max_steps or "all",
              "models": {"seed_cnn": CNNConfig().label, "dp_cnn": ln.privacy.DP_CNN.label},
              "l2_norm_clip": 1.0, "noise_multiplier": 1.0, "full": args.full}
    if args.full:
        results["full_fashion_mnist_eps3"] = full_accuracy()
    summary = (f"seed CNN fast {ratios['fast_vs_nonprivate']:.2f}x, stock {ratios['stock_vs_nonprivate']:.1f}x "
               f"non-private; stock/fast {ratios['stock_vs_fast']:.1f}x; DP CNN fast "
               f"{ratios['dp_cnn_fast_vs_nonprivate']:.2f}x, stock {ratios['dp_cnn_stock_vs_nonprivate']:.1f}x")
    if args.full:
        summary += f"; full FMNIST eps<=3 accuracy {results['full_fashion_mnist_eps3'].get('accuracy')} %"
    write("dp", config=config, results=results, ratios=ratios, summary=summary)


if __name__ == "__main__":
    main()
