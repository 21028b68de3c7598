"""Training throughput (images/s) of the seed CNN: 1 replica, 2 CPU replicas, 2 worker processes,
with and without XLA and bfloat16, and the input pipeline alone, all in one run.

Every training figure is steady state: one epoch of warm-up (tracing, XLA compilation), then
``repeats`` timed epochs, the in-process variants interleaved epoch by epoch so that load from
other processes hits them alike; images/s = training images / epoch seconds (median, min, max).
The worker processes are timed by the same script run as 1 process (``process1``) and as a
2-process cluster (``workers2``).
XLA mirrored over logical CPUs is not measured: TensorFlow 2.14 fails there ("Trying to access
resource ... located in device CPU:1 from device CPU:0"), and ``train`` refuses it up front.
``ratios.<a>_vs_<b>`` = epoch time of a / epoch time of b (below 1: a is faster), as in
benchmarks/_common.py. Mixed precision does not apply to CPUs (lepton_nb picks float32 there); it
is measured anyway as ``one_bf16`` because this CPU may have bfloat16 units (AMX/AVX512-BF16).

Usage: python benchmarks/bench_distributed.py [--full]   -> reports/bench/distributed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, timed, write

WORKER = REPO / "tests" / "workers" / "train_worker.py"


def _stats(seconds: list[float], images: int) -> dict:
    ips = [images / s for s in seconds]
    return {"epoch_seconds": seconds, "images_per_s": {"median": statistics.median(ips), "min": min(ips),
                                                      "max": max(ips)}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="full 60k Fashion-MNIST, more repeats")
    args = p.parse_args(argv)

    import lepton_nb as ln  # noqa: E402  (the CPU split below must precede any TensorFlow op)

    cpu2 = ln.distributed.strategy(cpu_replicas=2, verbose=False)
    from dataclasses import replace

    from lepton_nb.settings import DataConfig, DistributionOptions, TrainConfig

    repeats = 5 if args.full else 3
    batch = 128
    n_train = None if args.full else 6000
    ds = ln.data.load("fashion-mnist", full=args.full)
    images = len(ds.x_train)
    cfg = TrainConfig(epochs=1, batch_size=batch, early_stopping_patience=None, verbose=0,
                      tensorboard=False)
    no_val = DataConfig(validation_fraction=0.0)
    runs = {
        "one": dict(strategy=None),
        "cpu2": dict(strategy=cpu2),
        "one_xla": dict(strategy=None, distribution=DistributionOptions(jit_compile=True)),
        "one_bf16": dict(strategy=None, distribution=DistributionOptions(mixed_precision="mixed_bfloat16")),
    }
    results: dict = {}
    models, warmup = {}, {}
    for label, kwargs in runs.items():  # build, compile and trace each (one warm-up epoch)
        r = ln.training.train(ln.models.build_seed_cnn, ds, replace(cfg, epochs=1), data_cfg=no_val,
                              evaluate_test=False, name=label, **kwargs)
        models[label], warmup[label] = r, r.epoch_seconds[0]
    train_ds = ln.data.pipeline(ds.x_train, ds.y_train, batch_size=batch, shuffle=True, seed=0)
    seconds: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):  # interleaved, so that load from other processes hits every variant alike
        for label, r in models.items():
            t0 = time.perf_counter()
            r.model.fit(train_ds, epochs=1, verbose=0)
            seconds[label].append(time.perf_counter() - t0)
    for label, r in models.items():
        results[label] = {**_stats(seconds[label], images), "warmup_seconds": warmup[label],
                          **{k: r.distribution[k] for k in ("replicas", "global_batch", "precision", "jit_compile")}}
        print(f"  {label}: {results[label]['images_per_s']['median']:.0f} images/s", flush=True)

    # the input pipeline alone, same batch, one full epoch per call
    pipe = ln.data.pipeline(ds.x_train, ds.y_train, batch_size=batch, shuffle=True, seed=0)
    t = timed(lambda: [None for _ in pipe], repeats=repeats)
    results["pipeline_only"] = {**_stats(t["runs"], images)}
    print(f"  pipeline_only: {results['pipeline_only']['images_per_s']['median']:.0f} images/s", flush=True)

    # the same worker script as 1 process and as 2 processes on 127.0.0.1 (MultiWorkerMirroredStrategy),
    # same global batch; the first epoch of each is the warm-up
    for label, n_workers in (("process1", 1), ("workers2", 2)):
        with tempfile.TemporaryDirectory() as out:
            argv_w = [sys.executable, str(WORKER), "--out", out, "--model", "seed", "--epochs", str(1 + repeats),
                      "--n-train", str(n_train or images), "--batch", str(batch)]
            if n_workers == 1:
                argv_w += ["--kind", "default"]
            procs = ln.distributed.run_workers(argv_w, n_workers, timeout=1800 if args.full else 240, cwd=REPO,
                                               env={"TF_CPP_MIN_LOG_LEVEL": "3"})
            for w in procs:
                if w.returncode != 0:
                    raise SystemExit(f"{label} worker {w.index} failed:\n{w.stderr[-3000:]}")
            w0 = json.loads((Path(out) / "result-0.json").read_text())
        results[label] = {**_stats(w0["epoch_seconds"][1:], w0["train_examples"]),
                          "warmup_seconds": w0["epoch_seconds"][0], "replicas": w0["distribution"]["replicas"],
                          "global_batch": batch, "wall_seconds_per_process": [w.seconds for w in procs]}
        print(f"  {label}: {results[label]['images_per_s']['median']:.0f} images/s", flush=True)

    med = {k: statistics.median(v["epoch_seconds"]) for k, v in results.items()}
    ratios = {
        "cpu2_vs_1": med["cpu2"] / med["one"],
        "workers2_vs_1": med["workers2"] / med["one"],
        "workers2_vs_process1": med["workers2"] / med["process1"],
        "xla_vs_1": med["one_xla"] / med["one"],
        "bf16_vs_1": med["one_bf16"] / med["one"],
        "pipeline_vs_1": med["pipeline_only"] / med["one"],
    }
    ips = {k: v["images_per_s"]["median"] for k, v in results.items()}
    bottleneck = ("input pipeline" if ips["pipeline_only"] < 2 * ips["one"] else
                  "compute: the pipeline alone delivers {:.0f}x the images/s training consumes; the 2 replicas "
                  "share {} cores".format(ips["pipeline_only"] / ips["one"], os.cpu_count()))
    write("distributed", config={"model": "seed_cnn", "images": images, "global_batch": batch, "repeats": repeats,
                                 "full": args.full, "ratio": "epoch time of a / epoch time of b (< 1: a faster)"},
          results={**results, "bottleneck": bottleneck}, ratios=ratios,
          summary=", ".join(f"{k}={v:.2f}" for k, v in ratios.items()) + f"; bottleneck: {bottleneck.split(':')[0]}")


if __name__ == "__main__":
    main()
