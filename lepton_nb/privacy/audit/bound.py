"""The empirical epsilon lower bound of a one-run audit (Steinke, Nasr & Jagielski 2023).

Reference: T. Steinke, M. Nasr, M. Jagielski, "Privacy Auditing with One (1) Training Run",
NeurIPS 2023, arXiv:2305.08846. The number of the theorem below was not checked against the paper
here: it is the paper's main result in its (epsilon, delta) form, and this module computes
exactly what the paper's Appendix D code (``p_value_DP_audit``, ``get_eps_audit``) computes.

The game: m canaries, each included in the training run independently with probability 1/2
(``member``); the mechanism runs once; the auditor scores every canary from what it sees, guesses
"in" on the ``k_in`` highest scores and "out" on the ``k_out`` lowest, and abstains on the rest:
``r = k_in + k_out`` guesses, ``v`` of them correct. If the mechanism is (epsilon, delta)-DP under
adding or removing one canary, then

    P[W >= v] <= P[Bin(r, q) >= v] + 2 m delta * max_{i=1..v} P[v - i <= Bin(r, q) < v] / i,
    q = e^eps / (1 + e^eps),

so a right-hand side (a p-value) below p rejects "(eps, delta)-DP" at confidence 1 - p. The lower
bound is the largest eps so rejected, found by bisection. With delta = 0 this is the one-sided
Clopper-Pearson lower bound on the guess accuracy, mapped through logit (tested).

The decision rule (score, ``k_in``, ``k_out``) must be fixed before the scores are seen; choosing it
afterwards is a multiple comparison this bound does not pay for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["AuditBound", "bound_for", "epsilon_lower_bound", "guesses", "p_value"]


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P-value of ``v`` correct guesses of ``r`` (``m`` canaries) under "(eps, delta)-DP" (Appendix D)."""
    from scipy import stats

    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if not eps >= 0 or not 0 <= delta <= 1:
        raise ValueError(f"eps={eps} must be >= 0 and delta={delta} in [0, 1]")
    q = 1.0 / (1.0 + math.exp(-eps))  # the accuracy of eps-DP randomized response
    beta = float(stats.binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    alpha = 0.0
    if v > 0 and delta > 0:
        # P[v - i <= Bin(r, q) < v] for i = 1..v: cumulative sums of the pmf from v - 1 downwards
        window = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
        alpha = float(np.max(window / np.arange(1, v + 1)))
    return min(beta + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, p: float = 0.05, *, steps: int = 50) -> float:
    """The largest eps whose "(eps, delta)-DP" the guesses reject at level ``p`` (0 if none).

    The bracket grows by 1 from [0, 1] until the p-value reaches ``p``, then ``steps`` bisections
    (Appendix D's ``get_eps_audit`` takes 30); the low end is returned, so the answer is never above
    the exact one.
    """
    if not 0 < p < 1:
        raise ValueError(f"p={p}: the confidence is 1 - p, so p must be in (0, 1)")
    if p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < p:
        lo, hi = hi, hi + 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(m, r, v, mid, delta) < p else (lo, mid)
    return lo


def guesses(scores: np.ndarray, k_in: int, k_out: int = 0) -> np.ndarray:
    """Guesses in {-1, 0, +1}^m: +1 ("in") on the ``k_in`` highest scores, -1 on the ``k_out`` lowest.

    Ties are broken by the canaries' index (a fixed order, independent of membership).
    """
    scores = np.asarray(scores, np.float64)
    m = len(scores)
    if k_in < 0 or k_out < 0 or k_in + k_out > m:
        raise ValueError(f"k_in={k_in}, k_out={k_out}: both >= 0 and together at most m={m}")
    order = np.argsort(scores, kind="stable")
    t = np.zeros(m, np.int8)
    t[order[:k_out]] = -1
    t[order[m - k_in:]] = 1
    return t


@dataclass(frozen=True)
class AuditBound:
    """One audit's bound: ``m`` canaries, ``r`` guesses (``k_in`` "in", ``k_out`` "out"), ``v`` correct."""

    epsilon: float
    m: int
    r: int
    v: int
    k_in: int
    k_out: int
    delta: float
    p: float

    def summary(self) -> dict:
        return {"epsilon_lower_bound": round(self.epsilon, 3), "canaries": self.m, "guesses": self.r,
                "correct": self.v, "delta": self.delta, "confidence": round(1 - self.p, 4)}


def bound_for(scores: np.ndarray, member: np.ndarray, k_in: int, k_out: int = 0, *, delta: float,
              p: float = 0.05) -> AuditBound:
    """The lower bound of one pre-registered rule: guesses from ``scores``, checked against ``member`` (1 = in)."""
    member = np.asarray(member).astype(bool)
    if len(member) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(member)} membership bits")
    t = guesses(scores, k_in, k_out)
    v = int(np.sum((t == 1) & member) + np.sum((t == -1) & ~member))
    r = k_in + k_out
    return AuditBound(epsilon_lower_bound(len(scores), r, v, delta, p), len(scores), r, v, k_in, k_out, delta, p)
