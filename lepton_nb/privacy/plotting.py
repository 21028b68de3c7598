"""Figures of notebook 03 as matplotlib ``Figure`` objects (numbers in, no computation here)."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.ticker
import numpy as np

from lepton_nb.plotting import Figure

__all__ = ["budget_curve", "canary_audit", "mia_roc", "privacy_utility", "schedule", "speed"]


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
            ax.annotate(f"{a:.2f}", (e, a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    if nonprivate is not None:
        ax.axhline(nonprivate, color="grey", ls="--", label=f"non-private {nonprivate:.1f} %")
    ax.set_xscale("log")
    targets = sorted({float(f"{e:.1g}") for eps, _ in series.values() for e in eps})  # the targets, not 2x10^0
    ax.set_xticks(targets, [f"{e:g}" for e in targets])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
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


def mia_roc(results: Mapping[str, object], *, bound: tuple[np.ndarray, np.ndarray, str] | None = None) -> Figure:
    """ROC curves of membership attacks on log-log axes (where TPR at low FPR shows), one line each.

    ``results`` maps a label to a :class:`lepton_nb.privacy.audit.mia.MIAResult` (its ``fpr``,
    ``tpr``, ``auc`` and ``tpr_at_fpr``); the held-out TPR at each target FPR is marked with its
    interval. ``bound``: ``(fpr, tpr, label)``, the most a DP guarantee lets any attack reach
    (:func:`lepton_nb.privacy.audit.mia.tpr_bound`), drawn dashed.
    """
    fig = Figure(figsize=(5.8, 4.4), layout="constrained")
    ax = fig.subplots()
    floor = 1e-4
    for i, (label, r) in enumerate(results.items()):
        ax.plot(np.maximum(r.fpr, floor), np.maximum(r.tpr, floor), color=f"C{i}", lw=1.2,
                label=f"{label}: AUC {r.auc:.3f}")
        for f, t in r.tpr_at_fpr.items():
            lo, hi = t["tpr_ci"]
            ax.errorbar(max(t["fpr"], floor), max(t["tpr"], floor), yerr=[[max(t["tpr"] - lo, 0)], [max(hi - t["tpr"], 0)]],
                        fmt="o", color=f"C{i}", ms=4, capsize=2)
    grid = np.logspace(-4, 0, 100)
    ax.plot(grid, grid, color="grey", ls=":", label="chance")
    if bound is not None:
        ax.plot(np.maximum(bound[0], floor), np.maximum(bound[1], floor), color="red", ls="--", lw=0.9, label=bound[2])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlim=(floor, 1), ylim=(floor, 1.05), xlabel="false positive rate", ylabel="true positive rate",
           title="membership inference (dots: held-out TPR at 0.1 % and 1 % FPR, 95 % CI)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def canary_audit(runs: Mapping[str, Mapping[str, float]]) -> Figure:
    """Claimed epsilon against the audit's 95 % lower bound, one pair of bars per run.

    ``runs`` maps a run name to ``{"claimed_epsilon", "lower_bound"}``; runs whose name starts with
    "BROKEN CONTROL" are hatched and labelled so. A bound above the claim refutes the claim.
    """
    names = list(runs)
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    for i, name in enumerate(names):
        broken = name.startswith("BROKEN CONTROL")
        r = runs[name]
        ax.bar(i - 0.2, r["claimed_epsilon"], 0.38, color="C0", label="claimed epsilon")
        ax.bar(i + 0.2, r["lower_bound"], 0.38, color="C3" if broken else "C2", hatch="//" if broken else None,
               edgecolor="black" if broken else None,
               label="95 % lower bound, BROKEN CONTROL" if broken else "95 % lower bound")
        ax.text(i + 0.2, r["lower_bound"], f"{r['lower_bound']:.2f}", ha="center", va="bottom", fontsize=8)
        ax.text(i - 0.2, r["claimed_epsilon"], f"{r['claimed_epsilon']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [n.replace(": ", ":\n") for n in names], fontsize=8)
    ax.set(ylabel="epsilon", title="one-run canary audit: a bound above the claim refutes it")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one entry per kind of bar
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left")
    ax.set_ylim(top=max(max(r["claimed_epsilon"], r["lower_bound"]) for r in runs.values()) * 1.25)
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
