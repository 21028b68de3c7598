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

__all__ = ["PATHS", "epoch_times", "interleaved_ratios", "ratios"]

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
    from lepton_nb.privacy.optimizers import check_batches
    from lepton_nb.training import FitPlan, Split, fit

    if epochs < 2:
        raise ValueError(f"epochs={epochs}: need a warm-up epoch and at least one timed epoch")
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise ValueError(f"unknown paths {sorted(unknown)}: choose from {PATHS}")
    check_batches(len(x), batch_size, None)
    cfg = _train_config(batch_size=batch_size, learning_rate=learning_rate, seed=seed, epochs=epochs)
    out = {}
    for path in paths:
        model, trainer, ds, steps = _trainer(path, model_fn, x, y, cfg, l2_norm_clip=l2_norm_clip,
                                             noise_multiplier=noise_multiplier)
        timed = min(steps, (max_steps or {}).get(path, steps))
        result = fit(FitPlan(model, trainer, ds, steps_per_epoch=timed), Split(x, y, None, None), cfg, name=path)
        seconds = result.epoch_seconds
        steady = [t * steps / timed for t in seconds[1:]]
        med = statistics.median(steady)
        out[path] = {"warmup": seconds[0], "epochs": steady, "median": med, "min": min(steady),
                     "max": max(steady), "steps": steps, "timed_steps": timed, "images_per_s": steps * batch_size / med}
    return out


def _train_config(*, batch_size: int, learning_rate: float, seed: int, epochs: int = 1):
    from lepton_nb.settings import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                       early_stopping_patience=None, seed=seed, verbose=0, tensorboard=False)


def _trainer(path: str, model_fn, x, y, cfg, *, l2_norm_clip: float, noise_multiplier: float):
    """``(model, compiled trainer, endless dataset, steps per epoch)`` of one path, on a freshly seeded model."""
    from lepton_nb.privacy.optimizers import check_stock_memory
    from lepton_nb.privacy.sampling import poisson_pipeline, shuffle_pipeline
    from lepton_nb.privacy.train import dp_trainer
    from lepton_nb.training import compile_model, make_optimizer, set_seed

    set_seed(cfg.seed)
    model = model_fn()
    if path == "fast_poisson":
        ds, steps = poisson_pipeline(x, y, cfg.batch_size, seed=cfg.seed)
    else:
        ds, steps = shuffle_pipeline(x, y, cfg.batch_size, seed=cfg.seed)
        ds = ds.repeat()
    if path == "nonprivate":
        return model, compile_model(model, make_optimizer(cfg)), ds, steps
    if path == "stock":
        check_stock_memory(model, cfg.batch_size, cfg.batch_size)
    trainer = dp_trainer(model, "stock" if path == "stock" else "fast", l2_norm_clip=l2_norm_clip,
                         noise_multiplier=noise_multiplier, batch_size=cfg.batch_size, cfg=cfg)
    return model, trainer, ds, steps


def interleaved_ratios(model_fn: Callable[[], tf.keras.Model], x: np.ndarray, y: np.ndarray, *, batch_size: int = 64,
                       paths: Sequence[str] = ("nonprivate", "fast"), repeats: int = 7, l2_norm_clip: float = 1.0,
                       noise_multiplier: float = 1.0, learning_rate: float = 1e-3, seed: int = 0) -> dict:
    """Epoch times of ``paths`` measured in alternation, and the ratios of each path to the first.

    Every path gets its own compiled trainer and warms up (one untimed epoch: tracing); then each
    repeat times one epoch of every path, the order reversed on every other repeat, so that the
    load of a shared machine falls on all paths alike. The ratio of a repeat is ``time(path) /
    time(paths[0])`` of the same repeat; min / median / max are over repeats.

    On a machine shared with other work the wall-time ratios spread widely; the ratios of the
    process CPU time of the same epochs (``cpu_ratios``: all threads of this process, which a
    busy machine inflates far less than wall time) are reported beside them.

    Returns:
        ``{"epochs": {path: [wall s, ...]}, "cpu": {path: [cpu s, ...]}, "median": {path: wall s},
        "ratios": {"<path>_vs_<paths[0]>": {"min", "median", "max", "all"}}, "cpu_ratios": {same},
        "steps": k, "load": [1-min load average before, after]}``.
    """
    import os

    from lepton_nb.timing import EpochTimer

    cfg = _train_config(batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    trainers = {}
    for path in paths:
        _, trainer, ds, steps = _trainer(path, model_fn, x, y, cfg, l2_norm_clip=l2_norm_clip,
                                         noise_multiplier=noise_multiplier)
        trainer.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)  # warm-up: tracing
        trainers[path] = (trainer, ds, steps)
    load = [os.getloadavg()[0]]
    times = {path: [] for path in paths}
    cpu = {path: [] for path in paths}
    for r in range(repeats):
        for path in (paths if r % 2 == 0 else list(reversed(paths))):
            trainer, ds, steps = trainers[path]
            timer = EpochTimer()  # times the epoch inside fit (not its set-up)
            trainer.fit(ds, steps_per_epoch=steps, epochs=1, callbacks=[timer], verbose=0)
            times[path].append(timer.seconds[0])
            cpu[path].append(timer.cpu_seconds[0])
    load.append(os.getloadavg()[0])

    def spread(series):
        base = paths[0]
        out = {}
        for path in paths[1:]:
            rs = [a / b for a, b in zip(series[path], series[base])]
            out[f"{path}_vs_{base}"] = {"min": round(min(rs), 3), "median": round(statistics.median(rs), 3),
                                        "max": round(max(rs), 3), "all": [round(v, 3) for v in rs]}
        return out

    return {"epochs": times, "cpu": cpu, "median": {p: statistics.median(t) for p, t in times.items()},
            "ratios": spread(times), "cpu_ratios": spread(cpu), "steps": trainers[paths[0]][2], "load": load}


def ratios(times: dict[str, dict]) -> dict[str, float]:
    """``<a>_vs_<b>`` = median steady-state epoch time of a / of b, for the paths measured."""
    names = [("fast", "nonprivate"), ("stock", "nonprivate"), ("stock", "fast"), ("fast_poisson", "nonprivate")]
    return {f"{a}_vs_{b}": round(times[a]["median"] / times[b]["median"], 3)
            for a, b in names if a in times and b in times}
