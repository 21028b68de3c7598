"""DP-FedAvg: the accounting (q = 1 against the Gaussian mechanism, both samplings), the epsilon of a
real run against an independent dp_accounting computation for the sampling the loop performed,
what a DP run releases (checked on the computation), the expected-cohort denominator, and the
refusals (zeroing, per-client metrics). Real TFF 0.87 and dp_accounting; tiny data and models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

import dp_accounting
import tensorflow_federated  # noqa: F401 - a locked dependency: missing, these tests must fail, not skip
from dp_accounting import pld, rdp

import lepton_nb as ln
from lepton_nb.federated import accounting, algorithms, dataflow, per_client, runtime, sampling
from lepton_nb.federated.settings import ClientConfig, DPFedAvgConfig, FedAvgConfig
from lepton_nb.federated.simulation import Simulation
from lepton_nb.settings import SettingsError

ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
REPLACE = dp_accounting.NeighboringRelation.REPLACE_ONE


@pytest.fixture(scope="module", autouse=True)
def _no_worker_left():
    yield
    runtime.shutdown()
    assert runtime.child_worker_pids() == [], "a TFF worker_binary outlived the DP-FedAvg tests"


def analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Epsilon of the Gaussian mechanism with noise sigma x sensitivity (Balle & Wang 2018, Theorem 8),
    solved from delta(eps) = Phi(1/(2 sigma) - eps sigma) - e^eps Phi(-1/(2 sigma) - eps sigma):
    independent of dp_accounting."""
    def excess(eps):
        return (stats.norm.cdf(0.5 / sigma - eps * sigma)
                - math.exp(eps) * stats.norm.cdf(-0.5 / sigma - eps * sigma) - delta)

    return optimize.brentq(excess, 1e-9, 100.0, xtol=1e-12)


# ------------------------------------------------------------------------------------ accounting


def test_q1_poisson_is_the_gaussian_mechanism_with_sensitivity_c():
    # every client in the round with probability 1: adding or removing one moves the sum by at most C
    e = accounting.account(1.2, 10, 10, 1, 1e-5, sampling="poisson")
    assert e.relation == "add/remove one client"
    exact = analytic_gaussian_epsilon(1.2, 1e-5)
    assert exact == pytest.approx(3.5487, abs=1e-3)
    assert e.epsilon == pytest.approx(exact, rel=2e-3) and e.epsilon >= exact - 1e-6  # PLD rounds pessimistically
    assert e.rdp >= e.epsilon  # the RDP bound is looser here


def test_q1_fixed_size_is_the_gaussian_mechanism_with_sensitivity_2c():
    # all 10 of 10 clients: replacing one moves the sum by up to 2C, so the multiplier is z / 2
    e = accounting.account(1.2, 10, 10, 1, 1e-5, sampling="without_replacement")
    assert e.relation == "replace one client"
    exact = analytic_gaussian_epsilon(0.6, 1e-5)
    assert e.epsilon == pytest.approx(exact, rel=2e-3) and e.epsilon >= exact - 1e-6
    assert e.rdp == pytest.approx(8.60, abs=0.01)  # the Gaussian mechanism alone at sensitivity 2C
    # control: the old accounting (z, not z / 2, under replace-one) reports the add/remove figure, 3.84
    old = rdp.RdpAccountant(list(accounting.ORDERS), REPLACE).compose(
        dp_accounting.SampledWithoutReplacementDpEvent(10, 10, dp_accounting.GaussianDpEvent(1.2))).get_epsilon(1e-5)
    assert old == pytest.approx(3.84, abs=0.01) and old < 0.5 * e.epsilon


def test_epsilon_grows_with_rounds_and_sampling_falls_with_noise_and_refuses_bad_input():
    for how in ("poisson", "without_replacement"):
        curve = accounting.epsilon_curve(1.0, 10, 100, 20, 1e-4, sampling=how, points=5)
        assert list(curve) == [4, 8, 12, 16, 20]
        values = list(curve.values())
        assert all(b > a for a, b in zip(values, values[1:]))
        assert accounting.dp_fedavg_epsilon(2.0, 10, 100, 20, 1e-4, sampling=how) < values[-1]
        assert accounting.dp_fedavg_epsilon(1.0, 50, 100, 20, 1e-4, sampling=how) > values[-1]
        assert accounting.dp_fedavg_epsilon(1.0, 10, 100, 0, 1e-4, sampling=how) == 0
        assert accounting.dp_fedavg_epsilon(0.0, 10, 100, 1, 1e-4, sampling=how) == math.inf
    with pytest.raises(ValueError, match="clients_per_round"):
        accounting.dp_fedavg_epsilon(1.0, 200, 100, 1, 1e-4)
    with pytest.raises(ValueError, match="delta"):
        accounting.dp_fedavg_epsilon(1.0, 10, 100, 1, 0)
    with pytest.raises(ValueError, match="whole number"):
        accounting.dp_fedavg_epsilon(1.0, 2.5, 100, 1, 1e-4, sampling="without_replacement")


def test_poisson_sampling_is_private_by_default_and_round_indexed_only_when_seeded():
    a, b = sampling.PoissonSampler(1000, 0.1), sampling.PoissonSampler(1000, 0.1)
    assert a.private and not np.array_equal(a(1), b(1))  # OS entropy: nobody recomputes who took part
    s = sampling.PoissonSampler(1000, 0.1, seed=3)
    assert not s.private and "not private" in repr(s)
    assert np.array_equal(s(5), sampling.PoissonSampler(1000, 0.1, seed=3)(5))
    sizes = [len(s(r)) for r in range(1, 200)]
    assert len(set(sizes)) > 5 and abs(np.mean(sizes) - 100) < 5  # variable cohorts around q * n
    assert DPFedAvgConfig().private and DPFedAvgConfig().sampling == "poisson"
    assert not DPFedAvgConfig(sampling_seed=0).private


def test_zeroing_is_refused_for_dp_runs():
    with pytest.raises(SettingsError, match="un-noised"):
        DPFedAvgConfig(zeroing=True)


# ------------------------------------------------------------------------------ TFF computations


def small_mlp():
    return ln.models.build_mlp((28, 28, 1), 10, hidden=(8,))


@pytest.fixture(scope="module")
def mlp_task():
    return algorithms.task(small_mlp, (28, 28, 1), 10)


@pytest.mark.slow
def test_a_dp_process_lets_only_the_clipped_update_leave_the_clients(mlp_task):
    cfg = FedAvgConfig(num_clients=10, clients_per_round=5)
    for clipping in ("fixed", "adaptive"):
        quiet = algorithms.dp_fedavg(mlp_task, cfg, DPFedAvgConfig(noise_multiplier=1.0, clipping=clipping))
        calls = dataflow.client_to_server_calls(quiet.next)
        assert [c["uri"] for c in calls] == ["federated_sum"]  # the sum the DP query noises
        assert "float32[784,8]" in calls[0]["value"]
        metrics = quiet.next.type_signature.result[1]
        assert str(metrics.member["client_work"]) == "<train=<>>"
    # control: the same DP aggregator with TFF's default metrics aggregator sums the client metrics in the clear
    import tensorflow_federated as tff

    control = tff.learning.algorithms.build_unweighted_fed_avg(
        mlp_task.model_fn, tff.learning.optimizers.build_sgdm(0.1),
        model_aggregator=algorithms.dp_aggregator(DPFedAvgConfig(noise_multiplier=1.0, clipping="fixed"), 5))
    leaks = dataflow.client_to_server_calls(control.next)
    assert len(leaks) == 2 and any("num_examples" in c["value"] for c in leaks)


@pytest.mark.slow
def test_the_dp_mean_divides_by_the_expected_cohort_whatever_the_round_size():
    import tensorflow_federated as tff

    runtime.install_default()
    factory = algorithms.dp_aggregator(DPFedAvgConfig(noise_multiplier=0.0, clipping="fixed", clip=10.0), 4.0)
    proc = factory.create(tff.TensorType(np.float32, [2]))
    with runtime.context():
        state = proc.initialize()
        for k in (0, 3, 7):  # Poisson cohorts vary, and can be empty
            res = proc.next(state, [np.array([1.0, 0.0], np.float32)] * k).result
            assert float(res[0]) == pytest.approx(k / 4.0)


@pytest.fixture(scope="module")
def dp_runs(tiny):
    """Two reproducible (seeded, hence not private) DP runs of 6 clients: Poisson and fixed size."""
    sim = Simulation(tiny, progress=False, tensorboard=False)
    data = sim.split(6, seed=0)
    cfg = FedAvgConfig(num_clients=6, clients_per_round=3, rounds=3, eval_every=3, test_clients=2,
                       client=ClientConfig(learning_rate=0.1))
    small = ln.settings.CNNConfig(filters=2, depth=1, dense_units=0, activation="tanh")
    out = {}
    for how in ("poisson", "without_replacement"):
        dp = DPFedAvgConfig(noise_multiplier=0.8, clipping="fixed", sampling=how, sampling_seed=11)
        out[how] = (sim.dp_fedavg(small, data, cfg, dp, name=f"dp_{how}"), dp, cfg)
    return out


@pytest.mark.slow
def test_a_dp_runs_epsilon_is_dp_accounting_for_the_sampling_the_loop_performed(dp_runs):
    run, dp, cfg = dp_runs["poisson"]
    n, q, z, delta = cfg.num_clients, cfg.clients_per_round / cfg.num_clients, dp.noise_multiplier, dp.target_delta(6)
    # the loop really sampled by Poisson: its cohorts are the seeded sampler's, of varying size
    assert sorted(run.cohorts) == [1, 2, 3]
    for r, chosen in run.cohorts.items():
        assert np.array_equal(chosen, sampling.PoissonSampler(n, q, seed=11)(r))
    assert len({len(c) for c in run.cohorts.values()}) > 1
    rounds = len(run.cohorts)
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)),
                                              rounds)
    independent = min(rdp.RdpAccountant(neighboring_relation=ADD_REMOVE).compose(event).get_epsilon(delta),
                      pld.PLDAccountant(ADD_REMOVE).compose(event).get_epsilon(delta))
    assert run.extra["epsilon"] == pytest.approx(independent, rel=5e-3)
    assert run.extra["neighbouring"] == "add/remove one client" and run.extra["randomness"] == "reproducible, not private"

    fixed, dpf, _ = dp_runs["without_replacement"]
    assert {len(c) for c in fixed.cohorts.values()} == {3}
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
        n, 3, dp_accounting.GaussianDpEvent(z / 2)), rounds)
    assert fixed.extra["epsilon"] == pytest.approx(
        rdp.RdpAccountant(neighboring_relation=REPLACE).compose(event).get_epsilon(delta), rel=1e-3)
    assert fixed.extra["neighbouring"] == "replace one client"
    # control: the two samplings of the same run settings give different epsilons, so the check discriminates
    assert fixed.extra["epsilon"] > 1.5 * run.extra["epsilon"]


@pytest.mark.slow
def test_a_dp_run_releases_no_client_metric_and_refuses_per_client_metrics(dp_runs, tiny):
    run, _, _ = dp_runs["poisson"]
    assert not {"train_loss", "train_accuracy", "clients", "examples", "val_accuracy"} & set(run.history.columns)
    assert run.history["test_accuracy"].notna().iloc[-1]  # the released model, scored on public test data
    assert "no client training metric" in run.extra["epsilon_covers"]
    with pytest.raises(ValueError, match="not covered by its epsilon"):
        per_client.for_run(run, None, tiny.x_test, tiny.y_test)
