"""Figures as matplotlib figures (no pyplot state); :func:`save_figure` writes PNGs.

Every figure function of lepton_nb returns a :class:`Figure`, which shows itself as a PNG image
when it is the last expression of a notebook cell: JupyterLab, nbconvert's HTML, VS Code and Colab
all follow IPython's display protocol (``_repr_png_``), so no ``%matplotlib`` magic and no pyplot
import is needed.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib.figure
import numpy as np

__all__ = ["Figure", "class_counts", "class_grid", "clean_axes", "confusion_matrix", "sample_grid", "save_figure",
           "training_curves"]


class Figure(matplotlib.figure.Figure):
    """A matplotlib figure that notebooks display as a PNG image.

    A plain ``matplotlib.figure.Figure`` built without pyplot has no display hook in a kernel that
    never imported pyplot, so IPython shows only its text repr (``<Figure size 1000x360 with 2
    Axes>``). This subclass implements IPython's display protocol itself.
    """

    #: resolution of the displayed PNG (saved files use :func:`save_figure`'s ``dpi``)
    display_dpi = 100

    def __repr__(self) -> str:
        """The text a notebook stores beside the PNG (and shows where images are not rendered): the
        figure's titles, not matplotlib's ``<Figure size ...>``."""
        titles = [self._suptitle.get_text()] if self._suptitle else []
        titles += [ax.get_title() for ax in self.axes]
        shown = [t for t in titles if t][:3]
        return f"<figure: {' | '.join(shown) or f'{len(self.axes)} axes'}>"

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=self.display_dpi, bbox_inches="tight")
        return buffer.getvalue()


def save_figure(fig: Figure, name: str, *, dpi: int = 120) -> Path:
    """Save ``fig`` as ``reports/figures/<name>.png`` and return the path."""
    from lepton_nb.reports import figure_path

    path = figure_path(name)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def training_curves(histories: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """Loss and accuracy per epoch (train solid, validation dashed), one colour per model."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, (name, h) in enumerate(histories.items()):
        colour = f"C{i}"
        epochs = np.arange(1, len(h["loss"]) + 1)
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.plot(epochs, h[key], color=colour, label=f"{name} train")
            if f"val_{key}" in h:
                ax.plot(epochs, h[f"val_{key}"], color=colour, ls="--", label=f"{name} val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.legend(fontsize=7, ncol=1, loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    return fig


def confusion_matrix(cm: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str], *,
                     normalize: bool = True, title: str = "") -> Figure:
    """Confusion matrix heatmap; rows true class, columns predicted, row-normalized by default."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    k = len(class_names)
    fig = Figure(figsize=(0.55 * k + 2.5, 0.5 * k + 1.8), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    for i in range(k):
        for j in range(k):
            v = shown[i, j]
            if v > 0.005:
                ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center", fontsize=7,
                        color="white" if v > (0.5 if normalize else shown.max() / 2) else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title or ("recall per true class" if normalize else "counts"))
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def clean_axes(ax) -> None:
    """No ticks and no frame: an axes that only shows an image."""
    ax.set_xticks([]), ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def class_grid(labels: np.ndarray, class_names: Sequence[str], draw: Callable[[object, int], None], *,
               y_pred: np.ndarray | None = None, per_class: int = 6, seed: int = 0,
               cell: tuple[float, float] = (1.1, 1.1), margin: float = 1.4,
               title: Callable[[str], str] = lambda name: name[:10]) -> Figure:
    """One row per class holding up to ``per_class`` random examples of it.

    ``draw(ax, i)`` draws example ``i`` into ``ax``; with ``y_pred``, each cell is titled
    ``title(predicted class name)``, in red where the prediction is wrong.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    k = len(class_names)
    fig = Figure(figsize=(cell[0] * per_class + margin, cell[1] * k), layout="constrained")
    axes = fig.subplots(k, per_class, squeeze=False)
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        picks = rng.choice(idx, min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            clean_axes(ax)
            if j < len(picks):
                i = picks[j]
                draw(ax, i)
                if y_pred is not None:
                    ok = y_pred[i] == labels[i]
                    ax.set_title(title(class_names[y_pred[i]]), fontsize=6, color="black" if ok else "red")
        axes[c, 0].set_ylabel(class_names[c][:12], fontsize=8, rotation=0, ha="right", va="center")
    return fig


def sample_grid(x: np.ndarray, y: np.ndarray, class_names: Sequence[str], *, y_pred: np.ndarray | None = None,
                per_class: int = 6, seed: int = 0) -> Figure:
    """``per_class`` images of each class (rows); with ``y_pred``, titles in red where wrong."""
    return class_grid(y, class_names, lambda ax, i: ax.imshow(np.squeeze(x[i]), cmap="gray", vmin=0, vmax=1),
                      y_pred=y_pred, per_class=per_class, seed=seed)


def class_counts(counts: Mapping[str, np.ndarray], class_names: Sequence[str]) -> Figure:
    """Grouped bars of examples per class for each split (e.g. train and test)."""
    k = len(class_names)
    fig = Figure(figsize=(8, 3), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(counts), 1)
    for i, (split, c) in enumerate(counts.items()):
        ax.bar(np.arange(k) + i * width, c, width, label=split)
    ax.set_xticks(np.arange(k) + width * (len(counts) - 1) / 2, class_names, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="images", title="images per class")
    ax.legend()
    return fig
