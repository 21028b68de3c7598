"""Membership inference as current papers report it, on tensorflow-privacy's ``privacy_tests``.

An attacker scores an example from a trained model (higher = more likely a training member).

- **Scores** come from tensorflow-privacy's ``privacy_tests`` (shipped as the
  tensorflow-empirical-privacy wheel): the loss of the threshold attack (Yeom et al. 2018), its
  ``run_attacks`` (threshold on loss and entropy, logistic regression, k-NN) as the library reports
  them (:func:`privacy_tests_attacks`), and LiRA (Carlini et al. 2022, "Membership Inference
  Attacks From First Principles", :func:`lira`): the logit-scaled confidence
  (``advanced_mia.calculate_statistic(option="logit")``) of the target model, against Gaussians
  fitted to shadow models trained with and without the example (``compute_score_lira``, one
  variance for all examples as Carlini et al. recommend for few shadows).
- **Evaluation** (:func:`evaluate_scores`), the part ``privacy_tests`` does not do: its threshold
  attacks pick their threshold on the scores they report and give no interval. Here the examples
  are split into a calibration half and an evaluation half; thresholds are chosen on the
  calibration half only (the one with at most 0.1 % or 1 % false positives, the one maximising
  TPR - FPR) and applied to the evaluation half, which reports TPR and the achieved FPR with exact
  Clopper-Pearson intervals and the advantage with a bootstrap interval; AUC (no threshold) is
  computed on all scores with a bootstrap interval. TPR at a low FPR is the figure Carlini et al.
  argue for; AUC and advantage are reported beside it.

:func:`advantage_bound` is what an (epsilon, delta)-DP guarantee allows any attack.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = ["MIAResult", "advantage_bound", "evaluate_scores", "lira", "logits_of", "loss_scores",
           "privacy_tests_attacks", "tpr_bound"]

#: The false positive rates at which TPR is reported.
FPRS = (0.001, 0.01)


def advantage_bound(epsilon: float, delta: float) -> float:
    """Largest membership advantage TPR - FPR an (epsilon, delta)-DP mechanism allows.

    ``(e^eps - 1 + 2 delta) / (e^eps + 1)`` (Kairouz et al. 2015; Humphries et al. 2020).
    """
    if not np.isfinite(epsilon):
        return 1.0
    return float(min(1.0, (np.expm1(epsilon) + 2 * delta) / (np.exp(epsilon) + 1)))


def tpr_bound(fpr: np.ndarray, epsilon: float, delta: float) -> np.ndarray:
    """The largest TPR any attack can reach at false positive rate ``fpr`` against an (epsilon, delta)-DP mechanism.

    ``min(e^eps FPR + delta, 1 - e^-eps (1 - delta - FPR), 1)`` (Kairouz, Oh & Viswanath 2015, the
    hypothesis-testing region of DP); at FPR 0.1 % and epsilon 3 it is about 2 %.
    """
    fpr = np.asarray(fpr, np.float64)
    if not np.isfinite(epsilon):
        return np.ones_like(fpr)
    return np.clip(np.minimum(np.exp(epsilon) * fpr + delta, 1 - np.exp(-epsilon) * (1 - delta - fpr)), 0, 1)


def logits_of(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits (N, K) float64 of a Keras logits model, in eager batches (no retracing per size)."""
    return np.concatenate([model(x[i:i + batch_size], training=False).numpy()
                           for i in range(0, len(x), batch_size)]).astype(np.float64)


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Minus the cross-entropy of each example, computed by ``privacy_tests`` (higher = member)."""
    from tensorflow_privacy.privacy.privacy_tests.membership_inference_attack.data_structures import (
        AttackInputData)

    return -AttackInputData(logits_train=logits, labels_train=np.asarray(labels)).get_loss_train()


def _clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    from scipy.stats import beta

    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


@dataclass
class MIAResult:
    """One attack's held-out figures; intervals are (low, high) at confidence ``1 - alpha``.

    Attributes:
        auc: ROC AUC on all scores (0.5 = guessing), ``auc_ci`` its bootstrap interval.
        advantage: TPR - FPR on the evaluation half at the calibration half's best threshold.
        tpr_at_fpr: target FPR -> ``{"tpr", "tpr_ci", "fpr", "fpr_ci", "threshold"}``, the FPR
            being the one achieved on the evaluation half.
        n_eval: (members, non-members) in the evaluation half.
        fpr, tpr: the ROC curve on all scores (for figures).
    """

    name: str
    auc: float
    auc_ci: tuple[float, float]
    advantage: float
    advantage_ci: tuple[float, float]
    tpr_at_fpr: dict
    n_eval: tuple[int, int]
    fpr: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    tpr: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def summary(self) -> dict:
        """Figures for reports and tables (rates as fractions, 4 decimals)."""
        out = {"auc": round(self.auc, 4), "auc_ci": [round(v, 4) for v in self.auc_ci],
               "advantage": round(self.advantage, 4), "advantage_ci": [round(v, 4) for v in self.advantage_ci]}
        for f, r in self.tpr_at_fpr.items():
            out[f"tpr@fpr{100 * f:g}%"] = round(r["tpr"], 4)
            out[f"tpr@fpr{100 * f:g}%_ci"] = [round(v, 4) for v in r["tpr_ci"]]
            out[f"achieved_fpr@{100 * f:g}%"] = round(r["fpr"], 4)
        out["eval_members"], out["eval_nonmembers"] = self.n_eval
        return out


def evaluate_scores(name: str, scores: np.ndarray, member: np.ndarray, *, groups: np.ndarray | None = None,
                    fprs: Sequence[float] = FPRS, alpha: float = 0.05, n_boot: int = 1000,
                    seed: int = 0) -> MIAResult:
    """Held-out-threshold evaluation of an attack's ``scores`` (higher = member) against 0/1 ``member``.

    Args:
        groups: one id per score, e.g. the example a LiRA score belongs to when every model is a
            target in turn; the halves and the bootstrap resamples are drawn by group, so the
            scores of one example stay together. Default: every score its own group.
        seed: seed of the halves and the bootstrap (the analysis, not a mechanism).

    Raises:
        ValueError: when a half would lack members or non-members.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    scores = np.asarray(scores, np.float64)
    member = np.asarray(member).astype(bool)
    if scores.shape != member.shape:
        raise ValueError(f"{scores.shape} scores but {member.shape} membership bits")
    groups = np.arange(len(scores)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    ug, inv = np.unique(groups, return_inverse=True)
    # calibration half by group, stratified by the group's majority membership
    majority = np.bincount(inv, weights=member, minlength=len(ug)) / np.bincount(inv, minlength=len(ug)) > 0.5
    cal_g = np.zeros(len(ug), bool)
    for flag in (True, False):
        idx = np.nonzero(majority == flag)[0]
        cal_g[rng.permutation(idx)[: len(idx) // 2]] = True
    cal = cal_g[inv]
    s_cal, m_cal, s_ev, m_ev = scores[cal], member[cal], scores[~cal], member[~cal]
    if m_ev.all() or not m_ev.any() or m_cal.all() or not m_cal.any():
        raise ValueError(f"{name}: both halves need members and non-members ({int(member.sum())} members of "
                         f"{len(member)} scores)")

    out_cal = np.sort(s_cal[~m_cal])[::-1]
    n1, n0 = int(m_ev.sum()), int((~m_ev).sum())
    tpr_at = {}
    for f in fprs:
        k = int(np.floor(f * len(out_cal)))  # at most floor(f n) calibration non-members above t
        t = out_cal[k] if k < len(out_cal) else -np.inf  # "member" iff score > t
        tp, fp = int(np.sum(s_ev[m_ev] > t)), int(np.sum(s_ev[~m_ev] > t))
        tpr_at[f] = {"tpr": tp / n1, "tpr_ci": _clopper_pearson(tp, n1, alpha), "fpr": fp / n0,
                     "fpr_ci": _clopper_pearson(fp, n0, alpha), "threshold": float(t)}

    fpr_c, tpr_c, thr_c = roc_curve(m_cal, s_cal)
    t_adv = thr_c[int(np.argmax(tpr_c - fpr_c))]

    def adv(s, m):
        return np.mean(s[m] >= t_adv) - np.mean(s[~m] >= t_adv)

    ev_groups = np.unique(inv[~cal])
    rows_of = np.split(np.argsort(inv, kind="stable"), np.cumsum(np.bincount(inv, minlength=len(ug)))[:-1])
    aucs, advs = [], []
    for _ in range(n_boot):
        idx = np.concatenate([rows_of[g] for g in rng.integers(0, len(ug), len(ug))])
        if member[idx].any() and not member[idx].all():
            aucs.append(roc_auc_score(member[idx], scores[idx]))
        ide = np.concatenate([rows_of[g] for g in ev_groups[rng.integers(0, len(ev_groups), len(ev_groups))]])
        if member[ide].any() and not member[ide].all():
            advs.append(adv(scores[ide], member[ide]))
    q = (100 * alpha / 2, 100 * (1 - alpha / 2))
    fpr, tpr, _ = roc_curve(member, scores)
    return MIAResult(name, float(roc_auc_score(member, scores)), tuple(np.percentile(aucs, q)),
                     float(adv(s_ev, m_ev)), tuple(np.percentile(advs, q)), tpr_at, (n1, n0), fpr, tpr)


def privacy_tests_attacks(logits_in: np.ndarray, y_in: np.ndarray, logits_out: np.ndarray, y_out: np.ndarray):
    """tensorflow-privacy's ``run_attacks`` on members and non-members, as a pandas DataFrame.

    Threshold on loss and on entropy, logistic regression and k-NN on the whole sets, as the library
    reports them: the threshold attacks choose their threshold on the scores they report, and no
    figure has an interval (:func:`evaluate_scores` gives held-out figures).
    """
    from tensorflow_privacy.privacy.privacy_tests.membership_inference_attack import (
        membership_inference_attack as mia)
    from tensorflow_privacy.privacy.privacy_tests.membership_inference_attack.data_structures import (
        AttackInputData, AttackType)

    data = AttackInputData(logits_train=logits_in, logits_test=logits_out, labels_train=np.asarray(y_in),
                           labels_test=np.asarray(y_out))
    types = (AttackType.THRESHOLD_ATTACK, AttackType.THRESHOLD_ENTROPY_ATTACK, AttackType.LOGISTIC_REGRESSION,
             AttackType.K_NEAREST_NEIGHBORS)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # its epsilon lower bound divides by zero on empty tails
        df = mia.run_attacks(data, attack_types=types).calculate_pd_dataframe()
    cols = [c for c in ("attack type", "AUC", "Attacker advantage", "PPV") if c in df.columns]
    return df[cols].set_index("attack type")


def lira(train_fn: Callable[[np.ndarray, np.ndarray], object], x: np.ndarray, y: np.ndarray, *, models: int,
         seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LiRA with every model as the target in turn, the others its shadows (Carlini et al. 2022).

    ``models`` models are trained by ``train_fn(x_in, y_in) -> keras logits model``, each on an
    independent random half of ``x`` (exactly N/2 examples, so every example is in a given model
    with probability 1/2). For target k the other ``models - 1`` are its shadows: the statistic of
    each example on the shadows that trained on it and on those that did not gives the two
    Gaussians; the target's statistic is scored by ``compute_score_lira`` (negated: higher =
    member). ``x`` must come from the training split only; the test split stays unseen.

    Returns:
        ``(scores (models * N,), member (models * N,), example id (models * N,))`` for
        :func:`evaluate_scores` (``groups`` = example id).

    Raises:
        ValueError: fewer than 3 models (a target needs shadows with and without each example).
    """
    from tensorflow_privacy.privacy.privacy_tests.membership_inference_attack import advanced_mia as amia

    if models < 3:
        raise ValueError(f"models={models}: LiRA needs at least 3 (each target's shadows must include models "
                         "with and without each example)")
    rng = np.random.default_rng(seed)
    n = len(x)
    in_mask = np.zeros((models, n), bool)
    for k in range(models):
        in_mask[k, rng.permutation(n)[: n // 2]] = True
    stats = np.stack([amia.calculate_statistic(logits_of(train_fn(x[in_mask[k]], y[in_mask[k]]), x), y,
                                               option="logit")[:, None] for k in range(models)])  # (models, n, 1)
    scores = []
    for k in range(models):
        others = [j for j in range(models) if j != k]
        sh, inm = stats[others], in_mask[others]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nan medians of examples no shadow left out
            scores.append(-amia.compute_score_lira(stats[k], [sh[inm[:, i], i] for i in range(n)],
                                                   [sh[~inm[:, i], i] for i in range(n)], option="both",
                                                   fix_variance=True))
    return np.concatenate(scores), in_mask.reshape(-1), np.tile(np.arange(n), models)
