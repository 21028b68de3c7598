"""Drawing explanations: matplotlib ``Figure`` objects (no pyplot state), plus the RGB overlay
array that both the figures and the explorer widget use. Nothing here computes an explanation.

Over 400 lines because it is the one figure module of :mod:`lepton_nb.explain` (each package's
figures live in its ``plotting.py``): one function per figure of notebooks 05 and 06, none shared
with another package.
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import matplotlib
import numpy as np

from lepton_nb.plotting import Figure, class_grid, clean_axes

__all__ = [
    "METHOD_TITLES",
    "activation_grid",
    "faithfulness",
    "feature_bars",
    "frontier",
    "gradcam_per_class",
    "influence_validation",
    "localization_examples",
    "methods_side_by_side",
    "overlay_rgb",
    "picture_tree",
    "randomization",
    "region_importance",
    "right_wrong_titles",
    "surrogate_tree",
    "training_influence",
]

METHOD_TITLES = {"gradcam": "Grad-CAM", "hirescam": "HiResCAM", "gradcampp": "Grad-CAM++",
                 "integrated_gradients": "integrated gradients", "smoothgrad": "SmoothGrad", "squaregrad": "SquareGrad",
                 "vargrad": "VarGrad", "vanilla_gradients": "gradients", "occlusion": "occlusion", "rise": "RISE",
                 "lime": "LIME", "kernelshap": "KernelSHAP", "sobol": "Sobol", "random": "random (control)",
                 "input": "input as map (control)", "constant": "constant map (control)", "activation": "activation"}


#: distinct colours for up to 16 methods (tab20 without its greys, which the controls use)
_COLOURS = [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i not in (14, 15)]


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


def right_wrong_titles(indices: Sequence[int], y_true: Sequence[int], y_pred: Sequence[int],
                       class_names: Sequence[str]) -> list[str]:
    """Row labels "right: Coat" / "wrong: Shirt\\n(pred. Coat)" for the examples at ``indices``
    (e.g. those :func:`lepton_nb.metrics.right_and_wrong` picked)."""
    out = []
    for i in indices:
        t, p = int(y_true[i]), int(y_pred[i])
        out.append(f"right: {class_names[t][:12]}" if t == p else
                   f"wrong: {class_names[t][:12]}\n(pred. {class_names[p][:12]})")
    return out


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
            if i == 0:  # wrapped: a column is 1.45 inches wide ("DP-FedAvg CNN (eps 7.6)" ran into its neighbour)
                axes[i, j].set_title(textwrap.fill(_title(name), 16), fontsize=8)
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


def localization_examples(images: np.ndarray, maps: Mapping[str, np.ndarray], boxes: np.ndarray, *,
                          count: int = 6) -> Figure:
    """Rows: methods; columns: images with a known answer. The decisive box outlined in white,
    each map's peak marked with a cross (white inside the box, red outside)."""
    n = min(count, len(images))
    names = list(maps)
    fig = Figure(figsize=(1.35 * n + 1.6, 1.35 * len(names) + 0.2), layout="constrained")
    axes = fig.subplots(len(names), n, squeeze=False)
    for r, name in enumerate(names):
        for i in range(n):
            ax = axes[r, i]
            m = np.asarray(maps[name][i], np.float64)
            span = m.max() - m.min()
            ax.imshow(overlay_rgb(images[i], (m - m.min()) / span if span > 0 else np.zeros_like(m), alpha=0.5))
            ax.contour(boxes[i].astype(float), levels=[0.5], colors="white", linewidths=0.8)
            pr, pc = np.unravel_index(np.argmax(m), m.shape)
            ax.plot(pc, pr, "x", color="white" if boxes[i][pr, pc] else "red", ms=6, mew=2)
            clean_axes(ax)
        axes[r, 0].set_ylabel(_title(name), fontsize=7, rotation=0, ha="right", va="center")
    return fig


def faithfulness(table, *, value: str = "deletion") -> Figure:
    """Deletion AUC (x, lower is better) against insertion AUC (y, higher is better) of every
    method at every fill, with standard errors; the controls in grey, faithful methods filled.

    Args:
        table: from :func:`lepton_nb.explain.faithfulness.faithfulness_table`.
    """
    fills = list(dict.fromkeys(table["fill"]))
    fig = Figure(figsize=(4.2 * len(fills), 4.4), layout="constrained")
    axes = fig.subplots(1, len(fills), squeeze=False)[0]
    methods = [m for m in dict.fromkeys(table["method"]) if m not in ("random", "input")]
    for ax, fill in zip(axes, fills):
        t = table[table["fill"] == fill].set_index("method")
        for ctl, marker in (("random", "s"), ("input", "D")):
            r = t.loc[ctl]
            ax.errorbar(r["deletion"], r["insertion"], xerr=r["deletion_se"], yerr=r["insertion_se"], marker=marker,
                        color="0.45", ms=7, capsize=2, label=_title(ctl))
            ax.axvline(r["deletion"], color="0.6", lw=0.7, ls="--")
            ax.axhline(r["insertion"], color="0.6", lw=0.7, ls="--")
        for i, m in enumerate(methods):
            r = t.loc[m]
            colour = _COLOURS[i % len(_COLOURS)]
            ax.errorbar(r["deletion"], r["insertion"], xerr=r["deletion_se"], yerr=r["insertion_se"],
                        marker="os^D"[i // len(_COLOURS) % 4], ms=6, capsize=2, color=colour,
                        mfc=colour if r["faithful"] else "white", label=_title(m))
        ax.set(xlabel="deletion AUC (lower = better)", ylabel="insertion AUC (higher = better)",
               title=f"fill: {fill} (filled = beats both controls)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def randomization(table, maps: Mapping[str, Mapping[str, np.ndarray]] | None = None, *, image: np.ndarray | None = None,
                  index: int = 0, judged_on: Mapping[str, str] | None = None) -> Figure:
    """Similarity to the trained model's maps (foreground) at each step of the cascade (Adebayo et
    al. 2018, fig. 2), the trained-vs-trained level first; with ``maps``, example ``index``'s maps
    (|map|, each scaled to its maximum; not for the controls).

    Args:
        table: from :func:`lepton_nb.explain.sanity.cascade`.
        judged_on: similarity column per method (default: :data:`lepton_nb.explain.sanity.JUDGED_ON`).
    """
    from lepton_nb.explain.sanity import JUDGED_ON

    judged_on = judged_on or JUDGED_ON
    steps = list(dict.fromkeys(table["step"]))
    methods = list(dict.fromkeys(table["method"]))
    shown = [m for m in methods if m not in ("input", "constant", "random")]  # the controls' maps are known
    if maps is None:
        fig = Figure(figsize=(7.5, 3.8), layout="constrained")
        ax = fig.subplots()
    else:
        fig = Figure(figsize=(max(8.0, 1.25 * (len(steps) + 1) + 1.5), 3.8 + 1.1 * len(shown)), layout="constrained")
        sub = fig.subfigures(2, 1, height_ratios=[3.8, 1.1 * len(shown)])
        ax = sub[0].subplots()
    for i, m in enumerate(methods):
        rows = table[table["method"] == m].set_index("step").loc[steps]
        key = judged_on.get(m, "spearman_signed")
        ls = ":" if m in ("random", "input", "constant") else "-"
        ax.errorbar(range(len(steps)), rows[key], yerr=rows[key + "_se"], marker="o", capsize=3, ls=ls, color=f"C{i % 10}",
                    label=f"{_title(m)} ({key.replace('spearman_', '').replace('abs', '|map|')})")
    ax.axhline(0, color="gray", lw=0.8)
    ax.axvspan(-0.4, 0.4, color="0.9", zorder=0)
    ax.set_xticks(range(len(steps)), [s.replace(" (", "\n(") for s in steps], fontsize=7)
    ax.set(ylabel="Spearman on the foreground", ylim=(-0.3, 1.05),
           title="cascading randomization: the grey column is two independently trained models")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    if maps is not None:
        cols = ["trained", *steps]
        axes = sub[1].subplots(len(shown), len(cols), squeeze=False)
        for r, m in enumerate(shown):
            for c, step in enumerate(cols):
                hm = np.abs(np.asarray(maps[step][m][index], np.float64))
                hm = hm / hm.max() if hm.max() > 0 else hm
                axes[r, c].imshow(overlay_rgb(image, hm, alpha=0.6) if image is not None else hm)
                clean_axes(axes[r, c])
                if r == 0:
                    axes[r, c].set_title(step.split(" (")[0], fontsize=7)
            axes[r, 0].set_ylabel(_title(m), fontsize=7, rotation=0, ha="right", va="center")
    return fig


def training_influence(image: np.ndarray, title: str, ranking: Mapping, x_train: np.ndarray, y_train: np.ndarray,
                       class_names: Sequence[str]) -> Figure:
    """A test image (left) and the training images each influence method ranks most helpful and
    most harmful for it (from :func:`lepton_nb.explain.influence.explain_predictions`), each
    captioned with its training label and score."""
    rows = [(f"{kind} ({method})", ranking[method][kind], ranking["scores"][method])
            for method in ("IF", "TracIn") for kind in ("helpful", "harmful")]
    k = max(len(r[1]) for r in rows)
    fig = Figure(figsize=(1.25 * (k + 1) + 1.3, 1.4 * len(rows) + 0.2), layout="constrained")
    axes = fig.subplots(len(rows), k + 1, squeeze=False)
    for r, (label, idx, scores) in enumerate(rows):
        for c in range(k + 1):
            clean_axes(axes[r, c])
        axes[r, 0].set_visible(r == 0)
        for c, i in enumerate(idx, start=1):
            axes[r, c].imshow(_gray(x_train[i]), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_title(f"{class_names[int(y_train[i])][:11]}\n{scores[i]:+.2g}", fontsize=6)
        axes[r, 1].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    axes[0, 0].imshow(_gray(image), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(title, fontsize=7)
    return fig


def influence_validation(rows: Sequence[Mapping], *, predicted: str = "predicted", title: str = "") -> Figure:
    """Predicted (x) against actual (y) change of the test loss for each removed set, by set kind."""
    fig = Figure(figsize=(5.2, 4.0), layout="constrained")
    ax = fig.subplots()
    kinds = list(dict.fromkeys(r["set"] for r in rows))
    for i, kind in enumerate(kinds):
        pts = [(r[predicted], r["actual"]) for r in rows if r["set"] == kind]
        ax.scatter(*zip(*pts), label=kind, color=f"C{i}", s=28)
    lim = [min(min(r[predicted], r["actual"]) for r in rows), max(max(r[predicted], r["actual"]) for r in rows)]
    ax.plot(lim, lim, color="gray", lw=0.8, ls="--", label="predicted = actual")
    ax.axhline(0, color="0.7", lw=0.6)
    ax.set(xlabel="predicted change of the test loss", ylabel="actual change after retraining", title=title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def frontier(table, *, goal: tuple[int, float] | None = (64, 0.95)) -> Figure:
    """Held-out fidelity against the number of leaves, one line per (features, variant), with the
    95 % interval of each point; ``goal`` (leaves, fidelity) marked."""
    fig = Figure(figsize=(7.8, 4.4), layout="constrained")
    ax = fig.subplots()
    styles = {"readable": "-", "penultimate": "--", "pixels": ":"}
    for i, ((feat, variant), g) in enumerate(table.groupby(["features", "variant"], sort=False)):
        g = g.sort_values("leaves")
        lo = g["fidelity"] - [c[0] for c in g["ci95"]]
        hi = [c[1] for c in g["ci95"]] - g["fidelity"]
        ax.errorbar(g["leaves"], 100 * g["fidelity"], yerr=100 * np.vstack([lo, hi]), marker="o", ms=4, capsize=2,
                    ls=styles.get(feat, "-"), color=f"C{i % 10}", label=f"{feat}: {variant}")
    if goal:
        ax.plot([goal[0]], [100 * goal[1]], marker="*", ms=14, color="gold", mec="k", ls="none",
                label=f"goal: {100 * goal[1]:.0f} % at {goal[0]} leaves")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="leaves", ylabel="fidelity on held-out images (%)", title="how well a tree of each size mimics the CNN")
    ax.legend(fontsize=6, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def _feature_picture(ax, feature, image: np.ndarray, colour: str = "#ff3b30") -> None:
    from matplotlib.patches import FancyArrowPatch, Rectangle

    ax.imshow(_gray(image), cmap="gray", vmin=0, vmax=1)
    (r0, r1), (c0, c1) = feature.rows, feature.cols
    if feature.kind in ("region", "row_band", "col_band", "runs", "area", "intensity"):
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=True, fc=colour, alpha=0.3, ec=colour, lw=1.5))
    elif feature.kind in ("height", "width"):
        start, end = ((13.5, 1), (13.5, 26)) if feature.kind == "height" else ((1, 13.5), (26, 13.5))
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="<->", mutation_scale=8, color=colour, lw=1.5))
    elif feature.kind == "symmetry":
        ax.axvline(13.5, color=colour, lw=1.5, ls="--")
    else:  # centre of mass
        ax.axhline(13.5, color=colour, lw=1, ls=":") if feature.kind == "centre_row" else ax.axvline(13.5, color=colour,
                                                                                                      lw=1, ls=":")
        ax.plot([13.5], [13.5], "o", color=colour, ms=4)
    clean_axes(ax)


def picture_tree(distilled, class_names: Sequence[str], *, depth: int = 3) -> Figure:
    """The top ``depth`` levels of a distilled tree (:func:`lepton_nb.explain.surrogate.distill`)
    as pictures: each split shows the mean held-out image reaching it with the feature it tests
    highlighted (a square, a band, an arrow), and the rule in words; each node below the drawn
    levels shows the mean image, the CNN's majority class there and the share of images."""
    from matplotlib.lines import Line2D

    from lepton_nb.explain.surrogate import FEATURES, readable_features

    tree = distilled.tree.tree_
    x, pred = distilled.x_test, distilled.model_pred_test
    path = distilled.tree.decision_path(readable_features(x)).toarray().astype(bool)
    nodes, edges = [], []

    def walk(node: int, level: int, pos: float, width: float) -> None:
        nodes.append((node, level, pos))
        if level < depth and tree.children_left[node] != -1:
            for child, sign in ((tree.children_left[node], -1), (tree.children_right[node], 1)):
                edges.append((node, child))
                walk(child, level + 1, pos + sign * width / 4, width / 2)

    walk(0, 0, 0.5, 1.0)
    levels = depth + 1
    fig = Figure(figsize=(max(8.0, 1.9 * 2 ** depth), 2.3 * levels), layout=None)
    w = min(0.75 / 2 ** depth, 0.12)  # axes width, figure fraction
    h = w * fig.get_figwidth() / fig.get_figheight()  # square axes
    title_h = 0.35 / fig.get_figheight()  # two lines of 6-point text, figure fraction
    first, last = 0.93 - title_h, 0.01 + h  # top edges of the first and last level's pictures
    where = {}
    for node, level, pos in nodes:
        top = first - level * (first - last) / max(depth, 1)
        ax = fig.add_axes((pos - w / 2, top - h, w, h))
        reach = path[:, node]
        mean = x[reach].mean(axis=0) if reach.any() else np.zeros(x.shape[1:])
        where[node] = (pos, top)
        leaf = tree.children_left[node] == -1 or level == depth
        if not leaf:
            f = FEATURES[tree.feature[node]]
            _feature_picture(ax, f, mean)
            ax.set_title(f"{f.name}\n<= {tree.threshold[node]:.2f}: left, else right", fontsize=6)
        else:
            ax.imshow(_gray(mean), cmap="gray", vmin=0, vmax=1)
            clean_axes(ax)
            if reach.any():
                counts = np.bincount(pred[reach], minlength=len(class_names))
                c = int(counts.argmax())
                ax.set_title(f"{class_names[c][:12]}\n{100 * counts[c] / reach.sum():.0f} % of {int(reach.sum())}",
                             fontsize=6)
    for a, b in edges:
        (xa, ya), (xb, yb) = where[a], where[b]
        fig.add_artist(Line2D([xa, xb], [ya - h - 0.005, yb + title_h + 0.005], color="0.5", lw=0.8,
                              transform=fig.transFigure))
    r = distilled.report
    fig.suptitle(f"surrogate tree ({distilled.variant}, {distilled.leaves} leaves; top {depth} levels drawn): agrees "
                 f"with the CNN on {100 * r['fidelity']:.1f} % of held-out images "
                 f"[{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]", fontsize=9)
    return fig
