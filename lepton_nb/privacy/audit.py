"""Empirical privacy audit: membership-inference attacks on a trained model.

An attacker sees a model's outputs on an example and guesses whether it was a training member.
Two attacks, as in tensorflow-privacy's ``privacy_tests.membership_inference_attack``:

- **threshold** (Yeom et al. 2018, "Privacy Risk in Machine Learning"): members have lower loss;
  the score is the negative cross-entropy, every threshold is tried (the ROC curve).
- **trained** (Shokri et al. 2017, "Membership Inference Attacks against Machine Learning
  Models", in the simplified form of tensorflow-privacy): a scikit-learn logistic regression on
  the sorted top-k log-probabilities and the loss, trained on half of the members and
  non-members and scored on the other half.

Reported: ROC AUC (0.5 = guessing) and membership advantage ``max_t |TPR - FPR|`` (Yeom et al.
2018). An (epsilon, delta)-DP model bounds every attacker's advantage by
``(e^eps - 1 + 2 delta) / (e^eps + 1)`` (Kairouz et al. 2015; Humphries et al. 2020):
:func:`advantage_bound`.

Why not tensorflow-privacy's own code: tensorflow-privacy 0.9.0's wheel on PyPI does not contain
``tensorflow_privacy/privacy/privacy_tests`` (its ``RECORD`` lists no such file), so
``tensorflow_privacy.privacy.membership_inference_attack`` fails to import (it re-exports
``privacy_tests``; tensorflow/privacy issue #555), and PyPI serves no 0.9.0 sdist (the 0.8.11
sdist still has it). The two attacks above are therefore implemented here with scikit-learn,
following the same definitions (loss threshold; logistic-regression attacker on a held-out
split; AUC and advantage from the ROC curve).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AttackResult", "advantage_bound", "attack_features", "membership_attacks", "roc_advantage"]


@dataclass(frozen=True)
class AttackResult:
    """One attack's figures: ROC AUC, advantage max|TPR-FPR|, and the ROC curve (fpr, tpr)."""

    name: str
    auc: float
    advantage: float
    fpr: np.ndarray
    tpr: np.ndarray

    def summary(self) -> dict:
        return {"auc": round(self.auc, 4), "advantage": round(self.advantage, 4)}


def advantage_bound(epsilon: float, delta: float) -> float:
    """Largest membership advantage an (epsilon, delta)-DP mechanism allows."""
    if not np.isfinite(epsilon):
        return 1.0
    return float(min(1.0, (np.expm1(epsilon) + 2 * delta) / (np.exp(epsilon) + 1)))


def roc_advantage(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """``(auc, advantage, fpr, tpr)`` of ``scores`` (higher = member) against 0/1 ``labels``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    return float(roc_auc_score(labels, scores)), float(np.max(np.abs(tpr - fpr))), fpr, tpr


def attack_features(logits: np.ndarray, labels: np.ndarray, top_k: int = 3) -> np.ndarray:
    """(N, top_k + 1): sorted top-k log-softmax values and the cross-entropy of the true label."""
    logits = np.asarray(logits, np.float64)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    top = -np.sort(-logp, axis=1)[:, :top_k]
    loss = -logp[np.arange(len(labels)), np.asarray(labels)]
    return np.concatenate([top, loss[:, None]], axis=1)


def membership_attacks(model, x_in: np.ndarray, y_in: np.ndarray, x_out: np.ndarray, y_out: np.ndarray, *,
                       seed: int = 0, batch_size: int = 512) -> dict[str, AttackResult]:
    """Run the threshold and the trained attack on ``model`` (a logits Keras model).

    Args:
        x_in, y_in: members (examples the model was trained on), images (N, H, W, C) and labels.
        x_out, y_out: non-members from the same distribution (e.g. the test split); the larger
            set is subsampled so both sides have the same size.

    Returns:
        ``{"threshold": AttackResult, "trained": AttackResult}``.

    Raises:
        ValueError: fewer than 20 members or non-members (the trained attacker needs a split).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(x_in), len(x_out))
    if n < 20:
        raise ValueError(f"membership attacks need at least 20 members and 20 non-members (got {len(x_in)}, "
                         f"{len(x_out)})")
    rng = np.random.default_rng(seed)
    i_in = rng.choice(len(x_in), n, replace=False)
    i_out = rng.choice(len(x_out), n, replace=False)
    def logits(x: np.ndarray) -> np.ndarray:  # eager calls: no retracing for each new input size
        return np.concatenate([model(x[i:i + batch_size], training=False).numpy()
                               for i in range(0, len(x), batch_size)])

    f_in = attack_features(logits(x_in[i_in]), y_in[i_in])
    f_out = attack_features(logits(x_out[i_out]), y_out[i_out])
    feats = np.concatenate([f_in, f_out])
    member = np.concatenate([np.ones(n), np.zeros(n)])

    results = {"threshold": AttackResult("threshold", *roc_advantage(member, -feats[:, -1]))}
    f_tr, f_te, m_tr, m_te = train_test_split(feats, member, test_size=0.5, stratify=member, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(f_tr, m_tr)
    results["trained"] = AttackResult("trained", *roc_advantage(m_te, clf.predict_proba(f_te)[:, 1]))
    return results
