"""Figures of the federated runs, as matplotlib ``Figure`` objects (no pyplot state).

Computation lives in the other modules; these functions only draw what they are given.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from matplotlib.ticker import MaxNLocator

from lepton_nb.plotting import Figure

__all__ = ["accuracy_vs_rounds", "client_histograms", "dp_budget", "sweep"]


def client_histograms(histograms: Mapping[str, np.ndarray], class_names: Sequence[str], *,
                      max_clients: int = 40) -> Figure:
    """Examples per class per client, one panel per split (stacked bars, one colour per class).

    Args:
        histograms: split name -> int array (num_clients, num_classes).
        max_clients: show at most this many clients per split (the first ones).
    """
    k = len(class_names)
    fig = Figure(figsize=(11, 2.6 * len(histograms) + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(histograms), 1, squeeze=False)[:, 0])
    colours = [f"C{i}" if i < 10 else f"C{i % 10}" for i in range(k)]
    for ax, (name, h) in zip(axes, histograms.items()):
        h = np.asarray(h)[:max_clients]
        bottom = np.zeros(len(h))
        for c in range(k):
            ax.bar(np.arange(len(h)), h[:, c], bottom=bottom, color=colours[c], width=0.85,
                   label=class_names[c] if ax is axes[0] else None)
            bottom += h[:, c]
        ax.set(title=f"{name}: examples per class per client", ylabel="examples", xlim=(-0.6, len(h) - 0.4))
        ax.set_xticks(np.arange(len(h)), [str(i) for i in range(len(h))], fontsize=6)
    axes[-1].set_xlabel("client")
    fig.legend(loc="outside right upper", fontsize=7)
    return fig


def _test_curve(run) -> tuple[np.ndarray, np.ndarray]:
    h = run.history.dropna(subset=["test_accuracy"])
    return h["round"].to_numpy(), 100 * h["test_accuracy"].to_numpy()


def accuracy_vs_rounds(runs: Mapping[str, object], *, centralized: float | None = None,
                       target: float | None = None, title: str = "test accuracy against rounds") -> Figure:
    """Test accuracy (percent) of each :class:`~lepton_nb.federated.loop.FederatedRun` per round.

    Args:
        runs: label -> run (its evaluated rounds are plotted).
        centralized: accuracy (fraction) of the centralized model, drawn as a horizontal line.
        target: a target accuracy (fraction), drawn dotted.
    """
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for i, (label, run) in enumerate(runs.items()):
        x, y = _test_curve(run)
        ax.plot(x, y, marker="o", ms=3, color=f"C{i}", label=label)
    if centralized is not None:
        ax.axhline(100 * centralized, color="black", ls="--", lw=1, label=f"centralized ({100 * centralized:.1f} %)")
    if target is not None:
        ax.axhline(100 * target, color="grey", ls=":", lw=1, label=f"target {100 * target:.0f} %")
    ax.set(xlabel="round", ylabel="test accuracy %", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def sweep(runs_by_value: Mapping[object, object], parameter: str) -> Figure:
    """Two panels: final test accuracy and median seconds per round against ``parameter``."""
    values = list(runs_by_value)
    acc = [100 * runs_by_value[v].test_accuracy for v in values]
    sec = [runs_by_value[v].steady_round_seconds for v in values]
    fig = Figure(figsize=(8, 3), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    pos = np.arange(len(values))
    a1.bar(pos, acc, color="C0")
    a1.set(xlabel=parameter, ylabel="test accuracy %", title="accuracy after the same rounds")
    a2.bar(pos, sec, color="C1")
    a2.set(xlabel=parameter, ylabel="seconds", title="median time per round")
    for ax, vals in ((a1, acc), (a2, sec)):
        ax.set_xticks(pos, [str(v) for v in values])
        for p, v in zip(pos, vals):
            ax.text(p, v, f"{v:.1f}" if ax is a1 else f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    return fig


def dp_budget(run, epsilons: Sequence[float], *, reference=None) -> Figure:
    """DP-FedAvg: test accuracy per round (left) and the user-level epsilon spent (right)."""
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    x, y = _test_curve(run)
    a1.plot(x, y, marker="o", ms=3, color="C3", label="DP-FedAvg")
    if reference is not None:
        xr, yr = _test_curve(reference)
        a1.plot(xr, yr, marker="o", ms=3, color="C0", label="same model, no noise")
    a1.set(xlabel="round", ylabel="test accuracy %", title="accuracy")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a2.plot(np.arange(1, len(epsilons) + 1), epsilons, color="C3")
    a2.set(xlabel="round", ylabel="epsilon", title="user-level epsilon spent")
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    a2.grid(alpha=0.3)
    return fig
