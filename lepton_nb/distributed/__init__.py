"""Distributed training from a laptop to TPU pods, one module per concern.

- :mod:`~lepton_nb.distributed.strategies`: :func:`strategy` chooses a ``tf.distribute`` strategy
  (TPU, several GPUs, several machines, CPU replicas, one device) and says why;
- :mod:`~lepton_nb.distributed.precision`: the mixed-precision policy suited to the devices;
- :mod:`~lepton_nb.distributed.workers`: a multi-worker cluster of processes on one host.

Training under a strategy is :func:`lepton_nb.training.train` with ``strategy=`` and
``distribution=`` (:class:`lepton_nb.settings.DistributionOptions`). Importing this package
imports TensorFlow.
"""

from __future__ import annotations

from lepton_nb.distributed.precision import float32_logits, precision_policy, precision_scope
from lepton_nb.distributed.strategies import (
    KINDS,
    StrategyChoice,
    StrategyError,
    TPUBackend,
    choice_of,
    detect_hardware,
    quiet_tf_logging,
    split_cpu,
    strategy,
)
from lepton_nb.distributed.workers import WorkerResult, run_workers, tf_config

__all__ = ["KINDS", "StrategyChoice", "StrategyError", "TPUBackend", "WorkerResult", "choice_of", "detect_hardware",
           "float32_logits", "precision_policy", "precision_scope", "quiet_tf_logging", "run_workers", "split_cpu",
           "strategy", "tf_config"]
