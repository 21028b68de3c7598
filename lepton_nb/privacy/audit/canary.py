"""One-run canary audit of DP-SGD (Steinke, Nasr & Jagielski 2023), through lepton_nb's own ``train_dp``.

The audit asks whether the epsilon a run claims can be true. It inserts m **Dirac gradient
canaries** (white-box: the auditor sees every privatized gradient, which the DP guarantee covers),
each included with probability 1/2, trains once, and turns its guesses of which were included
into a 95 % lower bound on epsilon (:mod:`~lepton_nb.privacy.audit.bound`). A lower bound above the
claimed epsilon proves the claim false; a correct run's bound stays below it.

- **Canary c** is an extra per-example gradient ``G e_j(c)``: all its mass on one coordinate
  ``j(c)`` of the model's largest trainable variable (the Dense kernel after Flatten here, whose
  coordinates get the smallest gradients from the real examples), distinct coordinates. At every
  step an included canary joins the batch by its own Poisson draw at the examples' rate
  ``q = B / N``, and is clipped by the product's rule ``C / max(C, |g|)`` with the run's C, so a
  correct run clips ``G = 100 C`` to C.
- **The run is the product's**: :func:`lepton_nb.privacy.train_dp` with its default private
  randomness (OS entropy), Poisson pipeline, :class:`~lepton_nb.privacy.fast_clipping.FastDPModel`
  (per-example clipping of the real examples, tensorflow-privacy's ``add_aggregate_noise``, the
  division by the expected batch B) and its accountant. The one addition is the optimizer
  (:func:`canary_optimizer`): it receives FastDPModel's privatized mean gradient, adds each sampled
  canary's clipped gradient divided by B, records the privatized values at the canary coordinates,
  and applies the result with the run's own optimizer; FastDPModel hands it the real examples'
  clipped sums before the noise (``observe_clipped_sums``), the white-box view. The Gaussian noise
  is added to the sum, so adding a canary before or after it gives the same number (tested: at
  noise 0 a canary run differs from the same ``train_dp`` run exactly by the clipped canaries).
- **Score** of a canary (:func:`score_lr`): the log-likelihood ratio "in" against "out" of the
  *claimed* mechanism (clip C, noise sigma C, rate q) on its coordinate's per-step values, after
  subtracting the real examples' clipped sum there, which the auditor records before the noise
  (:meth:`GradientCanaries.residual`). The subsampled Gaussian guarantee of each step holds whatever
  the other examples contribute, so knowing their sum leaves the bound valid; without it the real
  examples' gradients act as extra noise that hides even a run with a tenth of the noise at
  expected batch 1,024 on 57,000 examples (measured: bound 0.85 for a claim of 2.95). **Guesses**: "in"
  on the ``k = m / 4`` highest scores, no "out" guesses (an included canary that Poisson sampling
  never drew looks like an excluded one). The rule is fixed before any run (one test, no search).
- **Broken controls**, labelled ``BROKEN CONTROL`` wherever they appear, claim the epsilon of the
  correct settings: :data:`BROKEN_NOISE` trains with noise multiplier sigma / 10;
  :data:`BROKEN_CLIP` trains with clipping off (a clipping norm of :data:`NO_CLIP`, which no
  gradient here reaches) and the same noise std sigma C, so the canaries enter unclipped.

What it covers: the fast path with Poisson sampling (what notebook 03 trains): the noise, its
randomness, the sampling rate, the division by B and the accounting of the run. A Dirac canary is
not an input the model can see, so its clipping is the product's rule evaluated here with the run's
C; errors in the per-example norms of real examples are for the fast-clipping tests to catch. The
audit is a test that catches broken runs, not an estimate of epsilon: one-run bounds of correct
runs are loose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from lepton_nb.data import Dataset
from lepton_nb.privacy.audit.bound import AuditBound, bound_for
from lepton_nb.settings import DataConfig, TrainConfig

__all__ = ["BROKEN_CLIP", "BROKEN_NOISE", "CORRECT", "NO_CLIP", "RUNS", "CanaryRun", "GradientCanaries",
           "canary_audit", "canary_optimizer", "score_lr"]

CORRECT = "correct DP-SGD"
BROKEN_NOISE = "BROKEN CONTROL: noise / 10"
BROKEN_CLIP = "BROKEN CONTROL: no clipping"
RUNS = (CORRECT, BROKEN_NOISE, BROKEN_CLIP)
#: The clipping norm of the no-clipping control: far above any gradient norm of these models.
NO_CLIP = 1e6


class GradientCanaries:
    """m Dirac canaries on one variable, their membership, and the record of what the run released.

    Built before training from a model of the architecture (:meth:`draw`); :meth:`inject` runs inside
    the traced training step. Randomness: coordinates and membership from ``rng``, the per-step
    sampling from a TensorFlow generator seeded by the OS (both independent of the run's noise).
    """

    def __init__(self, shape: tuple[int, ...], index: int, coords: np.ndarray, member: np.ndarray, *, norm: float,
                 clip: float, sampling_rate: float, batch_size: int, steps: int):
        self.shape, self.index = tuple(shape), int(index)
        self.coords_np, self.member = np.asarray(coords), np.asarray(member, bool)
        self.norm, self.clip, self.q, self.batch_size = float(norm), float(clip), float(sampling_rate), int(batch_size)
        m = len(self.coords_np)
        self._coords = tf.constant(self.coords_np[:, None], tf.int32)
        self._member = tf.constant(self.member)
        self._gen = tf.random.Generator.from_non_deterministic_state()
        self.trajectory = tf.Variable(tf.zeros([steps, m], tf.float32), trainable=False, name="canary_trajectory")
        self.data_trajectory = tf.Variable(tf.zeros([steps, m], tf.float32), trainable=False,
                                           name="canary_data_trajectory")
        self.times_sampled = tf.Variable(tf.zeros([m], tf.int32), trainable=False, name="canary_times_sampled")
        self.step = tf.Variable(0, trainable=False, name="canary_step")

    @classmethod
    def draw(cls, model: tf.keras.Model, m: int, *, norm: float, clip: float, sampling_rate: float, batch_size: int,
             steps: int, rng: np.random.Generator | None = None) -> "GradientCanaries":
        """m canaries on distinct coordinates of ``model``'s largest trainable variable, each in w.p. 1/2.

        Raises:
            ValueError: more canaries than coordinates, or a canary norm not above 0.
        """
        rng = rng or np.random.default_rng()  # OS entropy
        sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
        index = int(np.argmax(sizes))
        if not 1 <= m <= sizes[index]:
            raise ValueError(f"{m} canaries need as many distinct coordinates; the largest variable "
                             f"{model.trainable_variables[index].name} has {sizes[index]}")
        if not norm > 0:
            raise ValueError(f"canary norm {norm}: must be > 0 (e.g. 100 x the clipping norm)")
        return cls(model.trainable_variables[index].shape, index, rng.choice(sizes[index], m, replace=False),
                   rng.random(m) < 0.5, norm=norm, clip=clip, sampling_rate=sampling_rate, batch_size=batch_size,
                   steps=steps)

    def _row(self) -> tf.Tensor:
        return tf.minimum(self.step, tf.shape(self.trajectory)[0] - 1)

    def _flat(self, t: tf.Tensor) -> tf.Tensor:
        """``t`` (a gradient of the canaries' variable) as a flat vector; refuses another shape."""
        if tuple(t.shape) != self.shape:
            raise ValueError(f"the canaries were drawn for a variable of shape {self.shape}, got {tuple(t.shape)}")
        return tf.reshape(t, [-1])

    def observe(self, clipped_sum: tf.Tensor) -> None:
        """Record this step's clipped sum of the real examples (before the noise) at the canaries' coordinates."""
        values = tf.gather(self._flat(clipped_sum), self._coords[:, 0])
        self.data_trajectory.scatter_nd_update([[self._row()]], tf.cast(values, tf.float32)[None])

    def inject(self, grad: tf.Tensor) -> tf.Tensor:
        """The privatized mean gradient of the canaries' variable plus this step's sampled canaries / B."""
        grad_flat = self._flat(grad)
        m = len(self.coords_np)
        sampled = self._member & (self._gen.uniform([m], dtype=tf.float64) < self.q)
        clipped = self.norm * self.clip / max(self.clip, self.norm)  # |g| C / max(C, |g|): the product's rule
        contrib = tf.where(sampled, tf.constant(clipped / self.batch_size, grad.dtype), tf.zeros([], grad.dtype))
        flat = tf.tensor_scatter_nd_add(grad_flat, self._coords, contrib)
        released = tf.gather(flat, self._coords[:, 0]) * self.batch_size  # in units of the noisy sum
        self.trajectory.scatter_nd_update([[self._row()]], tf.cast(released, tf.float32)[None])
        self.times_sampled.assign_add(tf.cast(sampled, tf.int32))
        self.step.assign_add(1)
        return tf.reshape(flat, tf.shape(grad))

    def released(self) -> np.ndarray:
        """(steps run, m): the privatized noisy sum at each canary's coordinate, step by step."""
        return self.trajectory.numpy()[: int(self.step.numpy())]

    def residual(self) -> np.ndarray:
        """(steps run, m): released minus the real examples' clipped sum: sampled canaries plus the noise."""
        released = self.released()
        return released - self.data_trajectory.numpy()[: len(released)]


class _CanaryOptimizer:
    """Mixin: apply_gradients passes the canaries' variable through :meth:`GradientCanaries.inject`;
    FastDPModel calls :meth:`observe_clipped_sums` with the real examples' clipped sums first."""

    canaries: GradientCanaries

    def observe_clipped_sums(self, clipped_sums) -> None:
        self.canaries.observe(clipped_sums[self.canaries.index])

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        pairs = list(grads_and_vars)
        i = self.canaries.index
        pairs[i] = (self.canaries.inject(pairs[i][0]), pairs[i][1])
        return super().apply_gradients(pairs, *args, **kwargs)


def canary_optimizer(base: tf.keras.optimizers.Optimizer, canaries: GradientCanaries) -> tf.keras.optimizers.Optimizer:
    """A copy of ``base`` (same class and settings) that adds ``canaries`` before applying the gradients."""
    cls = type(f"Canary{type(base).__name__}", (_CanaryOptimizer, type(base)), {})
    opt = cls.from_config(base.get_config())
    opt.canaries = canaries
    return opt


def score_lr(residual: np.ndarray, clip: float, noise_multiplier: float, sampling_rate: float) -> np.ndarray:
    """Log-likelihood ratio "in" against "out" per canary, under the claimed mechanism.

    Step t leaves ``x_t = s_t C + N(0, (sigma C)^2)`` at the canary's coordinate once the real
    examples' clipped sum is subtracted, ``s_t ~ Bernoulli(q)`` if the canary is in, 0 if out.
    Score: ``sum_t log(1 - q + q exp((x_t C - C^2 / 2) / (sigma C)^2))``.

    Args:
        residual: (T, m) values, :meth:`GradientCanaries.residual`.
    """
    x = np.asarray(residual, np.float64)
    z = (x * clip - clip ** 2 / 2) / (noise_multiplier * clip) ** 2
    return np.sum(np.logaddexp(np.log1p(-sampling_rate), np.log(sampling_rate) + z), axis=0)


@dataclass
class CanaryRun:
    """One audited run.

    Attributes:
        run: :data:`CORRECT`, :data:`BROKEN_NOISE` or :data:`BROKEN_CLIP`.
        claimed_epsilon: the epsilon of the correct settings, which every run claims.
        accounted_epsilon: what ``train_dp`` accounted for the settings that really ran (RDP for
            the broken controls: their noise is too small for the PLD accountant's grid).
        bound: the audit's 95 % lower bound and its guesses.
        noise_multiplier, l2_norm_clip: the settings that ran.
        seconds: training time; randomness: ``train_dp``'s label.
    """

    run: str
    claimed_epsilon: float
    accounted_epsilon: float
    bound: AuditBound
    noise_multiplier: float
    l2_norm_clip: float
    seconds: float
    randomness: str

    @property
    def caught(self) -> bool:
        """The bound exceeds the claim: the claimed epsilon is false (at 95 % confidence)."""
        return self.bound.epsilon > self.claimed_epsilon

    def summary(self) -> dict:
        return {"claimed_epsilon": round(self.claimed_epsilon, 3), "lower_bound": round(self.bound.epsilon, 3),
                "correct_guesses": f"{self.bound.v}/{self.bound.r}", "canaries": self.bound.m,
                "caught": self.caught, "accounted_epsilon_of_what_ran": float(f"{self.accounted_epsilon:.4g}"),
                "noise_multiplier": round(self.noise_multiplier, 9), "l2_norm_clip": self.l2_norm_clip,
                "train_seconds": round(self.seconds, 1), "randomness": self.randomness}


def canary_audit(model_fn: Callable[[], tf.keras.Model], data: Dataset, cfg: TrainConfig, *, data_cfg: DataConfig,
                 target_epsilon: float, delta: float, canaries: int, canary_norm: float = 100.0,
                 l2_norm_clip: float = 1.0, k_fraction: float = 0.25, p: float = 0.05,
                 runs: Sequence[str] = RUNS) -> dict[str, CanaryRun]:
    """Train ``runs`` with canaries through ``train_dp`` and bound each one's epsilon from below.

    The runs train on the training examples of ``data_cfg``'s split (its validation hold-out is not
    evaluated). The noise is calibrated to ``target_epsilon`` over ``cfg.epochs`` of Poisson
    sampling (the product's ``calibrate_noise``); every run claims that epsilon. Canaries: ``canaries`` of norm
    ``canary_norm * l2_norm_clip``; "in" guesses on the ``k_fraction * canaries`` highest scores.

    Returns:
        ``{run: CanaryRun}`` in the order of ``runs``.
    """
    from lepton_nb.privacy.accounting import calibrate_noise, epsilon, steps_per_epoch
    from lepton_nb.privacy.settings import DPSGDConfig
    from lepton_nb.privacy.train import train_dp
    from lepton_nb.training import make_optimizer, split

    unknown = set(runs) - set(RUNS)
    if unknown:
        raise ValueError(f"unknown runs {sorted(unknown)}: choose from {RUNS}")
    if not 0 < k_fraction <= 0.5:
        raise ValueError(f"k_fraction={k_fraction}: guess 'in' on a fraction in (0, 0.5] of the canaries")
    examples = split(data, data_cfg)  # the examples the audited runs train on, without the hold-out's evaluation
    data = replace(data, x_train=examples.x_train, y_train=examples.y_train, x_val=None, y_val=None)
    data_cfg = replace(data_cfg, validation_fraction=0.0)
    n = len(examples.x_train)
    b = cfg.batch_size
    sigma = calibrate_noise(target_epsilon, n, b, cfg.epochs, delta)
    claimed = epsilon(n, b, cfg.epochs, sigma, delta)
    settings = {CORRECT: (l2_norm_clip, sigma, "best"), BROKEN_NOISE: (l2_norm_clip, sigma / 10, "rdp"),
                BROKEN_CLIP: (NO_CLIP, sigma * l2_norm_clip / NO_CLIP, "rdp")}  # same noise std sigma C
    probe = model_fn()
    out = {}
    for i, run in enumerate(runs):
        clip, noise, accountant = settings[run]
        can = GradientCanaries.draw(probe, canaries, norm=canary_norm * l2_norm_clip, clip=clip, sampling_rate=b / n,
                                    batch_size=b, steps=cfg.epochs * steps_per_epoch(n, b))
        dp = DPSGDConfig(l2_norm_clip=clip, noise_multiplier=noise, delta=delta, accountant=accountant)
        t0 = time.perf_counter()
        result = train_dp(model_fn, data, dp, cfg, data_cfg=data_cfg, name=f"canary_audit_{i}", evaluate_test=False,
                          optimizer=canary_optimizer(make_optimizer(cfg), can))
        seconds = time.perf_counter() - t0
        scores = score_lr(can.residual(), l2_norm_clip, sigma, b / n)  # the claimed mechanism
        bound = bound_for(scores, can.member, int(round(k_fraction * canaries)), delta=delta, p=p)
        out[run] = CanaryRun(run, claimed, result.extra["epsilon"], bound, noise, clip, seconds,
                             result.extra["randomness"])
    return out
