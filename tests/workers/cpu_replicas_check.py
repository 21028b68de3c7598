"""Fresh-process check of ``strategy(cpu_replicas=2)``: replicas, and accuracy against one device.

Trains the seed CNN on a stratified 2,000 / 1,000 subset of the bundled sample for 3 epochs, once
on the default strategy and once mirrored over 2 logical CPUs with the same global batch, and
prints one JSON line: replicas, losses and test accuracies of both. Run by tests/test_distributed.py
in its own process because the CPU can only be split before TensorFlow's runtime starts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    import lepton_nb as ln
    from lepton_nb.settings import DataConfig, DistributionOptions, TrainConfig
    from lepton_nb.stories import nb02_distributed as story

    cpu2 = ln.distributed.strategy(cpu_replicas=2, verbose=False)  # first: before the runtime starts
    again = ln.distributed.strategy(cpu_replicas=2, verbose=False)  # a second call reuses the split
    ds = ln.data.stratified_subset(ln.data.load("fashion-mnist"), 2000, 1000, seed=0)
    cfg = TrainConfig(epochs=3, batch_size=64, early_stopping_patience=None, verbose=0, tensorboard=False)
    runs = story.compare(ln.models.build_seed_cnn, ds, cfg, {"one": None, "cpu2": cpu2},
                         data_cfg=DataConfig(validation_fraction=0.1))
    try:  # refused up front: XLA cannot run mirrored over logical CPUs in TF 2.14
        ln.training.train(ln.models.build_seed_cnn, ds, cfg, strategy=cpu2,
                          distribution=DistributionOptions(jit_compile=True))
        xla_error = ""
    except ValueError as err:
        xla_error = str(err)
    pair = story.comparison_strategies(cpu2, 2)
    print(json.dumps({
        "xla_error": xla_error,
        "comparison_replicas": {k: s.num_replicas_in_sync for k, s in pair.items()},
        "markdown": story.comparison_markdown(runs),
        "replicas": cpu2.num_replicas_in_sync, "replicas_again": again.num_replicas_in_sync,
        "kind": ln.distributed.choice_of(cpu2).kind,
        "devices": list(ln.distributed.choice_of(cpu2).devices),
        **{f"{k}_loss": r.history["loss"] for k, r in runs.items()},
        **{f"{k}_accuracy": r.report["accuracy"] for k, r in runs.items()},
        **{f"{k}_per_replica_batch": r.distribution["per_replica_batch"] for k, r in runs.items()},
    }))


if __name__ == "__main__":
    main()
