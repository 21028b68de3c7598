"""A small training process launched by the multi-worker, kill-and-resume tests and the benchmark.

Trains a small CNN on a stratified subset of the bundled sample with ``lepton_nb.training.train``
under ``lepton_nb.distributed.strategy(kind, cpu_replicas)`` (``TF_CONFIG`` set by
``run_workers`` makes it a ``MultiWorkerMirroredStrategy`` worker), then writes
``<out>/result-<worker>.json`` (history, epoch times, strategy) and ``<out>/weights-<worker>.npz``.
With ``--progress`` it appends one line per finished epoch to ``<out>/progress-<worker>.txt``
(after the epoch's backup is written), and ``--sleep-after-epoch`` leaves a window to kill it.

Usage: python tests/workers/train_worker.py --out DIR [--epochs 3 --n-train 600 --batch 60 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--kind", default="auto")
    p.add_argument("--cpu-replicas", type=int, default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--batch", type=int, default=60, help="global batch")
    p.add_argument("--model", choices=("tiny", "seed"), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backup-dir", default=None)
    p.add_argument("--sleep-after-epoch", type=float, default=0.0)
    p.add_argument("--mixed-precision", default=None, help="policy name, e.g. mixed_bfloat16")
    p.add_argument("--jit", action="store_true")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Train once; returns the result dict also written to ``--out`` (weights as arrays)."""
    import numpy as np
    import tensorflow as tf

    import lepton_nb as ln
    from lepton_nb.settings import DataConfig, DistributionOptions, TrainConfig

    worker = os.environ.get("LEPTON_NB_WORKER", "0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    strat = ln.distributed.strategy(args.kind, args.cpu_replicas, verbose=False)
    ds = ln.data.stratified_subset(ln.data.load("fashion-mnist"), args.n_train, 200, seed=args.seed)

    class Progress(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with open(out / f"progress-{worker}.txt", "a") as f:
                f.write(f"{epoch}\n")
            time.sleep(args.sleep_after_epoch)

    if args.model == "tiny":
        build = lambda: ln.models.build_cnn(filters=8, dense_units=32, name="tiny_cnn")  # noqa: E731
    else:
        build = ln.models.build_seed_cnn
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, early_stopping_patience=None, verbose=0,
                      tensorboard=False, seed=args.seed)
    r = ln.training.train(build, ds, cfg, data_cfg=DataConfig(validation_fraction=0.0), strategy=strat,
                          evaluate_test=False, backup_dir=args.backup_dir, callbacks=[Progress()],
                          distribution=DistributionOptions(mixed_precision=args.mixed_precision or False,
                                                           jit_compile=args.jit))
    weights = [w for w in r.model.get_weights()]
    result = {"worker": int(worker), "history": r.history, "epoch_seconds": r.epoch_seconds,
              "epochs_run": r.epochs_run, "images_per_second": r.images_per_second(),
              "train_examples": r.train_examples, "distribution": r.distribution, "pid": os.getpid()}
    np.savez(out / f"weights-{worker}.npz", *weights)
    (out / f"result-{worker}.json").write_text(json.dumps(result))
    return {**result, "weights": weights}


if __name__ == "__main__":
    run(parse())
