"""Timing of training: wall time per epoch, the training phase apart from validation, CPU time and load.

A wall-clock time measured on a shared machine says as much about the other processes as about the
training; the process's CPU time and the load average beside it let a reader judge (and convert) a
loaded run.
"""

from __future__ import annotations

import os
import time

import tensorflow as tf

__all__ = ["EpochTimer", "cpu_seconds"]


def cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) this process has used so far."""
    t = os.times()
    return t.user + t.system


class EpochTimer(tf.keras.callbacks.Callback):
    """Times every epoch, and its training phase apart from validation.

    ``seconds``: wall time of each whole epoch (training and validation). ``train_seconds``: wall
    time of the training phase only (until validation starts). ``cpu_seconds``: CPU time (user +
    system, all threads) of this process in that training phase. ``loads``: the machine's 1-minute
    load average when the phase ended. On a busy machine the wall time grows with the load while
    the CPU time stays close to the work done, so the pair lets a loaded run be judged.
    """

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []
        self.train_seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.loads: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._c0 = cpu_seconds()
        self._phase_done = False

    def _end_train_phase(self):
        if not self._phase_done:
            self._phase_done = True
            self.train_seconds.append(time.perf_counter() - self._t0)
            self.cpu_seconds.append(cpu_seconds() - self._c0)
            self.loads.append(os.getloadavg()[0])

    def on_test_begin(self, logs=None):  # inside fit: the epoch's validation starts
        if hasattr(self, "_t0"):
            self._end_train_phase()

    def on_epoch_end(self, epoch, logs=None):
        self._end_train_phase()
        self.seconds.append(time.perf_counter() - self._t0)
