"""Notebook 02, distributed training: its settings, the 1-vs-N-replica comparison, the resume
demonstration and the prose about them.

The core pieces are :func:`lepton_nb.distributed.strategy` (choosing a strategy and saying why)
and :func:`lepton_nb.training.train` with ``strategy=`` and ``distribution=``; this module
compares runs of them and tells what happened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import tensorflow as tf

from lepton_nb.distributed.strategies import Kind, choice_of, strategy
from lepton_nb.reports import Summary
from lepton_nb.settings import DataConfig, DistributionOptions, Mode, TrainConfig, by_mode

__all__ = ["DistributedConfig", "InterruptAtEpoch", "Interrupted", "ResumeDemo", "SECTION", "compare",
           "comparison_markdown", "comparison_strategies", "comparison_table", "curves_markdown", "get_config",
           "interrupt_and_resume", "quality_failures", "resume_markdown", "run_summary"]

SECTION = "02_distributed_training"


@dataclass(frozen=True)
class DistributedConfig:
    """Notebook 02: strategies, the 1-vs-N-replica comparison, resume and export.

    Attributes:
        kind: the strategy of the main run ("auto": TPU, GPUs, TF_CONFIG, else default).
        cpu_replicas: logical CPU devices for the comparison (split first thing in the process).
        distribution: per-replica batch, learning-rate scaling, mixed precision, XLA and steps per
            execution of the main run (:class:`lepton_nb.settings.DistributionOptions`).
        tpu_steps_per_execution: steps per execution on a TPU, where host round trips dominate.
        compare_epochs: epochs of each run of the comparison.
        resume_epochs: epochs of the resume demonstration; ``interrupt_at_epoch`` stops its first run.
        min_accuracy: quality floor of the main run (fraction), checked outside smoke mode.
        max_accuracy_gap: largest accuracy difference allowed between the compared runs.
    """

    mode: Mode = "default"
    data: DataConfig = field(default_factory=lambda: DataConfig(validation_fraction=0.1))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, batch_size=64, verbose=0,
                                                                   early_stopping_patience=None, tensorboard=False))
    kind: Kind = "auto"
    cpu_replicas: int = 2
    distribution: DistributionOptions = field(default_factory=lambda: DistributionOptions(
        per_replica_batch=64, lr_scaling="sqrt", mixed_precision=True))
    tpu_steps_per_execution: int = 50
    compare_epochs: int = 4
    resume_epochs: int = 4
    interrupt_at_epoch: int = 2
    min_accuracy: float = 0.85
    max_accuracy_gap: float = 0.02

    def distribution_for(self, strat: tf.distribute.Strategy) -> DistributionOptions:
        """``distribution``, with ``tpu_steps_per_execution`` steps per execution on a TPU."""
        if choice_of(strat).kind == "tpu":
            return replace(self.distribution, steps_per_execution=self.tpu_steps_per_execution)
        return self.distribution

    def __post_init__(self) -> None:
        from lepton_nb.settings import SettingsError

        if self.cpu_replicas < 1 or self.tpu_steps_per_execution < 1:
            raise SettingsError("DistributedConfig: cpu_replicas and tpu_steps_per_execution must be >= 1")
        if not 0 < self.interrupt_at_epoch < self.resume_epochs:
            raise SettingsError(f"DistributedConfig.interrupt_at_epoch={self.interrupt_at_epoch}: must lie strictly "
                                f"between 0 and resume_epochs={self.resume_epochs}")


def _smoke() -> DistributedConfig:
    return DistributedConfig(
        data=DataConfig(max_train=640, max_test=300, validation_fraction=0.1),
        train=TrainConfig(epochs=2, batch_size=64, early_stopping_patience=None, verbose=0, tensorboard=False),
        compare_epochs=2, resume_epochs=3, interrupt_at_epoch=1)


def _full() -> DistributedConfig:
    return DistributedConfig(
        data=DataConfig(full=True, validation_fraction=0.1),
        train=TrainConfig(epochs=15, batch_size=128, early_stopping_patience=None, verbose=0, tensorboard=False),
        distribution=DistributionOptions(per_replica_batch=128, lr_scaling="sqrt", mixed_precision=True),
        compare_epochs=5, resume_epochs=5, interrupt_at_epoch=3, min_accuracy=0.90)


def get_config(mode: Mode | None = None) -> DistributedConfig:
    """Settings of notebook 02 for ``mode`` (default: ``LEPTON_NB_SMOKE`` / ``LEPTON_NB_FULL``)."""
    return by_mode(mode, smoke=_smoke, default=DistributedConfig, full=_full)




def compare(build: Callable[[], tf.keras.Model], data, cfg: TrainConfig,
            strategies: dict[str, tf.distribute.Strategy | None], **train_kwargs) -> dict:
    """Train the same model under each strategy with the same global batch, seed and data.

    Args:
        build: a function returning a fresh logits model.
        data: the :class:`~lepton_nb.data.Dataset`.
        cfg: training settings; ``cfg.batch_size`` is the global batch of every run.
        strategies: ``{label: strategy}`` (``None``: the default strategy).
        train_kwargs: passed on to :func:`lepton_nb.training.train` (``data_cfg``, ``distribution``...).

    Returns:
        ``{label: TrainResult}`` in the given order.
    """
    from lepton_nb.training import train

    return {label: train(build, data, cfg, strategy=strat, name=label, **train_kwargs)
            for label, strat in strategies.items()}


def comparison_strategies(main: tf.distribute.Strategy, cpu_replicas: int = 2) -> dict:
    """The runs notebook 02 compares: 1 replica, ``cpu_replicas`` CPU replicas, and ``main`` when it
    is an accelerator or a cluster (TPU, GPUs, multi-worker). Call after ``strategy(cpu_replicas=N)``."""
    out = {"1 replica": strategy("cpu", 1, verbose=False),
           f"{cpu_replicas} CPU replicas": strategy("cpu", cpu_replicas, verbose=False)}
    kind = choice_of(main).kind
    if kind in ("tpu", "gpu", "multi_worker"):
        out[f"{kind} x{main.num_replicas_in_sync}"] = main
    return out


def run_summary(result) -> dict:
    """A ``TrainResult``'s report figures plus replicas, global batch, precision and images/s."""
    d = result.distribution
    return Summary({**result.summary(), "strategy": d["strategy"], "replicas": d["replicas"],
                    "global_batch": d["global_batch"], "precision": d["precision"],
                    "images_per_s": round(result.images_per_second(), 1)})


def comparison_markdown(results: dict, *, tolerance: float = 0.02) -> str:
    """One paragraph on :func:`compare`'s runs, every number taken from ``results``.

    ``tolerance``: the accuracy gap (fraction) up to which the runs are said to agree.
    """
    labels = list(results)
    first = results[labels[0]]
    base = first.images_per_second()
    parts = []
    for label in labels:
        r = results[label]
        ips = r.images_per_second()
        acc = f", test accuracy {100 * r.report['accuracy']:.1f} %" if r.report else ""
        parts.append(f"**{label}** trained at {ips:,.0f} images/s ({ips / base:.2f}x {labels[0]}){acc}")
    text = "; ".join(parts) + "."
    if len(labels) > 1 and first.report:
        gap = max(abs(results[k].report["accuracy"] - first.report["accuracy"]) for k in labels[1:])
        if gap <= tolerance:
            text += (f" Accuracies differ by at most {100 * gap:.1f} points: with the same global batch the replicas "
                     "compute the same averaged gradient, so the runs learn the same model up to float rounding.")
        else:
            text += (f" Accuracies differ by {100 * gap:.1f} points, more than the {100 * tolerance:.0f} points that "
                     "float rounding explains: look at the per-replica batch and the learning-rate rule.")
    text += (f" On {os.cpu_count()} CPU cores, logical CPU replicas share the same cores, so a speed-up is not "
             "expected there: they exercise the all-reduce code path that GPUs, TPUs and several machines use.")
    return text


def curves_markdown(results: dict) -> str:
    """How far apart the runs' training-loss curves are, from ``results`` (:func:`compare`)."""
    import numpy as np

    labels = list(results)
    losses = [np.asarray(results[k].history["loss"]) for k in labels]
    epochs = min(len(x) for x in losses)
    gap = max(float(np.max(np.abs(x[:epochs] - losses[0][:epochs]))) for x in losses[1:]) if len(losses) > 1 else 0.0
    return (f"Over {epochs} epochs the training losses of the runs differ by at most {gap:.4f} (final loss of "
            f"{labels[0]}: {losses[0][epochs - 1]:.4f}).")


def resume_markdown(demo: "ResumeDemo") -> str:
    """One paragraph on :func:`interrupt_and_resume`'s outcome, numbers from ``demo``."""
    s = demo.summary()
    same = "the same" if s["max_weight_diff"] == 0 else f"within {s['max_weight_diff']:.1e} of the"
    return (f"The first run was stopped after {s['completed_before_interruption']} completed epochs. Restarted "
            f"with the same backup folder, it resumed at epoch {s['resumed_at_epoch']} and ran "
            f"{s['epochs_after_resume']} more, {s['total_epochs']} in total like the uninterrupted run "
            f"({s['reference_epochs']} epochs), and ended with {same} weights "
            f"(final loss {s['final_loss_resumed']} vs {s['final_loss_reference']}).")


def comparison_table(results: dict) -> "Any":
    """A pandas table of :func:`compare`'s runs: replicas, batches, images/s, speed-up, accuracy."""
    import pandas as pd

    rows = []
    base = None
    for label, r in results.items():
        ips = r.images_per_second()
        base = base or ips
        d = r.distribution
        rows.append({"run": label, "strategy": d["strategy"], "replicas": d["replicas"],
                     "global batch": d["global_batch"], "per-replica batch": d["per_replica_batch"],
                     "precision": d["precision"], "images/s": round(ips, 1),
                     "vs first": round(ips / base, 2), "epochs": r.epochs_run,
                     "final loss": round(r.history["loss"][-1], 4),
                     "test accuracy %": round(100 * r.report["accuracy"], 2) if r.report else None})
    return pd.DataFrame(rows).set_index("run")


class Interrupted(RuntimeError):
    """Raised by :class:`InterruptAtEpoch` to stand in for a crash or preemption."""


class InterruptAtEpoch(tf.keras.callbacks.Callback):
    """Stops training by raising :class:`Interrupted` when epoch ``epoch`` (0-based) begins."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupted(f"interrupted at the start of epoch {epoch}")


@dataclass
class ResumeDemo:
    """What :func:`interrupt_and_resume` measured.

    Attributes:
        completed_before: epochs completed before the interruption.
        resumed: the run restarted from the backup (its history lists only the epochs it ran).
        reference: an uninterrupted run with the same seed and settings.
        max_weight_diff: largest absolute difference between the final weights of the two.
    """

    completed_before: int
    resumed: Any
    reference: Any
    max_weight_diff: float

    @property
    def total_epochs(self) -> int:
        return self.completed_before + self.resumed.epochs_run

    def summary(self) -> dict:
        return Summary({"completed_before_interruption": self.completed_before,
                        "resumed_at_epoch": self.resumed.distribution["resumed_at_epoch"],
                        "epochs_after_resume": self.resumed.epochs_run, "total_epochs": self.total_epochs,
                        "reference_epochs": self.reference.epochs_run,
                        "final_loss_resumed": round(self.resumed.history["loss"][-1], 5),
                        "final_loss_reference": round(self.reference.history["loss"][-1], 5),
                        "max_weight_diff": self.max_weight_diff})


def interrupt_and_resume(build: Callable[[], tf.keras.Model], data, cfg: TrainConfig, workdir: str | os.PathLike,
                         *, interrupt_at: int, strategy: tf.distribute.Strategy | None = None,
                         **train_kwargs) -> ResumeDemo:
    """Interrupt a run when epoch ``interrupt_at`` begins, restart it from its backup, and compare.

    The interruption is an exception raised inside ``fit`` (in-process, so notebooks can show it);
    the tests do the same with a real process killed by SIGKILL. The restarted run must resume at
    epoch ``interrupt_at`` and end with the weights of an uninterrupted run (exactly for models
    without dropout or augmentation, whose random draws a backup does not hold).
    """
    import numpy as np

    from lepton_nb.training import train

    if not 0 < interrupt_at < cfg.epochs:
        raise ValueError(f"interrupt_at={interrupt_at}: must lie strictly between 0 and cfg.epochs={cfg.epochs}")
    workdir = Path(workdir)
    backup, ref_backup = workdir / "backup", workdir / "reference_backup"
    for d in (backup, ref_backup):
        if d.exists():
            raise ValueError(f"{d} exists from an earlier run; use an empty workdir (e.g. tempfile.mkdtemp())")
    try:
        train(build, data, cfg, strategy=strategy, backup_dir=backup, callbacks=[InterruptAtEpoch(interrupt_at)],
              evaluate_test=False, **train_kwargs)
        raise RuntimeError("the interruption did not happen")  # pragma: no cover
    except Interrupted:
        pass
    resumed = train(build, data, cfg, strategy=strategy, backup_dir=backup, **train_kwargs)
    reference = train(build, data, cfg, strategy=strategy, backup_dir=ref_backup, **train_kwargs)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(resumed.model.get_weights(), reference.model.get_weights()))
    return ResumeDemo(interrupt_at, resumed, reference, diff)


def quality_failures(cfg: DistributedConfig, accuracy: dict[str, float], compared: list[str]) -> list[str]:
    """What fails notebook 02's quality floors outside smoke mode.

    Args:
        accuracy: run name -> test accuracy (fraction); "main" is the main run.
        compared: the names of the runs whose accuracies must agree within ``cfg.max_accuracy_gap``.
    """
    if cfg.mode == "smoke":
        return []
    failures = []
    if accuracy["main"] < cfg.min_accuracy:
        failures.append(f"main run reached {100 * accuracy['main']:.2f} % (< {100 * cfg.min_accuracy:.0f} %)")
    gap = max(abs(accuracy[k] - accuracy[compared[0]]) for k in compared)
    if gap > cfg.max_accuracy_gap:
        failures.append(f"the compared runs differ by {100 * gap:.2f} points (> {100 * cfg.max_accuracy_gap:.0f})")
    return failures
