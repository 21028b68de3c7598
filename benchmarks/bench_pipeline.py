"""Images/s of the tf.data input pipeline alone and of a training epoch, seed CNN, bundled data.

The pipeline must not be the bottleneck: ``ratios.pipeline_vs_epoch`` (time of one pass of the
pipeline / time of one training epoch on the same batches) should be far below 1.

    python benchmarks/bench_pipeline.py [--full] [--repeats N]
"""

from __future__ import annotations

import argparse

from _common import timed, write

import lepton_nb as ln
from lepton_nb.settings import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full 60k set (needs the idx files)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    ds = ln.data.load("fashion-mnist", full=args.full)
    n = len(ds.y_train)
    cfg = TrainConfig(batch_size=args.batch_size, verbose=0, tensorboard=False)
    ln.training.set_seed(0)

    def make(augment=None):
        return ln.data.pipeline(ds.x_train, ds.y_train, batch_size=cfg.batch_size, augment=augment)

    def drain(pipe):
        for _ in pipe:
            pass

    plain, augmented = make(), make(ln.settings.Augmentation())
    t_pipe = timed(lambda: drain(plain), repeats=args.repeats)
    t_aug = timed(lambda: drain(augmented), repeats=args.repeats)

    model = ln.training.compile_model(ln.models.build_seed_cnn(), ln.training.make_optimizer(cfg))
    t_epoch = timed(lambda: model.fit(plain, epochs=1, verbose=0), repeats=args.repeats)

    ips = lambda t: round(n / t["median"], 1)  # noqa: E731
    results = {
        "pipeline_seconds": t_pipe, "pipeline_augmented_seconds": t_aug, "epoch_seconds": t_epoch,
        "pipeline_images_per_s": ips(t_pipe), "pipeline_augmented_images_per_s": ips(t_aug),
        "epoch_images_per_s": ips(t_epoch),
    }
    ratios = {
        "pipeline_vs_epoch": round(t_pipe["median"] / t_epoch["median"], 4),
        "pipeline_augmented_vs_epoch": round(t_aug["median"] / t_epoch["median"], 4),
    }
    write("pipeline", config={"data": ds.name, "images": n, "batch_size": cfg.batch_size, "model": "seed_cnn",
                              "repeats": args.repeats, "warmup": 1},
          results=results, ratios=ratios,
          summary=f"pipeline {results['pipeline_images_per_s']:,.0f} img/s (augmented "
                  f"{results['pipeline_augmented_images_per_s']:,.0f}), seed-CNN epoch "
                  f"{results['epoch_images_per_s']:,.0f} img/s; pipeline/epoch time {ratios['pipeline_vs_epoch']}")


if __name__ == "__main__":
    main()
