"""The explorer: pick an image (or only the misclassified ones), a method, the target class
(predicted, true or any), a layer and the overlay alpha; see the image, the heatmap and the class
probabilities, updated in place.

The logic (:class:`ExplorerModel`) is plain Python and NumPy, tested without a browser; the
ipywidgets front end (:class:`Explorer`, :func:`explorer`) imports ipywidgets only when built.
Speed: probabilities of all images come from one batched call at start; each heatmap request
computes the maps of **all classes** of an image in one batched call (so switching the target
class costs nothing) and keeps them in an LRU cache; :meth:`ExplorerModel.prefetch` fills the cache
for many images in one call. Images are drawn as PNGs straight from arrays (no matplotlib figure
per update). Every update's kernel time is kept in :attr:`Explorer.timings`, marked "cold" (a
heatmap was computed) or "cached"; tests/test_browser.py times the same updates in the browser,
from the control change to the new image drawn. The black-box methods (occlusion, RISE, LIME,
KernelSHAP, Sobol) query the model hundreds of times per class: their cold updates take seconds.
"""

from __future__ import annotations

import io
import time
from collections import OrderedDict
from typing import Sequence

import numpy as np

__all__ = ["Explorer", "ExplorerModel", "explorer", "png_bytes"]

TARGETS = ("predicted", "true", "class")
EXPLORER_METHODS = ("gradcam", "hirescam", "gradcampp", "integrated_gradients", "vanilla_gradients", "smoothgrad",
                    "squaregrad", "vargrad", "occlusion", "rise", "lime", "kernelshap", "sobol", "activation")
_LAYERED = {"gradcam", "hirescam", "gradcampp", "activation"}


def png_bytes(rgb: np.ndarray, *, scale: int = 8) -> bytes:
    """PNG of a uint8 (H, W, 3) or (H, W) array, enlarged ``scale`` times (nearest neighbour)."""
    from PIL import Image

    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    if scale > 1:
        a = a.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class ExplorerModel:
    """The explorer's state-free logic: data, cached heatmaps and the view of one choice.

    Args:
        model: a Keras logits image model.
        images: (N, H, W, C) images in [0, 1]; labels: true classes (N,).
        class_names: one name per class.
        methods: method names offered (``EXPLORER_METHODS`` by default; "activation" shows the mean
            activation of the chosen layer).
        attribution: a :class:`lepton_nb.explain.settings.AttributionConfig` (steps, samples, patch).
        cache_size: heatmap sets (one image x one method x one layer, all classes) kept.
    """

    def __init__(self, model, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                 methods: Sequence[str] = EXPLORER_METHODS, attribution=None, cache_size: int = 512):
        from lepton_nb.explain import _common
        from lepton_nb.explain.settings import AttributionConfig

        self.model = model
        self.x = _common.as_batch(model, images)
        if self.x.ndim != 4:
            raise ValueError("the explorer shows images: pass (N, H, W, C) inputs")
        self.labels = np.asarray(labels).astype(int)
        if self.labels.shape != (len(self.x),):
            raise ValueError(f"need one label per image: {len(self.x)} images, labels of shape {self.labels.shape}")
        self.class_names = list(class_names)
        self.num_classes = int(model.output_shape[-1])
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a model with {self.num_classes} outputs")
        unknown = set(methods) - set(EXPLORER_METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {EXPLORER_METHODS}")
        self.methods = list(methods)
        self.attribution = attribution or AttributionConfig()
        self.probs = _common.softmax(_common.predict_logits(model, self.x))
        self.pred = self.probs.argmax(axis=1)
        self.layers = _common.conv_layer_names(model)
        self.default_layer = _common.default_layer(model) if self.layers else None
        self.cache_size = cache_size
        self._cache: OrderedDict = OrderedDict()
        self.stats = {"hits": 0, "misses": 0, "batched_calls": 0}

    # -------------------------------------------------------------------------------- choices

    def indices(self, only_misclassified: bool = False) -> np.ndarray:
        """Image indices offered: all, or those the model gets wrong."""
        return np.flatnonzero(self.pred != self.labels) if only_misclassified else np.arange(len(self.x))

    def target(self, index: int, mode: str = "predicted", class_index: int | None = None) -> int:
        """The class explained: the predicted one, the true one, or ``class_index``."""
        if mode == "predicted":
            return int(self.pred[index])
        if mode == "true":
            return int(self.labels[index])
        if mode == "class":
            if class_index is None or not 0 <= class_index < self.num_classes:
                raise ValueError(f"class_index={class_index}: give a class in 0..{self.num_classes - 1}")
            return int(class_index)
        raise ValueError(f"target mode {mode!r}: choose one of {TARGETS}")

    def _key(self, index: int, method: str, layer: str | None):
        if method not in self.methods:
            raise ValueError(f"method {method!r} is not offered; choose one of {self.methods}")
        if method in _LAYERED:
            layer = layer or self.default_layer
            if layer not in self.layers:
                raise ValueError(f"layer {layer!r}: choose one of {self.layers}")
            return int(index), method, layer
        return int(index), method, None

    # ----------------------------------------------------------------------------- computation

    def _compute(self, indices: np.ndarray, method: str, layer: str | None) -> np.ndarray:
        """Heatmaps (len(indices), K, H, W) in [0, 1], in one batched call."""
        from lepton_nb.explain import attribution as attr

        self.stats["batched_calls"] += 1
        x = self.x[indices]
        n, k = len(x), self.num_classes
        h, w = x.shape[1:3]
        if method == "occlusion":
            maps = attr.occlusion_all_classes(self.model, x, **self.attribution.options("occlusion"))
            return attr.to_heatmap(maps.reshape(n * k, h, w), "positive").reshape(n, k, h, w)
        if method == "activation":
            hm = attr.activation_heatmap(self.model, x, layer)
            return np.repeat(hm[:, None], k, axis=1)
        rep = np.repeat(x, k, axis=0)
        classes = np.tile(np.arange(k, dtype=np.int32), n)
        opts = dict(self.attribution.options(method))
        if method in ("gradcam", "hirescam"):
            opts["layer_name"] = layer
        elif method == "gradcampp":
            opts["conv_layer"] = layer
        return attr.heatmaps(self.model, rep, method, classes, **opts).reshape(n, k, h, w)

    def _store(self, key, maps: np.ndarray) -> None:
        self._cache[key] = maps
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def class_maps(self, index: int, method: str, layer: str | None = None) -> np.ndarray:
        """Heatmaps of image ``index`` for every class, (K, H, W) in [0, 1], cached."""
        key = self._key(index, method, layer)
        if key in self._cache:
            self.stats["hits"] += 1
            self._cache.move_to_end(key)
            return self._cache[key]
        self.stats["misses"] += 1
        maps = self._compute(np.array([key[0]]), method, key[2])[0]
        self._store(key, maps)
        return maps

    def prefetch(self, indices: Sequence[int], method: str, layer: str | None = None) -> int:
        """Compute the missing heatmaps of ``indices`` in one batched call; returns how many."""
        keys = [self._key(i, method, layer) for i in indices]
        todo = [k for k in keys if k not in self._cache]
        if todo:
            maps = self._compute(np.array([k[0] for k in todo]), method, todo[0][2])
            for k, m in zip(todo, maps):
                self._store(k, m)
        return len(todo)

    def view(self, index: int, method: str = "gradcam", target: str = "predicted", class_index: int | None = None,
             layer: str | None = None, alpha: float = 0.5) -> dict:
        """Everything one update shows.

        Returns:
            dict with ``image`` (H, W, 3) uint8, ``overlay`` (H, W, 3) uint8, ``heatmap`` (H, W),
            ``probs`` (K,), ``target``, ``pred``, ``label`` and a one-line ``caption``.
        """
        from lepton_nb.explain.plotting import overlay_rgb

        if not 0 <= index < len(self.x):
            raise ValueError(f"index {index}: choose an image in 0..{len(self.x) - 1}")
        t = self.target(index, target, class_index)
        hm = self.class_maps(index, method, layer)[t]
        img = self.x[index]
        gray = (np.clip(img.mean(axis=-1), 0, 1) * 255).round().astype(np.uint8)
        names = self.class_names
        caption = (f"image {index}: true {names[self.labels[index]]}, predicted {names[self.pred[index]]} "
                   f"({100 * self.probs[index, self.pred[index]]:.1f} %); {method} for class {names[t]}")
        return {"image": np.repeat(gray[..., None], 3, axis=-1), "overlay": overlay_rgb(img, hm, alpha=alpha),
                "heatmap": hm, "probs": self.probs[index], "target": t, "pred": int(self.pred[index]),
                "label": int(self.labels[index]), "caption": caption}


def _prob_html(probs: np.ndarray, names: Sequence[str], target: int, label: int) -> str:
    rows = []
    for c, (p, name) in enumerate(zip(probs, names)):
        colour = "#d9534f" if c == target else "#5b8def"
        mark = " ✓" if c == label else ""
        weight = "bold" if c == target else "normal"
        rows.append(f"<tr><td style='font-weight:{weight};padding-right:6px'>{name}{mark}</td>"
                    f"<td style='width:160px'><div style='background:{colour};height:10px;width:{100 * p:.1f}%'>"
                    f"</div></td><td style='text-align:right'>{100 * p:.1f} %</td></tr>")
    return "<table style='font-size:12px'>" + "".join(rows) + "</table>"


class Explorer:
    """The ipywidgets front end of an :class:`ExplorerModel`; display ``explorer.ui``.

    Every control change calls :meth:`update`, which redraws in place and records its duration in
    ``last_update_ms``.
    """

    def __init__(self, logic: ExplorerModel, *, scale: int = 8):
        import ipywidgets as W

        self.logic = logic
        self.scale = scale
        self.misclassified = W.Checkbox(value=False, description="only misclassified")
        self.position = W.IntSlider(value=0, min=0, max=max(len(logic.x) - 1, 0), description="image")
        self.method = W.Dropdown(options=logic.methods, value=logic.methods[0], description="method")
        self.target = W.ToggleButtons(options=list(TARGETS), value="predicted", description="target")
        self.class_index = W.Dropdown(options=[(n, i) for i, n in enumerate(logic.class_names)], value=0,
                                      description="class", disabled=True)
        self.layer = W.Dropdown(options=logic.layers or ["-"], value=logic.default_layer or "-", description="layer")
        self.alpha = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="alpha")
        self.image = W.Image(format="png")
        self.overlay = W.Image(format="png")
        self.probs = W.HTML()
        self.caption = W.HTML()
        self.last_update_ms = float("nan")
        self.timings: list[dict] = []
        self._indices = logic.indices(False)
        controls = W.VBox([self.misclassified, self.position, self.method, self.target, self.class_index, self.layer,
                           self.alpha])
        self.ui = W.VBox([W.HBox([controls, W.VBox([W.HBox([self.image, self.overlay]), self.probs])]), self.caption])
        self.misclassified.observe(self._on_filter, names="value")
        for w in (self.position, self.method, self.target, self.class_index, self.layer, self.alpha):
            w.observe(lambda change: self.update(), names="value")
        self.update()

    @property
    def index(self) -> int | None:
        """The image shown (an index into the explorer's images), ``None`` when none is offered."""
        return int(self._indices[self.position.value]) if len(self._indices) else None

    def _on_filter(self, change) -> None:
        self._indices = self.logic.indices(bool(change["new"]))
        with self.position.hold_trait_notifications():
            self.position.value = 0
            self.position.max = max(len(self._indices) - 1, 0)
        self.update()

    def update(self) -> dict | None:
        """Redraw for the current controls; returns the view shown (``None`` if no image).

        Appends ``{"ms", "kind" ("cold" or "cached"), "method"}`` to :attr:`timings`.
        """
        t0 = time.perf_counter()
        misses = self.logic.stats["misses"]
        self.class_index.disabled = self.target.value != "class"
        self.layer.disabled = self.method.value not in _LAYERED or not self.logic.layers
        if self.index is None:
            self.caption.value = "<i>no image matches the filter</i>"
            self.image.value = self.overlay.value = b""
            self.probs.value = ""
            return None
        v = self.logic.view(self.index, self.method.value, self.target.value, self.class_index.value,
                            self.layer.value if self.logic.layers else None, self.alpha.value)
        self.image.value = png_bytes(v["image"], scale=self.scale)
        self.overlay.value = png_bytes(v["overlay"], scale=self.scale)
        self.probs.value = _prob_html(v["probs"], self.logic.class_names, v["target"], v["label"])
        self.caption.value = v["caption"]
        self.last_update_ms = 1000 * (time.perf_counter() - t0)
        self.timings.append({"ms": self.last_update_ms, "method": self.method.value,
                             "kind": "cold" if self.logic.stats["misses"] > misses else "cached"})
        return v

    def _ipython_display_(self):  # pragma: no cover - needs a front end
        from IPython.display import display

        display(self.ui)


def explorer(model, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], **options) -> Explorer:
    """Build the explorer widget (display the returned object as a notebook cell's last value).

    ``options`` go to :class:`ExplorerModel` (``methods``, ``attribution``, ``cache_size``).
    """
    return Explorer(ExplorerModel(model, images, labels, class_names, **options))
