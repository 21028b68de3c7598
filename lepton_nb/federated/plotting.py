"""Figures of the federated runs, as matplotlib ``Figure`` objects (no pyplot state).

Computation lives in the other modules; these functions only draw what they are given.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from matplotlib.ticker import MaxNLocator

from lepton_nb.plotting import Figure

__all__ = ["accuracy_vs_rounds", "algorithm_comparison", "client_histograms", "dp_budget", "per_client"]


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


def algorithm_comparison(runs_by_split: Mapping[str, Mapping[str, object]], *, target: float | None = None,
                         centralized: float | None = None) -> Figure:
    """Test accuracy (percent) against rounds, one panel per split, one line per algorithm.

    Args:
        runs_by_split: split name -> {algorithm name -> run}. An algorithm keeps its colour in
            every panel.
        target: a target accuracy (fraction), drawn dotted.
        centralized: accuracy (fraction) of the centralized model, drawn dashed.
    """
    names = list(dict.fromkeys(a for runs in runs_by_split.values() for a in runs))
    colour = {a: f"C{i % 10}" for i, a in enumerate(names)}
    fig = Figure(figsize=(4.2 * len(runs_by_split) + 1.8, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(runs_by_split), sharey=True, squeeze=False)[0])
    for ax, (split, runs) in zip(axes, runs_by_split.items()):
        for a, run in runs.items():
            x, y = _test_curve(run)
            ax.plot(x, y, marker="o", ms=3, color=colour[a], label=a)
        if centralized is not None:
            ax.axhline(100 * centralized, color="black", ls="--", lw=1)
        if target is not None:
            ax.axhline(100 * target, color="grey", ls=":", lw=1)
        ax.set(xlabel="round", title=split)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy %")
    handles = [axes[0].plot([], [], color=colour[a], marker="o", ms=3, label=a)[0] for a in names]
    if centralized is not None:
        handles.append(axes[0].plot([], [], color="black", ls="--", lw=1, label=f"centralized "
                                                                          f"({100 * centralized:.1f} %)")[0])
    if target is not None:
        handles.append(axes[0].plot([], [], color="grey", ls=":", lw=1, label=f"target {100 * target:.0f} %")[0])
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return fig


def per_client(tables: Mapping[str, object]) -> Figure:
    """Per-client accuracy of global models: each client a dot, the median and 10th percentile marked.

    Left: on each client's own held-out data; right: on the global test set re-weighted to each
    client's label mix (:mod:`lepton_nb.federated.per_client`).

    Args:
        tables: run label -> :func:`~lepton_nb.federated.per_client.per_client_accuracy` table.
    """
    fig = Figure(figsize=(10, 0.55 * len(tables) + 2.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    labels = list(tables)
    rng = np.random.default_rng(0)
    for ax, col, title in zip(axes, ("heldout_accuracy", "test_accuracy_at_client_mix"),
                              ("own held-out data", "test set at the client's label mix")):
        for i, label in enumerate(labels):
            v = 100 * tables[label][col].to_numpy(float)
            v = v[np.isfinite(v)]
            ax.scatter(v, i + rng.uniform(-0.18, 0.18, len(v)), s=12, alpha=0.6, color=f"C{i % 10}")
            for q, mark in ((50, "|"), (10, "x")):
                ax.scatter([np.percentile(v, q)], [i], marker=mark, s=160, color="black", zorder=3,
                           label=("median" if q == 50 else "10th percentile") if i == 0 else None)
            ax.scatter([v.min()], [i], marker="<", s=50, color="C3", zorder=3, label="worst client" if i == 0 else None)
        ax.set(xlabel="accuracy %", title=title)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(np.arange(len(labels)), labels, fontsize=8)
    axes[0].legend(fontsize=7, loc="lower left")
    return fig


def dp_budget(run, epsilons: Mapping[int, float], *, reference=None, relation: str = "") -> Figure:
    """DP-FedAvg: test accuracy per round (left) and the user-level epsilon spent (right).

    Args:
        run: the DP run.
        epsilons: round -> epsilon after it (:func:`lepton_nb.federated.accounting.epsilon_curve`).
        reference: the same model and clients without noise or clipping.
        relation: the neighbouring relation the epsilon is stated for (in the panel's title).
    """
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
    a2.plot(list(epsilons), list(epsilons.values()), color="C3", marker="o", ms=3)
    a2.set(xlabel="round", ylabel="epsilon", title="user-level epsilon spent" + (f"\n({relation})" if relation else ""))
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    a2.grid(alpha=0.3)
    return fig
