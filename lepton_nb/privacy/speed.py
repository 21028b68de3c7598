"""Epoch time of non-private training and of the DP paths, same model, data and batch, one run.

Used by notebook 03 and ``benchmarks/bench_dp.py``. Every path trains the same freshly seeded
model on the same fixed batches (a shuffled epoch, ragged end dropped, so the stock optimizer's
microbatches divide every batch); the first epoch (tracing) is reported apart from the
steady-state epochs. ``fast_poisson`` is the fast path fed by the Poisson pipeline instead.
"""

from __future__ import annotations

import statistics
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

__all__ = ["PATHS", "epoch_times", "ratios"]

PATHS = ("nonprivate", "fast", "stock", "fast_poisson")


def epoch_times(model_fn: Callable[[], tf.keras.Model], x: np.ndarray, y: np.ndarray, *, batch_size: int = 64,
                paths: Sequence[str] = ("nonprivate", "fast", "stock"), epochs: int = 2, l2_norm_clip: float = 1.0,
                noise_multiplier: float = 1.0, learning_rate: float = 1e-3, seed: int = 0,
                max_steps: dict[str, int] | None = None) -> dict[str, dict]:
    """Wall time of each epoch for each path.

    Args:
        model_fn: returns a fresh functional logits model.
        x, y: training images (N, H, W, C) and labels (N,).
        paths: any of :data:`PATHS`.
        epochs: epochs per path; the first is the warm-up (tracing), the rest steady state.
        max_steps: ``{path: k}`` times only the first k steps of each epoch of that path (the
            stock path takes seconds per step) and scales the time to a full epoch; the result
            says so in ``timed_steps``.

    Returns:
        ``{path: {"warmup": s, "epochs": [s, ...], "median": s, "min": s, "max": s, "steps": k,
        "timed_steps": k', "images_per_s": r}}``, epoch times in seconds per full epoch.
    """
    from lepton_nb.privacy.optimizers import check_batches, check_stock_memory
    from lepton_nb.privacy.sampling import poisson_pipeline, shuffle_pipeline
    from lepton_nb.privacy.train import dp_trainer
    from lepton_nb.settings import TrainConfig
    from lepton_nb.training import FitPlan, Split, compile_model, fit, make_optimizer, set_seed

    if epochs < 2:
        raise ValueError(f"epochs={epochs}: need a warm-up epoch and at least one timed epoch")
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise ValueError(f"unknown paths {sorted(unknown)}: choose from {PATHS}")
    check_batches(len(x), batch_size, None)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, early_stopping_patience=None,
                      seed=seed, verbose=0, tensorboard=False)
    out = {}
    for path in paths:
        set_seed(seed)
        model = model_fn()
        if path == "fast_poisson":
            ds, steps = poisson_pipeline(x, y, batch_size, seed=seed)
        else:
            ds, steps = shuffle_pipeline(x, y, batch_size, seed=seed)
            ds = ds.repeat()
        if path == "nonprivate":
            trainer = compile_model(model, make_optimizer(cfg))
        else:
            if path == "stock":
                check_stock_memory(model, batch_size, batch_size)
            trainer = dp_trainer(model, "stock" if path == "stock" else "fast", l2_norm_clip=l2_norm_clip,
                                 noise_multiplier=noise_multiplier, batch_size=batch_size, cfg=cfg)
        timed = min(steps, (max_steps or {}).get(path, steps))
        result = fit(FitPlan(model, trainer, ds, steps_per_epoch=timed), Split(x, y, None, None), cfg, name=path)
        seconds = result.epoch_seconds
        steady = [t * steps / timed for t in seconds[1:]]
        med = statistics.median(steady)
        out[path] = {"warmup": seconds[0], "epochs": steady, "median": med, "min": min(steady),
                     "max": max(steady), "steps": steps, "timed_steps": timed, "images_per_s": steps * batch_size / med}
    return out


def ratios(times: dict[str, dict]) -> dict[str, float]:
    """``<a>_vs_<b>`` = median steady-state epoch time of a / of b, for the paths measured."""
    names = [("fast", "nonprivate"), ("stock", "nonprivate"), ("stock", "fast"), ("fast_poisson", "nonprivate")]
    return {f"{a}_vs_{b}": round(times[a]["median"] / times[b]["median"], 3)
            for a, b in names if a in times and b in times}
