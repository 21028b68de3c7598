"""Accounting, calibration, schedules, budget and sampling of lepton_nb.privacy (no training here)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dp_accounting

import lepton_nb as ln  # noqa: E402
from lepton_nb.privacy import PrivacyError  # noqa: E402


def _direct(event, delta):
    from dp_accounting import pld, rdp

    return (rdp.RdpAccountant().compose(event).get_epsilon(delta),
            pld.PLDAccountant(value_discretization_interval=1e-3).compose(event).get_epsilon(delta))


def test_epsilon_poisson_matches_dp_accounting_called_directly():
    n, b, epochs, sigma, delta = 60_000, 256, 30, 1.1, 1e-5
    steps = math.ceil(epochs * math.ceil(n / b))
    ev = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(b / n, dp_accounting.GaussianDpEvent(sigma)), steps)
    rdp_eps, pld_eps = _direct(ev, delta)
    assert ln.privacy.epsilon(n, b, epochs, sigma, delta, sampling="poisson", accountant="rdp") == pytest.approx(rdp_eps)
    assert ln.privacy.epsilon(n, b, epochs, sigma, delta, sampling="poisson", accountant="pld") == pytest.approx(pld_eps)
    assert ln.privacy.epsilon(n, b, epochs, sigma, delta) == pytest.approx(min(rdp_eps, pld_eps))


def test_shuffle_is_accounted_without_amplification():
    n, b, epochs, sigma, delta = 6_000, 64, 5, 2.0, 1e-5
    ev = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), epochs)
    assert ln.privacy.epsilon(n, b, epochs, sigma, delta, sampling="shuffle", accountant="rdp") == pytest.approx(
        _direct(ev, delta)[0])
    # honest accounting: shuffled batches get no credit for subsampling
    assert ln.privacy.epsilon(n, b, epochs, sigma, delta, sampling="shuffle") > \
        ln.privacy.epsilon(n, b, epochs, sigma, delta, sampling="poisson")
    # stated under zero-out (REPLACE_SPECIAL): the same figure as dp_accounting's own accountants for it
    zero_out = dp_accounting.NeighboringRelation.REPLACE_SPECIAL
    pld = dp_accounting.pld.PLDAccountant(zero_out, value_discretization_interval=1e-3).compose(ev).get_epsilon(delta)
    rdp = dp_accounting.rdp.RdpAccountant(neighboring_relation=zero_out).compose(ev).get_epsilon(delta)
    assert ln.privacy.epsilon(n, b, epochs, sigma, delta, sampling="shuffle") == pytest.approx(min(pld, rdp))
    # replace-one would double the sensitivity: sigma / 2, a larger epsilon (not what the run claims)
    assert ln.privacy.epsilon(n, b, epochs, sigma / 2, delta, sampling="shuffle") > \
        ln.privacy.epsilon(n, b, epochs, sigma, delta, sampling="shuffle")


def test_epsilon_grows_with_epochs_and_falls_with_noise():
    e = [ln.privacy.epsilon(5_000, 100, k, 1.0, 1e-5, accountant="rdp") for k in (1, 2, 4)]
    assert e[0] < e[1] < e[2]
    assert ln.privacy.epsilon(5_000, 100, 2, 2.0, 1e-5, accountant="rdp") < e[1]
    assert ln.privacy.epsilon(5_000, 100, 2, 0.0, 1e-5) == math.inf


def test_calibrate_noise_is_smallest_that_meets_target():
    args = dict(num_examples=6_000, batch_size=128, epochs=10, delta=1e-5)
    sigma = ln.privacy.calibrate_noise(3.0, **args)
    assert ln.privacy.epsilon(noise_multiplier=sigma, **args) <= 3.0
    assert ln.privacy.epsilon(noise_multiplier=sigma * 0.99, **args) > 3.0


def test_releases_compose_with_the_training():
    n, b, epochs, sigma, delta, z = 6_000, 128, 5, 1.2, 1e-5, 3.0
    training = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(b / n, dp_accounting.GaussianDpEvent(sigma)), epochs * math.ceil(n / b))
    both = min(_direct(dp_accounting.ComposedDpEvent([training, dp_accounting.GaussianDpEvent(z)]), delta))
    with_release = ln.privacy.epsilon(n, b, epochs, sigma, delta, releases=(z,))
    assert with_release == pytest.approx(both)
    assert with_release > ln.privacy.epsilon(n, b, epochs, sigma, delta)  # the control: the release is not free
    assert ln.privacy.epsilon_for_schedule(n, b, [sigma] * epochs, delta, releases=(z,)) == pytest.approx(with_release)
    alone = ln.privacy.epsilon_for_schedule(n, b, [], delta, releases=(z,))  # before the first epoch
    assert alone == pytest.approx(min(_direct(dp_accounting.GaussianDpEvent(z), delta))) and alone > 0
    calibrated = ln.privacy.calibrate_noise(3.0, n, b, epochs, delta, releases=(z,))
    assert calibrated > ln.privacy.calibrate_noise(3.0, n, b, epochs, delta)
    assert ln.privacy.epsilon(n, b, epochs, calibrated, delta, releases=(z,)) <= 3.0
    with pytest.raises(PrivacyError, match="releases before training"):
        ln.privacy.calibrate_noise(1.0, n, b, epochs, delta, releases=(0.5,))
    with pytest.raises(PrivacyError, match=r"releases=\[0.0\]: each noise multiplier"):
        ln.privacy.epsilon(n, b, epochs, sigma, delta, releases=(0.0,))


@pytest.mark.parametrize("kwargs, match", [
    (dict(noise_multiplier=-0.1), "noise"),
    (dict(delta=1e-3), "delta"),
    (dict(batch_size=7_000), "batch_size"),
    (dict(sampling="random"), "sampling"),
])
def test_bad_input_raises_clear_errors(kwargs, match):
    args = dict(num_examples=6_000, batch_size=64, epochs=3, noise_multiplier=1.0, delta=1e-5) | kwargs
    with pytest.raises(PrivacyError, match=match):
        ln.privacy.epsilon(**args)


def test_unreachable_target_raises():
    with pytest.raises(PrivacyError, match="cannot be reached"):
        ln.privacy.calibrate_noise(0.01, 1_000, 500, 50, 1e-5, sampling="shuffle", max_noise=50)


def test_dpconfig_rejects_bad_settings():
    with pytest.raises(PrivacyError, match="l2_norm_clip"):
        ln.privacy.DPSGDConfig(l2_norm_clip=0)
    with pytest.raises(PrivacyError, match="noise_multiplier"):
        ln.privacy.DPSGDConfig(noise_multiplier=-1)
    with pytest.raises(PrivacyError, match="sampling='shuffle'"):
        ln.privacy.DPSGDConfig(path="stock", sampling="poisson")


def test_schedule_composes_each_epoch_with_its_own_noise():
    from lepton_nb.privacy.schedules import noise_schedule, scale_to_epsilon

    n, b, delta = 6_000, 128, 1e-5
    sched = noise_schedule("linear", 2.0, 1.0, 4)
    assert sched[0] == 2.0 and sched[-1] == 1.0 and len(sched) == 4
    events = [dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(b / n, dp_accounting.GaussianDpEvent(s)), math.ceil(n / b)) for s in sched]
    rdp = dp_accounting.rdp.RdpAccountant().compose(dp_accounting.ComposedDpEvent(events)).get_epsilon(delta)
    assert ln.privacy.epsilon_for_schedule(n, b, sched, delta, accountant="rdp") == pytest.approx(rdp)
    # a constant schedule is accounted like the constant noise
    assert ln.privacy.epsilon_for_schedule(n, b, [1.3] * 3, delta) == pytest.approx(
        ln.privacy.epsilon(n, b, 3, 1.3, delta))
    scaled = scale_to_epsilon(sched, 2.0, n, b, delta)
    assert ln.privacy.epsilon_for_schedule(n, b, scaled, delta) <= 2.0
    assert scaled[0] / scaled[-1] == pytest.approx(2.0)


def test_poisson_pipeline_samples_each_example_with_probability_q():
    from lepton_nb.privacy.sampling import poisson_pipeline

    x = np.arange(1_000, dtype=np.float32)[:, None]
    ds, steps = poisson_pipeline(x, np.zeros(1_000, np.int64), 50, seed=3)
    assert steps == 20
    batches = [b.numpy()[:, 0] for b, _ in ds.take(400)]
    sizes = np.array([len(b) for b in batches])
    assert abs(sizes.mean() - 50) < 2  # Binomial(1000, 0.05): sd of the mean ~0.35
    assert 5.5 < sizes.std() < 8.5  # sd of Binomial(1000, 0.05) = 6.9: variable batches
    counts = np.bincount(np.concatenate(batches).astype(int), minlength=1_000)
    assert abs(counts.mean() - 20) < 1 and counts.max() < 45  # every example ~ q * 400 times
    again = [b.numpy()[:, 0] for b, _ in poisson_pipeline(x, np.zeros(1_000, np.int64), 50, seed=3)[0].take(3)]
    assert all(np.array_equal(a, b) for a, b in zip(again, batches))  # reproducible
    with pytest.raises(PrivacyError, match="batch_size"):
        poisson_pipeline(x[:10], np.zeros(10, np.int64), 11)


def test_advantage_bound():
    from lepton_nb.privacy.audit.mia import advantage_bound

    assert advantage_bound(0.0, 0.0) == 0.0
    assert 0 < advantage_bound(1.0, 1e-5) < advantage_bound(3.0, 1e-5) < 1
    assert advantage_bound(math.inf, 1e-5) == 1.0
