"""Figures of notebook 03 as matplotlib ``Figure`` objects (numbers in, no computation here)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lepton_nb.plotting import Figure

__all__ = ["audit_roc", "budget_curve", "privacy_utility", "schedule", "speed"]


def privacy_utility(epsilons: Sequence[float] = (), accuracies: Sequence[float] = (), *,
                    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                    nonprivate: float | None = None, delta: float | None = None,
                    label: str = "DP-SGD (fast path)") -> Figure:
    """Test accuracy (%) against epsilon (log axis), the non-private accuracy as a dashed line.

    One curve from ``epsilons`` and ``accuracies`` (named ``label``), and/or several from
    ``curves``: ``{name: (epsilons, accuracies)}``, e.g. two models side by side.
    """
    series = {label: (epsilons, accuracies)} if len(epsilons) else {}
    series.update(curves or {})
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (name, (eps, acc)) in enumerate(series.items()):
        ax.plot(eps, acc, "o-", color=f"C{i}", label=name)
        for e, a in zip(eps, acc):
            ax.annotate(f"{a:.1f}", (e, a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    if nonprivate is not None:
        ax.axhline(nonprivate, color="grey", ls="--", label=f"non-private {nonprivate:.1f} %")
    ax.set_xscale("log")
    ax.set(xlabel="epsilon" + (f" (delta = {delta:g})" if delta else ""), ylabel="test accuracy %",
           title="privacy-utility trade-off")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def budget_curve(epsilons: Sequence[float], target: float, planned_epochs: int) -> Figure:
    """Epsilon after each epoch run, the budget as a red line, the planned length as a dotted line."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(1, len(epsilons) + 1), epsilons, "o-", label="epsilon spent")
    ax.axhline(target, color="red", label=f"budget {target:g}")
    ax.axvline(planned_epochs, color="grey", ls=":", label=f"planned {planned_epochs} epochs")
    ax.set(xlabel="epoch", ylabel="epsilon", title="privacy budget callback")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def schedule(runs: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """Per epoch: noise multiplier (left), epsilon spent (middle), validation accuracy (right).

    ``runs`` maps a name to a history with ``noise_multiplier``, ``epsilon`` and ``val_accuracy``.
    """
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    axes = fig.subplots(1, 3)
    for i, (name, h) in enumerate(runs.items()):
        for ax, key in zip(axes, ("noise_multiplier", "epsilon", "val_accuracy")):
            if key in h:
                ax.plot(np.arange(1, len(h[key]) + 1), h[key], "o-", color=f"C{i}", ms=3, label=name)
    for ax, title in zip(axes, ("noise multiplier", "epsilon spent", "validation accuracy")):
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def audit_roc(results: Mapping[str, Mapping[str, object]]) -> Figure:
    """ROC curves of the membership attacks, one panel per attack, one line per model.

    ``results`` maps a model name to :func:`lepton_nb.privacy.audit.membership_attacks`' output.
    """
    attacks = list(next(iter(results.values())))
    fig = Figure(figsize=(4.2 * len(attacks), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(attacks)))
    for ax, attack in zip(axes, attacks):
        for i, (model, res) in enumerate(results.items()):
            r = res[attack]
            ax.plot(r.fpr, r.tpr, color=f"C{i}", label=f"{model}: AUC {r.auc:.3f}, adv {r.advantage:.3f}")
        ax.plot([0, 1], [0, 1], color="grey", ls=":")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{attack} attack")
        ax.legend(fontsize=7, loc="lower right")
    return fig


def speed(times: Mapping[str, Mapping[str, float]]) -> Figure:
    """Median steady-state epoch time per path (log axis), with the ratio to non-private."""
    names = list(times)
    med = [times[n]["median"] for n in names]
    fig = Figure(figsize=(5.5, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, med, color=[f"C{i}" for i in range(len(names))])
    base = times.get("nonprivate", {}).get("median")
    for i, m in enumerate(med):
        ax.text(m, i, f" {m:.2f} s" + (f" ({m / base:.1f}x)" if base else ""), va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="seconds per epoch (steady state)", title="epoch time by path")
    ax.set_xlim(right=max(med) * 6)
    return fig
