"""Per-epoch noise schedules (the seed's "adjust the noise as training progresses").

A schedule is a tuple of per-epoch noise multipliers. Decaying noise (more noise early, less when
the gradients get small) follows Yu et al. 2019, "Differentially Private Model Publishing for Deep
Learning". Each epoch is accounted with its own noise
(:func:`lepton_nb.privacy.accounting.epsilon_for_schedule`), so a schedule costs exactly what it
ran; :func:`scale_to_epsilon` scales a schedule's shape so that the whole run meets a target.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import tensorflow as tf

from lepton_nb.privacy.accounting import PrivacyError, Sampling

__all__ = ["NoiseScheduleCallback", "noise_schedule", "scale_to_epsilon"]


def noise_schedule(kind: Literal["constant", "linear", "exponential", "step"], start: float, end: float | None,
                   epochs: int, *, step_every: int = 5) -> tuple[float, ...]:
    """Per-epoch noise multipliers from ``start`` (first epoch) to ``end`` (last epoch).

    ``constant`` ignores ``end``; ``linear`` and ``exponential`` interpolate; ``step`` moves from
    start to end in equal jumps every ``step_every`` epochs.
    """
    if epochs < 1:
        raise PrivacyError(f"epochs={epochs}: a schedule needs at least one epoch")
    if not start > 0 or (end is not None and not end > 0):
        raise PrivacyError(f"noise schedule start={start}, end={end}: noise multipliers must be > 0")
    end = start if end is None or kind == "constant" else end
    e = np.arange(epochs) / max(epochs - 1, 1)
    if kind == "constant":
        vals = np.full(epochs, start)
    elif kind == "linear":
        vals = start + (end - start) * e
    elif kind == "exponential":
        vals = start * (end / start) ** e
    elif kind == "step":
        jumps = max(math.ceil(epochs / step_every) - 1, 1)
        vals = start + (end - start) * np.minimum(np.arange(epochs) // step_every, jumps) / jumps
    else:
        raise PrivacyError(f"noise schedule kind={kind!r}: choose constant, linear, exponential or step")
    return tuple(float(v) for v in vals)


def scale_to_epsilon(shape: Sequence[float], target_epsilon: float, num_examples: int, batch_size: int,
                     delta: float, sampling: Sampling = "poisson", *, tolerance: float = 1e-3) -> tuple[float, ...]:
    """``shape`` multiplied by the smallest factor whose composed epsilon is <= ``target_epsilon``."""
    shape = [float(s) for s in shape]
    if not shape or min(shape) <= 0:
        raise PrivacyError("a noise schedule needs positive noise multipliers")

    from lepton_nb.privacy.accounting import _epsilon_of_event, dp_event, smallest_meeting, validate

    validate(num_examples, batch_size, len(shape), min(shape), delta, sampling=sampling)

    def eps_of(f: float, acc, disc: float) -> float:
        if f == 0:
            return math.inf
        ev = dp_event(num_examples, batch_size, len(shape), [f * s for s in shape], sampling=sampling)
        return _epsilon_of_event(ev, delta, acc, disc, sampling=sampling)

    factor = smallest_meeting(eps_of, target_epsilon, tolerance=tolerance, max_value=1e3)
    if factor is None:
        raise PrivacyError(f"target_epsilon={target_epsilon} is out of reach for this schedule over "
                           f"{len(shape)} epochs: raise the target or shorten the schedule")
    return tuple(factor * s for s in shape)


class NoiseScheduleCallback(tf.keras.callbacks.Callback):
    """Sets ``model.noise_multiplier`` (a :class:`FastDPModel` variable) at the start of every epoch."""

    def __init__(self, schedule: Sequence[float]):
        super().__init__()
        self.schedule = tuple(float(s) for s in schedule)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= len(self.schedule):
            raise PrivacyError(f"epoch {epoch + 1} is beyond the {len(self.schedule)}-epoch noise schedule")
        self.model.noise_multiplier.assign(self.schedule[epoch])

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["noise_multiplier"] = self.schedule[epoch]
