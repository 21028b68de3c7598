"""The experiments of notebook 03, one function each, returning numbers (figures live in plots.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from lepton_nb.config import DataConfig, TrainConfig
from lepton_nb.data import Dataset
from lepton_nb.privacy.accounting import epsilon, steps_per_epoch
from lepton_nb.privacy.config import DPConfig

__all__ = ["audit_models", "audit_table", "epsilon_table", "privacy_utility", "training_examples"]


def training_examples(data: Dataset, data_cfg: DataConfig) -> int:
    """Examples DP training really trains on (the training split minus the validation hold-out)."""
    from lepton_nb.privacy.train import _split

    return len(_split(data, data_cfg)[0])


def epsilon_table(num_examples: int, batch_size: int, epochs: int, noise_multipliers: Sequence[float],
                  delta: float):
    """Epsilon by accountant and sampling for each noise multiplier, as a pandas DataFrame.

    Columns: Poisson with RDP, Poisson with PLD, Poisson reported (the smaller), and shuffle
    (no amplification). Rows: noise multipliers.
    """
    import pandas as pd

    rows = []
    for s in noise_multipliers:
        rows.append({
            "noise_multiplier": round(float(s), 3),
            "poisson RDP": epsilon(num_examples, batch_size, epochs, s, delta, "poisson", accountant="rdp"),
            "poisson PLD": epsilon(num_examples, batch_size, epochs, s, delta, "poisson", accountant="pld"),
            "poisson (reported)": epsilon(num_examples, batch_size, epochs, s, delta, "poisson"),
            "shuffle (no amplification)": epsilon(num_examples, batch_size, epochs, s, delta, "shuffle"),
        })
    df = pd.DataFrame(rows).set_index("noise_multiplier").round(3)
    df.attrs["steps"] = epochs * steps_per_epoch(num_examples, batch_size)
    return df


def privacy_utility(model_fn: Callable, data: Dataset, dp: DPConfig, train: TrainConfig, epsilons: Sequence[float],
                    *, data_cfg: DataConfig, done: dict | None = None) -> dict:
    """One DP run per target epsilon (noise calibrated to it over ``train.epochs``).

    ``done`` maps targets already trained to their results (reused, not retrained).
    Returns ``{target: TrainResult}`` in increasing target order.
    """
    from lepton_nb.privacy.train import train_dp

    out = dict(done or {})
    for eps in epsilons:
        if eps not in out:
            out[eps] = train_dp(model_fn, data, replace(dp, noise_multiplier=None, target_epsilon=eps), train,
                                data_cfg=data_cfg, name=f"dp_eps{eps:g}")
    return {e: out[e] for e in sorted(out)}


def audit_models(model_fn: Callable, data: Dataset, dp: DPConfig, *, members: int, epochs: int, batch_size: int = 50,
                 learning_rate: float = 2e-3, seed: int = 0) -> dict:
    """Train a non-private and a DP model on the same ``members`` examples, attack both.

    Both train for ``epochs`` epochs without early stopping (so the non-private one can
    memorise); non-members come from the test split. The DP model's noise is calibrated to
    ``dp.target_epsilon`` over those epochs.

    Returns:
        ``{"nonprivate": {...}, "dp": {...}}`` each with ``attacks`` (name -> AttackResult),
        ``accuracy`` (test) and, for DP, ``epsilon`` and ``advantage_bound``.
    """
    from lepton_nb.data import stratified_subset
    from lepton_nb.privacy.audit import advantage_bound, membership_attacks
    from lepton_nb.privacy.train import train_dp
    from lepton_nb.training import train

    sub = stratified_subset(data, members, min(len(data.y_test), max(members, 200)), seed=seed)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, early_stopping_patience=None,
                      verbose=0, tensorboard=False, seed=seed)
    no_val = DataConfig(validation_fraction=0.0)
    plain = train(model_fn, sub, cfg, data_cfg=no_val, name="audit_nonprivate")
    private = train_dp(model_fn, sub, replace(dp, noise_multiplier=None), cfg, data_cfg=no_val, name="audit_dp")
    out = {}
    for name, r in (("nonprivate", plain), ("dp", private)):
        attacks = membership_attacks(r.model, sub.x_train, sub.y_train, sub.x_test, sub.y_test, seed=seed)
        out[name] = {"attacks": attacks, "accuracy": round(100 * r.report["accuracy"], 2)}
    out["dp"]["epsilon"] = private.extra["epsilon"]
    out["dp"]["advantage_bound"] = round(advantage_bound(private.extra["epsilon"], dp.delta), 4)
    return out


def audit_table(audit: dict):
    """AUC and advantage per model and attack, with test accuracy and the DP bound (DataFrame)."""
    import pandas as pd

    rows = []
    for model, r in audit.items():
        for attack, res in r["attacks"].items():
            rows.append({"model": model, "attack": attack, "AUC": round(res.auc, 3), "advantage": round(res.advantage, 3),
                         "test accuracy %": r["accuracy"], "epsilon": r.get("epsilon", np.inf),
                         "DP advantage bound": r.get("advantage_bound", 1.0)})
    return pd.DataFrame(rows).set_index(["model", "attack"])
