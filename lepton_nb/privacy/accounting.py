"""Privacy accounting for DP-SGD with dp_accounting (RDP and PLD), for the sampling really used.

Two samplings are accounted, matching the two input pipelines of :mod:`lepton_nb.privacy.sampling`:

- ``"poisson"``: every example joins every step independently with probability ``q = B / N``
  (variable batch sizes). Each step is a Poisson-subsampled Gaussian mechanism; this is the
  setting of Abadi et al. 2016 and the only one for which amplification by subsampling is proven
  for DP-SGD. ``ceil(N / B)`` steps make one epoch.
- ``"shuffle"``: a fresh, uniformly random permutation each epoch cut into fixed batches of B,
  the last partial batch dropped, so every example enters at most one step per epoch. Its epsilon
  is stated under the **zero-out** neighbouring relation: two datasets differ by one example
  replaced with a "null" example whose gradient is zero (Kairouz et al. 2021, "Practical and
  Private (Deep) Learning without Sampling or Shuffling", Def. 1.1; dp_accounting's
  ``NeighboringRelation.REPLACE_SPECIAL``). Why one Gaussian per epoch is the bound: for any fixed
  order, the two runs differ in at most one clipped gradient per epoch (the step that holds that
  example), at L2 distance at most C, under noise of std sigma C; so each epoch is one Gaussian
  mechanism with multiplier sigma, and E epochs compose to E of them. That holds for every order,
  hence for any mixture of orders: it uses neither the randomness nor the secrecy of the
  permutation and claims no amplification by shuffling. It is *not* an add/remove guarantee
  (adding an example shifts the fixed batch boundaries and can change the number of steps), and
  under replace-one (sensitivity 2C) the same run would be accounted with sigma / 2. This is
  tensorflow-privacy's own "each example occurring once per epoch" figure in
  ``compute_dp_sgd_privacy_statement``. Quoting the Poisson figure for shuffled batches is the
  common, unproven shortcut (Chua et al. 2024, "How Private are DP-SGD Implementations?", show it
  can understate epsilon); we never do it.

Poisson sampling is accounted under add-or-remove-one example, with one example per microbatch
(the fast path and the stock path with ``num_microbatches == batch_size``).
:func:`neighbouring_relation` names the relation of each sampling. Microbatches of more than one
example double the sensitivity (tensorflow-privacy's ``used_microbatching``), which
:func:`dp_event` accounts by halving the effective noise multiplier.

Epsilon is the smaller of the RDP bound (Mironov 2017; Mironov, Talwar, Zhang 2019) and the PLD
bound (Meiser & Mohammadi 2018; Koskela et al. 2020; pessimistic discretization, so still an upper
bound): both are valid upper bounds, and the PLD one is usually tighter.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

from lepton_nb.settings import SettingsError

Sampling = Literal["poisson", "shuffle"]
Accountant = Literal["best", "rdp", "pld"]

__all__ = [
    "PrivacyError",
    "calibrate_noise",
    "dp_event",
    "epsilon",
    "epsilon_for_schedule",
    "neighbouring_relation",
    "smallest_meeting",
    "steps_per_epoch",
    "validate",
]

#: PLD discretization of the loss values. dp_accounting's default is 1e-4; 1e-3 is 5-10x faster
#: and still a valid upper bound (the PLD accountant rounds pessimistically); it moves epsilon by
#: about 0.1 % (for example 2.2650 -> 2.2710 for N=60k, B=256, 40 epochs, sigma 1).
PLD_DISCRETIZATION = 1e-3


class PrivacyError(SettingsError):
    """A DP setting is unusable; the message names the setting and how to fix it."""


#: The neighbouring relation each sampling's epsilon is stated under (module docstring).
RELATIONS = {"poisson": "add/remove one example",
             "shuffle": "zero-out (one example replaced by a zero-gradient example)"}


def neighbouring_relation(sampling: Sampling) -> str:
    """The neighbouring relation an epsilon of ``sampling`` is stated under, in words."""
    if sampling not in RELATIONS:
        raise PrivacyError(f"sampling={sampling!r}: choose 'poisson' or 'shuffle'")
    return RELATIONS[sampling]


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Optimizer steps per epoch, ``ceil(N / B)``, for both samplings."""
    return math.ceil(num_examples / batch_size)


def validate(num_examples: int, batch_size: int, epochs: float | int, noise_multiplier: float | None,
             delta: float, *, sampling: str = "poisson", l2_norm_clip: float | None = None,
             releases: Sequence[float] = ()) -> None:
    """Raise :class:`PrivacyError` for settings no DP-SGD run can honour; cheap, call before training.

    Checks: at least one example and epoch, ``1 <= batch_size <= num_examples``, noise >= 0,
    clip > 0, ``0 < delta < 1 / num_examples`` (a larger delta allows releasing an example
    outright), a known sampling, and noise > 0 in every release (:func:`dp_event`).
    """
    if num_examples < 1:
        raise PrivacyError(f"num_examples={num_examples}: DP training needs at least one example")
    if not 1 <= batch_size <= num_examples:
        raise PrivacyError(f"batch_size={batch_size} is not in [1, {num_examples}] (the number of training "
                           f"examples): use a batch no larger than the data")
    if not epochs > 0:
        raise PrivacyError(f"epochs={epochs}: train for a positive number of epochs")
    if noise_multiplier is not None and not noise_multiplier >= 0:
        raise PrivacyError(f"noise_multiplier={noise_multiplier}: the noise must be >= 0 "
                           "(0 means no privacy; DP needs > 0)")
    if l2_norm_clip is not None and not l2_norm_clip > 0:
        raise PrivacyError(f"l2_norm_clip={l2_norm_clip}: the clipping norm must be > 0 (1.0 is a common start)")
    if not 0 < delta < 1 / num_examples:
        raise PrivacyError(f"delta={delta}: use 0 < delta < 1/num_examples = {1 / num_examples:.2e} "
                           f"(e.g. 1e-5 for 60,000 examples); a larger delta lets a mechanism publish "
                           "whole examples")
    if sampling not in ("poisson", "shuffle"):
        raise PrivacyError(f"sampling={sampling!r}: choose 'poisson' (accounted with amplification) or "
                           "'shuffle' (each example once per epoch, no amplification)")
    if not all(z > 0 for z in releases):
        raise PrivacyError(f"releases={list(releases)}: each noise multiplier of a release must be > 0 (a release "
                           "without noise publishes its statistic exactly)")


def _release_events(releases: Sequence[float]) -> list:
    """One ``GaussianDpEvent`` per release's noise multiplier (:func:`dp_event`)."""
    import dp_accounting as dpa

    return [dpa.GaussianDpEvent(float(z)) for z in releases]


def dp_event(num_examples: int, batch_size: int, epochs: int | float, noise_multiplier: float | Sequence[float],
             *, sampling: Sampling = "poisson", examples_per_microbatch: int = 1, releases: Sequence[float] = ()):
    """The dp_accounting event of a DP-SGD run.

    Args:
        num_examples: N, size of the training set.
        batch_size: B, the (expected, under Poisson) batch size.
        epochs: number of epochs; with a per-epoch ``noise_multiplier`` sequence it must equal its
            length (a fractional last epoch is not supported there).
        noise_multiplier: sigma (noise std / clip norm), one value or one per epoch.
        sampling: "poisson" or "shuffle" (see the module docstring).
        examples_per_microbatch: > 1 doubles the sensitivity (sigma / 2 is accounted).
        releases: noise multipliers (noise std / L2 sensitivity) of Gaussian mechanisms run once on
            the same examples besides the training, e.g. a DP mean of their features
            (:func:`lepton_nb.privacy.scatter.private_feature_mean`); composed with it.

    Returns:
        A ``dp_accounting.DpEvent``: per epoch, ``ceil(N / B)`` Poisson-subsampled Gaussian steps
        (probability B / N), or one Gaussian step (shuffle); epochs composed, then the releases.
    """
    import dp_accounting as dpa

    steps = steps_per_epoch(num_examples, batch_size)
    if isinstance(noise_multiplier, (int, float)):
        sigmas = None
    else:
        sigmas = [float(s) for s in noise_multiplier]
        if len(sigmas) != epochs:
            raise PrivacyError(f"a noise schedule of {len(sigmas)} epochs was given with epochs={epochs}")

    def one(sigma: float, count: float):
        s = sigma / 2 if examples_per_microbatch > 1 else sigma
        if sampling == "poisson":
            ev = dpa.PoissonSampledDpEvent(batch_size / num_examples, dpa.GaussianDpEvent(s))
            return dpa.SelfComposedDpEvent(ev, int(math.ceil(count * steps)))
        return dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(s), int(math.ceil(count)))

    extra = _release_events(releases)
    if sigmas is None:
        training = one(float(noise_multiplier), epochs)
        return dpa.ComposedDpEvent([training, *extra]) if extra else training
    runs: list[list[float]] = []  # consecutive epochs of equal noise compose as one event (faster PLD)
    for s in sigmas:
        if runs and runs[-1][0] == s:
            runs[-1][1] += 1
        else:
            runs.append([s, 1])
    if len(runs) == 1 and not extra:
        return one(runs[0][0], runs[0][1])
    return dpa.ComposedDpEvent([*(one(s, n) for s, n in runs), *extra])


def _epsilon_of_event(event, delta: float, accountant: Accountant, discretization: float = PLD_DISCRETIZATION,
                      *, sampling: Sampling = "poisson") -> float:
    """Epsilon of ``event`` under the neighbouring relation of ``sampling`` (add/remove or zero-out)."""
    import dp_accounting as dpa
    from dp_accounting import pld, rdp

    relation = (dpa.NeighboringRelation.REPLACE_SPECIAL if sampling == "shuffle"
                else dpa.NeighboringRelation.ADD_OR_REMOVE_ONE)
    out = []
    if accountant in ("best", "rdp"):
        out.append(rdp.RdpAccountant(neighboring_relation=relation).compose(event).get_epsilon(delta))
    if accountant in ("best", "pld"):
        out.append(pld.PLDAccountant(neighboring_relation=relation, value_discretization_interval=discretization)
                   .compose(event).get_epsilon(delta))
    return float(min(out))


def epsilon(num_examples: int, batch_size: int, epochs: int | float, noise_multiplier: float, delta: float,
            sampling: Sampling = "poisson", *, accountant: Accountant = "best",
            examples_per_microbatch: int = 1, releases: Sequence[float] = ()) -> float:
    """Epsilon of DP-SGD at ``delta``, for the sampling the training used.

    Args:
        num_examples: N, training examples.
        batch_size: B (expected batch size under Poisson sampling).
        epochs: passes over the data (``ceil(epochs * N / B)`` steps under Poisson).
        noise_multiplier: sigma, the Gaussian noise std divided by the clipping norm; 0 gives inf.
        delta: target delta, ``< 1 / N``.
        sampling: "poisson" or "shuffle" (module docstring).
        accountant: "best" (min of RDP and PLD), "rdp" or "pld".
        releases: Gaussian mechanisms run besides the training (:func:`dp_event`), composed.

    Returns:
        Epsilon under the sampling's neighbouring relation (:func:`neighbouring_relation`:
        add/remove for Poisson, zero-out for shuffle); ``inf`` when ``noise_multiplier == 0``.

    Raises:
        PrivacyError: for impossible settings (see :func:`validate`).
    """
    validate(num_examples, batch_size, epochs, noise_multiplier, delta, sampling=sampling, releases=releases)
    if noise_multiplier == 0:
        return math.inf
    return _epsilon_of_event(dp_event(num_examples, batch_size, epochs, noise_multiplier, sampling=sampling,
                                      examples_per_microbatch=examples_per_microbatch, releases=releases),
                             delta, accountant, sampling=sampling)


def epsilon_for_schedule(num_examples: int, batch_size: int, noise_multipliers: Sequence[float], delta: float,
                         sampling: Sampling = "poisson", *, accountant: Accountant = "best",
                         releases: Sequence[float] = ()) -> float:
    """Epsilon after ``len(noise_multipliers)`` epochs, epoch ``e`` run with ``noise_multipliers[e]``.

    The epochs are composed with their own noise (heterogeneous composition), so a schedule is
    accounted exactly as it ran; ``releases`` (:func:`dp_event`) are composed with them, and
    alone give the epsilon before the first epoch.
    """
    sig = list(noise_multipliers)
    if not sig:
        if not releases:
            return 0.0
        import dp_accounting as dpa

        validate(num_examples, batch_size, 1, None, delta, sampling=sampling, releases=releases)
        return _epsilon_of_event(dpa.ComposedDpEvent(_release_events(releases)), delta, accountant, sampling=sampling)
    validate(num_examples, batch_size, len(sig), min(sig), delta, sampling=sampling, releases=releases)
    if min(sig) == 0:
        return math.inf
    return _epsilon_of_event(dp_event(num_examples, batch_size, len(sig), sig, sampling=sampling, releases=releases),
                             delta, accountant, sampling=sampling)


def smallest_meeting(eps_of, target_epsilon: float, *, accountant: Accountant = "best", tolerance: float = 1e-3,
                     max_value: float = 500.0) -> float | None:
    """Smallest ``x`` with ``eps_of(x, accountant, disc) <= target`` (within ``tolerance`` relative
    under RDP, 1 % under PLD).

    ``eps_of(x, accountant, discretization)`` must fall as ``x`` grows. RDP brackets and bisects
    first (cheap); the tighter accountant then refines below the RDP answer,
    and the answer is finally checked, and nudged up if needed.
    Returns ``None`` when even ``max_value`` misses the target.
    """
    def bisect(f, lo: float, hi: float, tol: float) -> float:
        while hi - lo > tol * hi:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > target_epsilon else (lo, mid)
        return hi

    def bracket(f) -> tuple[float, float] | None:
        if f(max_value) > target_epsilon:
            return None
        lo, hi = 0.0, 1.0
        while f(hi) > target_epsilon:
            lo, hi = hi, min(2 * hi, max_value)
        return lo, hi

    rdp = lambda x: eps_of(x, "rdp", PLD_DISCRETIZATION)  # noqa: E731
    final = lambda x: eps_of(x, accountant, PLD_DISCRETIZATION)  # noqa: E731
    coarse = final  # the same grid: what is searched is what is reported
    br = bracket(rdp)
    if br is None:
        if accountant == "rdp":
            return None
        br = bracket(final)
        if br is None:
            return None
        return bisect(final, *br, tolerance)
    hi = bisect(rdp, *br, tolerance)
    if accountant == "rdp":
        return hi
    # PLD is rarely more than 20 % below RDP in sigma; evaluations cost up to seconds each, so the
    # bracket is narrow and the relative tolerance 1 % (the answer still meets the target).
    lo = 0.8 * hi if coarse(0.8 * hi) > target_epsilon else 0.0
    hi = bisect(coarse, lo, hi, max(tolerance, 1e-2))
    while final(hi) > target_epsilon:
        hi *= 1 + tolerance
    return hi


def calibrate_noise(target_epsilon: float, num_examples: int, batch_size: int, epochs: int | float, delta: float,
                    sampling: Sampling = "poisson", *, accountant: Accountant = "best",
                    tolerance: float = 1e-3, max_noise: float = 500.0, releases: Sequence[float] = ()) -> float:
    """The smallest noise multiplier whose epsilon is at most ``target_epsilon``.

    Bisection on sigma (epsilon falls as sigma grows), see :func:`smallest_meeting`. The returned
    sigma always meets the target under ``accountant``, within ``tolerance`` relative of the
    smallest such sigma; the epsilon counts ``releases`` too (:func:`dp_event`).

    Raises:
        PrivacyError: bad settings, or a target no noise up to ``max_noise`` reaches (e.g. a tiny
            epsilon with shuffle sampling over many epochs): the message says what would.
    """
    if not target_epsilon > 0:
        raise PrivacyError(f"target_epsilon={target_epsilon}: must be > 0")
    validate(num_examples, batch_size, epochs, 1.0, delta, sampling=sampling, releases=releases)
    if releases:
        spent = epsilon_for_schedule(num_examples, batch_size, [], delta, sampling, accountant=accountant,
                                     releases=releases)
        if spent >= target_epsilon:
            raise PrivacyError(f"the releases before training (noise multipliers {list(releases)}) alone cost "
                               f"epsilon={spent:.3g} >= target_epsilon={target_epsilon}: give them more noise "
                               "or raise the target")

    def eps_of(sigma: float, acc: Accountant, disc: float) -> float:
        if sigma == 0:
            return math.inf
        return _epsilon_of_event(dp_event(num_examples, batch_size, epochs, sigma, sampling=sampling,
                                          releases=releases), delta, acc, disc, sampling=sampling)

    sigma = smallest_meeting(eps_of, target_epsilon, accountant=accountant, tolerance=tolerance, max_value=max_noise)
    if sigma is None:
        raise PrivacyError(
            f"target_epsilon={target_epsilon} cannot be reached in {epochs} epochs of {sampling} sampling "
            f"(N={num_examples}, B={batch_size}, delta={delta}) even with noise_multiplier={max_noise}: "
            "train fewer epochs, use a smaller batch fraction or Poisson sampling, or raise the target")
    return sigma
