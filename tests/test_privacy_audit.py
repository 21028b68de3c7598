"""The privacy audits: the one-run epsilon lower bound, the canary audit of train_dp, membership inference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

import tensorflow as tf
import tensorflow_privacy.privacy.privacy_tests  # noqa: F401 - locked (tensorflow-empirical-privacy): must not skip

import lepton_nb as ln
from lepton_nb.privacy.audit import bound, canary, mia
from lepton_nb.settings import CNNConfig, DataConfig, TrainConfig

SMALL = CNNConfig(filters=4, depth=1, norm="group", activation="tanh", dense_units=16)
DATA = DataConfig(validation_fraction=0.1)


def _model():
    return ln.models.build_cnn(SMALL)


# ------------------------------------------------------------------------- the lower bound


def _appendix_d_p_value(m, r, v, eps, delta):
    """Steinke, Nasr & Jagielski (2023), Appendix D's ``p_value_DP_audit``, line by line."""
    q = 1 / (1 + math.exp(-eps))
    beta = scipy.stats.binom.sf(v - 1, r, q)
    alpha = 0
    total = 0
    for i in range(1, v + 1):
        total = total + scipy.stats.binom.pmf(v - i, r, q)
        if total > i * alpha:
            alpha = total / i
    return min(beta + alpha * delta * 2 * m, 1)


def _appendix_d_eps(m, r, v, delta, p):
    """Appendix D's ``get_eps_audit``: bracket, then 30 bisection steps."""
    eps_min, eps_max = 0, 1
    while _appendix_d_p_value(m, r, v, eps_max, delta) < p:
        eps_max = eps_max + 1
    for _ in range(30):
        eps = (eps_min + eps_max) / 2
        if _appendix_d_p_value(m, r, v, eps, delta) < p:
            eps_min = eps
        else:
            eps_max = eps
    return eps_min


def _cases():
    """(m, r, v): the sizes notebook 03 uses (all guesses right, or about chance) and random small ones."""
    rng = np.random.default_rng(0)
    cases = [(1000, 100, 75), (1000, 250, 250), (1000, 250, 140), (2000, 500, 500), (200, 200, 150)]
    for _ in range(8):
        m = int(rng.integers(10, 600))
        r = int(rng.integers(1, m + 1))
        cases.append((m, r, int(rng.integers(0, r + 1))))
    return cases


@pytest.mark.parametrize("m, r, v", _cases())
def test_bound_is_the_papers_appendix_d_computation(m, r, v):
    for eps in (0.0, 0.5, 2.0, 5.0):
        assert bound.p_value(m, r, v, eps, 1e-5) == pytest.approx(_appendix_d_p_value(m, r, v, eps, 1e-5), abs=1e-12)
    # Appendix D stops after 30 bisection steps (resolution ~1e-9 of its bracket); this module takes 50
    assert bound.epsilon_lower_bound(m, r, v, 1e-5) == pytest.approx(_appendix_d_eps(m, r, v, 1e-5, 0.05), abs=1e-8)


@pytest.mark.parametrize("m, r, v", [(c[0], c[1], c[2]) for c in _cases() if 0 < c[2] < c[1]])
def test_bound_at_delta_zero_is_the_one_sided_clopper_pearson_bound(m, r, v):
    accuracy = scipy.stats.beta.ppf(0.05, v, r - v + 1)  # 95 % lower bound on the guess accuracy
    assert bound.epsilon_lower_bound(m, r, v, 0.0) == pytest.approx(max(0.0, math.log(accuracy / (1 - accuracy))),
                                                                    abs=1e-9)


def test_bound_rises_with_correct_guesses_and_is_zero_at_chance():
    eps = [bound.epsilon_lower_bound(2000, 500, v, 1e-5) for v in (250, 300, 400, 495, 500)]
    assert eps[0] == 0.0 and all(a < b for a, b in zip(eps, eps[1:]))
    with pytest.raises(ValueError, match="v <= r <= m"):
        bound.p_value(10, 5, 6, 1.0, 0.0)


def test_bound_for_scores_separates_members_only_when_the_scores_do():
    rng = np.random.default_rng(1)
    member = rng.random(2000) < 0.5
    informative = bound.bound_for(member * 10.0 + rng.normal(size=2000), member, 500, delta=1e-5)
    blind = bound.bound_for(rng.normal(size=2000), member, 500, delta=1e-5)
    assert informative.v == 500 and informative.epsilon > 4.5
    assert blind.epsilon < 0.5


# ----------------------------------------------------------------------- the canary audit


def _cfg(**kw):
    return TrainConfig(**({"epochs": 1, "batch_size": 540, "learning_rate": 1.0, "optimizer": "sgd",
                           "early_stopping_patience": None, "verbose": 0, "tensorboard": False} | kw))


def _weights(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


@pytest.mark.parametrize("clip", [1.0, canary.NO_CLIP])
def test_canaries_enter_the_step_of_train_dp_clipped_by_its_rule(tiny, clip):
    """One SGD(lr=1) step, q = 1, no noise: the canary run is train_dp's step plus -min(G, C)/B per included canary."""
    dp = ln.privacy.DPSGDConfig(l2_norm_clip=clip, noise_multiplier=0.0, delta=1e-4)
    n, b, g = 540, 540, 100.0
    plain = ln.privacy.train_dp(_model, tiny, dp, _cfg(), data_cfg=DATA, evaluate_test=False)
    can = canary.GradientCanaries.draw(_model(), 300, norm=g, clip=clip, sampling_rate=b / n, batch_size=b, steps=1)
    opt = canary.canary_optimizer(ln.training.make_optimizer(_cfg()), can)
    audited = ln.privacy.train_dp(_model, tiny, dp, _cfg(), data_cfg=DATA, evaluate_test=False, optimizer=opt)
    # the canaries' variable is the largest; its offset in the flat weights
    sizes = [w.size for w in plain.model.get_weights()]
    offset = int(np.sum(sizes[:can.index]))
    diff = _weights(audited.model) - _weights(plain.model)
    at = offset + can.coords_np
    expected = np.where(can.member, -min(g, clip) / b, 0.0)
    np.testing.assert_allclose(diff[at], expected, atol=1e-6)
    others = np.ones(diff.size, bool)
    others[at] = False
    assert np.abs(diff[others]).max() < 1e-6
    released = can.released()
    assert released.shape == (1, 300) and can.times_sampled.numpy().tolist() == can.member.astype(int).tolist()
    # what the auditor sees is the noisy (here noiseless) clipped sum at the coordinate, canary included
    np.testing.assert_allclose(released[0] - np.where(can.member, min(g, clip), 0.0),
                               -(_weights(plain.model) - _weights(_initial(dp)))[at] * b, atol=1e-3)
    # the real examples' clipped sum, recorded before the noise, leaves exactly the canaries
    np.testing.assert_allclose(can.residual()[0], np.where(can.member, min(g, clip), 0.0), atol=1e-3)


def _initial(dp):
    tf.keras.utils.set_random_seed(0)  # train_dp initialises from TrainConfig.seed = 0
    return _model()


def test_canary_optimizer_refuses_a_variable_of_another_shape():
    can = canary.GradientCanaries.draw(_model(), 10, norm=100.0, clip=1.0, sampling_rate=0.1, batch_size=10, steps=1)
    with pytest.raises(ValueError, match="drawn for a variable of shape"):
        can.inject(tf.zeros([3, 3]))
    with pytest.raises(ValueError, match="distinct coordinates"):
        canary.GradientCanaries.draw(_model(), 10**6, norm=100.0, clip=1.0, sampling_rate=0.1, batch_size=10, steps=1)


def test_canary_audit_bounds_a_correct_run_below_its_epsilon_and_catches_the_broken_controls(tiny):
    cfg = TrainConfig(epochs=1, batch_size=64, learning_rate=2e-3, early_stopping_patience=None, verbose=0,
                      tensorboard=False)
    runs = canary.canary_audit(_model, tiny, cfg, data_cfg=DATA, target_epsilon=3.0, delta=1e-5, canaries=1000)
    assert list(runs) == list(canary.RUNS)
    correct = runs[canary.CORRECT]
    assert correct.claimed_epsilon <= 3.0 and correct.accounted_epsilon == pytest.approx(correct.claimed_epsilon)
    assert correct.bound.epsilon <= correct.claimed_epsilon and not correct.caught
    for name in (canary.BROKEN_NOISE, canary.BROKEN_CLIP):
        assert name.startswith("BROKEN CONTROL")
        assert runs[name].claimed_epsilon == correct.claimed_epsilon
        assert runs[name].bound.epsilon > runs[name].claimed_epsilon and runs[name].caught, runs[name].summary()
    assert correct.randomness == ln.privacy.train.PRIVATE


def test_score_uses_the_claimed_mechanism():
    rng = np.random.default_rng(2)
    sigma, q, steps, m = 1.0, 0.1, 50, 2000
    member = rng.random(m) < 0.5
    sampled = (rng.random((steps, m)) < q) & member
    residual = sampled * 1.0 + rng.normal(scale=sigma, size=(steps, m))
    scores = canary.score_lr(residual, 1.0, sigma, q)
    assert scipy.stats.mannwhitneyu(scores[member], scores[~member]).pvalue < 1e-6
    # an unclipped canary (norm 100) is found at once
    loud = canary.score_lr(residual + sampled * 99.0, 1.0, sigma, q)
    assert bound.bound_for(loud, member, 500, delta=1e-5).v == 500


# --------------------------------------------------------------------- membership inference


def test_held_out_evaluation_reports_chance_for_blind_scores_and_finds_a_shift():
    rng = np.random.default_rng(3)
    member = rng.random(8000) < 0.5
    blind = mia.evaluate_scores("blind", rng.normal(size=8000), member, n_boot=200)
    assert blind.auc_ci[0] < 0.5 < blind.auc_ci[1] and blind.advantage_ci[0] < 0 < blind.advantage_ci[1]
    for f, r in blind.tpr_at_fpr.items():  # held-out threshold: the TPR of blind scores is the FPR
        assert r["tpr_ci"][0] <= f * 3 and r["fpr"] <= f * 3
    mu = 1.5
    shifted = mia.evaluate_scores("shift", rng.normal(size=8000) + mu * member, member, n_boot=200)
    assert shifted.auc_ci[0] < scipy.stats.norm.cdf(mu / math.sqrt(2)) < shifted.auc_ci[1]
    expected = scipy.stats.norm.sf(scipy.stats.norm.isf(0.01) - mu)  # TPR at FPR 1 % of N(mu, 1) vs N(0, 1)
    lo, hi = shifted.tpr_at_fpr[0.01]["tpr_ci"]
    assert lo - 0.03 < expected < hi + 0.03  # the held-out threshold's FPR is only near 1 %
    assert set(shifted.summary()) >= {"auc", "auc_ci", "tpr@fpr0.1%", "tpr@fpr0.1%_ci", "tpr@fpr1%", "advantage_ci"}


def test_evaluation_refuses_halves_without_both_classes():
    with pytest.raises(ValueError, match="both halves"):
        mia.evaluate_scores("x", np.arange(4.0), np.array([1, 1, 1, 0]))


def test_privacy_tests_attacks_and_loss_scores_find_a_memorising_model(tiny):
    x_in, y_in = tiny.x_train[:100], tiny.y_train[:100]
    x_out, y_out = tiny.x_test[:100], tiny.y_test[:100]
    tf.keras.utils.set_random_seed(0)
    model = ln.models.build_cnn(CNNConfig(filters=8, dense_units=64))
    before = mia.evaluate_scores("untrained", mia.loss_scores(mia.logits_of(model, np.concatenate([x_in, x_out])),
                                                             np.concatenate([y_in, y_out])),
                                 np.r_[np.ones(100), np.zeros(100)], n_boot=200)
    ln.training.compile_model(model, tf.keras.optimizers.Adam(3e-3))
    model.fit(x_in, y_in, epochs=40, batch_size=20, verbose=0)  # memorises its 100 members
    logits_in, logits_out = mia.logits_of(model, x_in), mia.logits_of(model, x_out)
    after = mia.evaluate_scores("trained", mia.loss_scores(np.concatenate([logits_in, logits_out]),
                                                          np.concatenate([y_in, y_out])),
                                np.r_[np.ones(100), np.zeros(100)], n_boot=200)
    assert before.auc_ci[0] < 0.5 + 0.15 and after.auc_ci[0] > 0.6 and after.auc > before.auc
    table = mia.privacy_tests_attacks(logits_in, y_in, logits_out, y_out)
    assert len(table) >= 4 and table["AUC"].max() > 0.7


def test_lira_needs_shadows_and_scores_members_higher_on_memorising_models(tiny):
    with pytest.raises(ValueError, match="at least 3"):
        mia.lira(None, tiny.x_train, tiny.y_train, models=2)

    def train(x, y):
        model = ln.models.build_mlp(hidden=(128,))
        ln.training.compile_model(model, tf.keras.optimizers.Adam(3e-3))
        model.fit(x, y, epochs=30, batch_size=25, verbose=0)
        return model

    x, y = tiny.x_train[:200], tiny.y_train[:200]
    scores, member, ids = mia.lira(train, x, y, models=4, seed=0)
    assert scores.shape == member.shape == ids.shape == (800,) and member.mean() == 0.5
    res = mia.evaluate_scores("lira", scores, member, groups=ids, n_boot=200)
    assert res.auc_ci[0] > 0.6



def test_tpr_bound_is_the_dp_hypothesis_testing_region():
    fpr = np.array([0.0, 0.001, 0.01, 0.5, 1.0])
    b = mia.tpr_bound(fpr, 3.0, 1e-5)
    assert b[1] == pytest.approx(math.exp(3) * 0.001 + 1e-5) and b[-1] == 1.0
    assert np.all(np.diff(b) >= 0) and np.all(b >= fpr)
    assert np.allclose(mia.tpr_bound(fpr, 0.0, 0.0), fpr)  # epsilon 0: no attack beats guessing
    # the advantage bound is the largest TPR - FPR the region allows
    grid = np.linspace(0, 1, 100_001)
    assert (mia.tpr_bound(grid, 3.0, 1e-5) - grid).max() == pytest.approx(mia.advantage_bound(3.0, 1e-5), abs=1e-4)
