"""Drawing explanations: matplotlib ``Figure`` objects (no pyplot state), plus the RGB overlay
array that both the figures and the explorer widget use. Nothing here computes an explanation.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lepton_nb.plotting import Figure, class_grid, clean_axes

__all__ = [
    "activation_grid",
    "faithfulness_curves",
    "feature_bars",
    "gradcam_per_class",
    "localization_examples",
    "methods_side_by_side",
    "overlay_rgb",
    "randomization",
    "region_importance",
    "surrogate_regions",
    "surrogate_tree",
]

METHOD_TITLES = {"gradcam": "Grad-CAM", "integrated_gradients": "integrated gradients", "smoothgrad": "SmoothGrad",
                 "vanilla_gradients": "gradients", "occlusion": "occlusion", "random": "random order",
                 "activation": "activation"}


def _title(name: str) -> str:
    return METHOD_TITLES.get(name, name)


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, np.float32)
    return img.mean(axis=-1) if img.ndim == 3 else img


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a colormapped heatmap over a grayscale image.

    Args:
        image: (H, W) or (H, W, C) in [0, 1]; heatmap: (H, W) in [0, 1].
        alpha: heatmap weight, 0 (image only) to 1 (heatmap only).

    Returns:
        uint8 (H, W, 3) RGB.
    """
    import matplotlib

    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha}: use a weight in [0, 1]")
    g = np.clip(_gray(image), 0, 1)
    hm = np.clip(np.asarray(heatmap, np.float32), 0, 1)
    if hm.shape != g.shape:
        raise ValueError(f"heatmap {hm.shape} and image {g.shape} must have the same height and width")
    colours = matplotlib.colormaps[cmap](hm)[..., :3]
    rgb = (1 - alpha) * np.repeat(g[..., None], 3, axis=-1) + alpha * colours
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def gradcam_per_class(images: np.ndarray, heatmaps: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                      y_pred: np.ndarray | None = None, per_class: int = 3, alpha: float = 0.5, seed: int = 0) -> Figure:
    """One row per class: ``per_class`` images with their heatmap overlaid (titles red where wrong)."""
    return class_grid(labels, class_names, lambda ax, i: ax.imshow(overlay_rgb(images[i], heatmaps[i], alpha=alpha)),
                      y_pred=y_pred, per_class=per_class, seed=seed, cell=(1.2, 1.15), margin=1.5,
                      title=lambda name: f"pred {name[:9]}")


def methods_side_by_side(images: np.ndarray, maps: Mapping[str, np.ndarray], *, titles: Sequence[str] | None = None,
                         alpha: float = 0.55) -> Figure:
    """Rows: images; columns: the image, then each method's heatmap overlaid."""
    n = len(images)
    cols = 1 + len(maps)
    fig = Figure(figsize=(1.45 * cols, 1.45 * n + 0.3), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(_gray(images[i]), cmap="gray", vmin=0, vmax=1)
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=7, rotation=0, ha="right", va="center")
        for j, (name, hm) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(overlay_rgb(images[i], hm[i], alpha=alpha))
            if i == 0:
                axes[i, j].set_title(_title(name), fontsize=8)
        for ax in axes[i]:
            clean_axes(ax)
    axes[0, 0].set_title("image", fontsize=8)
    return fig


def activation_grid(activations: np.ndarray, *, image: np.ndarray | None = None, max_channels: int = 32,
                    columns: int = 8, title: str = "") -> Figure:
    """The feature maps of one example, (h, w, C): one panel per channel (up to ``max_channels``)."""
    a = np.asarray(activations)
    if a.ndim != 3:
        raise ValueError(f"activations of one example must be (h, w, channels), got {a.shape}")
    c = min(a.shape[-1], max_channels)
    panels = c + (image is not None)
    rows = int(np.ceil(panels / columns))
    fig = Figure(figsize=(1.2 * columns, 1.2 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    k = 0
    if image is not None:
        axes[0].imshow(_gray(image), cmap="gray", vmin=0, vmax=1)
        axes[0].set_title("input", fontsize=7)
        k = 1
    for ch in range(c):
        axes[k + ch].imshow(a[..., ch], cmap="viridis")
        axes[k + ch].set_title(f"ch {ch}", fontsize=6)
    for ax in axes:
        clean_axes(ax)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def faithfulness_curves(curves: Mapping[str, dict], table=None) -> Figure:
    """Mean deletion and insertion curves per method (from :func:`trust.faithfulness`), AUC in the legend."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    axd, axi = fig.subplots(1, 2)
    for i, (name, r) in enumerate(curves.items()):
        style = dict(color="gray", ls="--") if name == "random" else dict(color=f"C{i}")
        axd.plot(r["fractions"], r["deletion"].mean(0), label=f"{_title(name)} ({r['deletion_auc'].mean():.3f})", **style)
        axi.plot(r["fractions"], r["insertion"].mean(0), label=f"{_title(name)} ({r['insertion_auc'].mean():.3f})",
                 **style)
    axd.set(xlabel="fraction of pixels deleted", ylabel="target probability", title="deletion (lower AUC = better)")
    axi.set(xlabel="fraction of pixels inserted", ylabel="target probability", title="insertion (higher AUC = better)")
    for ax in (axd, axi):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def randomization(table, maps: Mapping[str, Mapping[str, np.ndarray]] | None = None, *, image: np.ndarray | None = None,
                  index: int = 0) -> Figure:
    """Rank correlation with the trained model's heatmaps as more layers are randomized
    (Adebayo et al. 2018, fig. 2); with ``maps``, the heatmaps of example ``index`` per step."""
    steps = list(dict.fromkeys(table["randomized"]))
    methods = list(dict.fromkeys(table["method"]))
    if maps is None:
        fig = Figure(figsize=(6, 3.4), layout="constrained")
        ax = fig.subplots()
    else:
        fig = Figure(figsize=(max(7, 1.5 * (len(steps) + 2)), 3.2 + 1.3 * len(methods)), layout="constrained")
        sub = fig.subfigures(2, 1, height_ratios=[3.2, 1.3 * len(methods)])
        ax = sub[0].subplots()
    for i, m in enumerate(methods):
        rows = table[table["method"] == m]
        ax.errorbar(range(len(rows)), rows["spearman"], yerr=rows["spearman_std"], marker="o", capsize=3,
                    label=_title(m), color=f"C{i}")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(range(len(steps)), steps, rotation=20, fontsize=8)
    ax.set(ylabel="Spearman rank correlation", ylim=(-0.3, 1.05), title="model randomization (cascading, top first)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if maps is not None:
        cols = ["trained", *steps]
        axes = sub[1].subplots(len(methods), len(cols), squeeze=False)
        for r, m in enumerate(methods):
            for c, step in enumerate(cols):
                hm = maps[step][m][index]
                axes[r, c].imshow(overlay_rgb(image, hm, alpha=0.6) if image is not None else hm)
                clean_axes(axes[r, c])
                if r == 0:
                    axes[r, c].set_title(step, fontsize=7)
            axes[r, 0].set_ylabel(_title(m), fontsize=7, rotation=0, ha="right", va="center")
    return fig


def surrogate_tree(surrogate, *, max_depth: int | None = 3, fontsize: int = 6) -> Figure:
    """The surrogate tree drawn by scikit-learn (top ``max_depth`` levels; ``None`` for all)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from sklearn.tree import plot_tree

    shown = min(surrogate.depth, max_depth) if max_depth else surrogate.depth
    width = min(40, 2.2 * 2 ** shown)
    fig = Figure(figsize=(width, 1.8 * (shown + 1)), layout="constrained")
    FigureCanvasAgg(fig)  # plot_tree measures its text boxes with the canvas's renderer
    ax = fig.subplots()
    plot_tree(surrogate.tree, feature_names=surrogate.feature_names, class_names=surrogate.class_names,
              max_depth=max_depth, filled=True, impurity=False, proportion=True, fontsize=fontsize, ax=ax)
    ax.set_title(f"surrogate tree: depth {surrogate.depth}, {surrogate.leaves} leaves, fidelity "
                 f"{100 * surrogate.fidelity:.1f} % on held-out images" + (f" (top {shown} levels shown)"
                                                                           if shown < surrogate.depth else ""))
    return fig


def surrogate_regions(surrogate, image: np.ndarray | None = None, *, top: int = 8) -> Figure:
    """The regions the surrogate tree uses, on the image grid: fine-grid importance as a heatmap
    (left) and the ``top`` most important regions as rectangles over an image (right)."""
    from matplotlib.patches import Rectangle

    if not surrogate.regions:
        raise ValueError("this surrogate has no image regions (it was fitted on tabular features)")
    imp = surrogate.tree.feature_importances_
    regs = surrogate.regions
    h = max(r.r1 for r in regs)
    w = max(r.c1 for r in regs)
    grid = np.zeros((h, w))
    for r, v in zip(regs, imp):  # spread each feature's importance over its pixels
        grid[r.r0:r.r1, r.c0:r.c1] += v / ((r.r1 - r.r0) * (r.c1 - r.c0))
    fig = Figure(figsize=(8.4, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    im = ax1.imshow(grid, cmap="magma")
    ax1.set_title("tree importance per pixel (summed over regions)", fontsize=8)
    fig.colorbar(im, ax=ax1, shrink=0.8)
    ax2.imshow(_gray(image) if image is not None else np.zeros((h, w)), cmap="gray", vmin=0, vmax=1)
    order = [i for i in np.argsort(-imp)[:top] if imp[i] > 0]
    for rank, i in enumerate(order):
        r = regs[i]
        colour = f"C{rank % 10}"
        ax2.add_patch(Rectangle((r.c0 - 0.5, r.r0 - 0.5), r.c1 - r.c0, r.r1 - r.r0, fill=False, lw=2, ec=colour,
                                ls="-" if r.stat == "mean" else "--"))
        ax2.text(r.c0, r.r0 + 0.8, str(rank + 1), color=colour, fontsize=8, weight="bold")
    ax2.set_title(f"top {len(order)} regions (solid: mean intensity, dashed: ink share)", fontsize=8)
    for ax in (ax1, ax2):
        clean_axes(ax)
    return fig


def region_importance(importance: np.ndarray, class_names: Sequence[str], *, mean_images: np.ndarray | None = None,
                      columns: int = 5) -> Figure:
    """Per-class share of attribution per region (from :func:`influence.region_importance`), one
    panel per class, optionally over the class's mean image."""
    k = len(class_names)
    rows = int(np.ceil(k / columns))
    fig = Figure(figsize=(2.0 * columns, 2.1 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    vmax = np.nanmax(importance) if np.isfinite(importance).any() else 1
    for c in range(k):
        ax = axes[c]
        if mean_images is not None:
            h, w = np.asarray(mean_images[c]).shape[:2]
            ax.imshow(_gray(mean_images[c]), cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0))
            im = ax.imshow(importance[c], cmap="jet", alpha=0.55, vmin=0, vmax=vmax, extent=(0, w, h, 0))
        else:
            im = ax.imshow(importance[c], cmap="jet", vmin=0, vmax=vmax)
        ax.set_title(class_names[c][:14], fontsize=8)
        clean_axes(ax)
    for ax in axes[k:]:
        ax.set_visible(False)
    fig.colorbar(im, ax=list(axes[:k]), shrink=0.7, label="share of attribution")
    return fig


def feature_bars(table, *, column: str = "mean |attr|", title: str = "") -> Figure:
    """Horizontal bars of a per-feature table (from :mod:`influence`), largest on top."""
    t = table.sort_values(column)
    fig = Figure(figsize=(6.5, 0.28 * len(t) + 1.0), layout="constrained")
    ax = fig.subplots()
    ax.barh(list(t.index), t[column], xerr=t["std"] if "std" in t and column == "accuracy drop" else None,
            color="C0")
    ax.set(xlabel=column, title=title)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


def localization_examples(images: np.ndarray, heatmaps: np.ndarray, masks: np.ndarray, *, count: int = 8) -> Figure:
    """Heatmaps on images with a known answer: the patch outlined, the heatmap peak marked."""
    n = min(count, len(images))
    fig = Figure(figsize=(1.5 * n, 1.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i in range(n):
        ax = axes[i]
        ax.imshow(overlay_rgb(images[i], heatmaps[i], alpha=0.5))
        ax.contour(masks[i].astype(float), levels=[0.5], colors="white", linewidths=1)
        r, c = np.unravel_index(np.argmax(heatmaps[i]), heatmaps[i].shape)
        ax.plot(c, r, "x", color="white", ms=7, mew=2)
        clean_axes(ax)
    return fig
