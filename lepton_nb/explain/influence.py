"""Training-data influence: which training images made a prediction (not feature importance, which
is :mod:`lepton_nb.explain.importance`).

- **Influence functions** (Koh & Liang 2017, "Understanding Black-box Predictions via Influence
  Functions", ICML) on the **last layer**: the CNN's penultimate features ``h`` (the input of its
  ``logits`` layer) are held fixed and the logits layer ``theta = [W; b]`` ((d+1) x K numbers,
  1,290 for d = 128, K = 10) is refitted as an L2-damped multinomial logistic regression, a convex
  problem whose Hessian is formed and solved exactly (Cholesky). Removing training example z
  changes the test loss by about ``(1/n) g_test^T H^-1 g_z``.
- **TracIn** (Pruthi et al. 2020, "Estimating Training Data Influence by Tracing Gradient
  Descent", NeurIPS), TracInCP over the checkpoints saved while training
  (``lepton_nb.training.train(..., checkpoint_dir=...)``): ``sum_c lr g(z; theta_c) . g(z'; theta_c)``
  with last-layer gradients at each checkpoint. Self-influence ``sum_c lr |g(z; theta_c)|^2``.

Sign convention of both: **positive = helpful** (removing the training image would raise the test
loss; a proponent), negative = harmful. Both use only the closed-form per-example last-layer
gradient ``(p - e_y) (x) [h; 1]`` (no per-example back-propagation through the network, about 20x
cheaper here than full gradients). Last-layer influence is exact for the last layer and only
indicative for the whole network (Basu et al. 2021, "Influence Functions in Deep Learning Are
Fragile"): :func:`refit_validation` checks it against exact refits of the last layer and
:func:`retrain_validation` against retraining the whole CNN, each beside removing random images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["LastLayerIF", "checkpoint_dir", "checkpoint_paths", "explain_predictions", "features", "flip_labels",
           "last_layer_grads", "mislabel_detection", "ranking", "refit_validation", "retrain_validation", "top_influences",
           "tracin"]


def features(model, x: np.ndarray, *, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features (N, d) -- the input of the layer named ``logits`` -- and logits (N, K),
    in inference mode, float64."""
    import tensorflow as tf

    from lepton_nb.explain import _common

    try:
        head = model.get_layer("logits")
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer named 'logits' (every lepton_nb.models builder names "
                         "its last Dense layer so); last-layer influence needs it") from None

    def build():
        sub = tf.keras.Model(model.inputs, [head.input, model.output])
        return tf.function(lambda a: sub(a, training=False), input_signature=[_common.input_spec(model)])

    run = _common.compiled(model, "penultimate", build)
    hs, ls = zip(*[(h.numpy(), lg.numpy()) for h, lg in (run(tf.constant(x[i:i + batch_size], tf.float32))
                                                          for i in range(0, len(x), batch_size))])
    return np.concatenate(hs).astype(np.float64), np.concatenate(ls).astype(np.float64)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _aug(h: np.ndarray) -> np.ndarray:
    return np.concatenate([h, np.ones((len(h), 1))], axis=1)


def last_layer_grads(h: np.ndarray, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example gradients of the cross-entropy w.r.t. the logits layer [W; b], (N, (d+1) K)."""
    p = _softmax(logits)
    p[np.arange(len(y)), y] -= 1.0
    return np.einsum("na,nk->nak", _aug(h), p).reshape(len(h), -1)


def checkpoint_paths(checkpoint_dir: str | Path, at_most: int | None = None) -> list[str]:
    """The ``epoch-NNN`` checkpoints of a run, oldest first; ``at_most`` spread evenly, the last kept."""
    found = sorted(str(p)[:-len(".index")] for p in Path(checkpoint_dir).glob("epoch-*.index"))
    if not found:
        raise ValueError(f"no epoch-NNN checkpoints in {checkpoint_dir}: train with "
                         "lepton_nb.training.train(..., checkpoint_dir=...)")
    if at_most is not None and len(found) > at_most:
        keep = np.unique(np.round(np.linspace(len(found) - 1, 0, at_most)).astype(int))
        found = [found[i] for i in sorted(keep)]
    return found


def tracin(model, checkpoints: Sequence[str], x_train, y_train, x_test, y_test, *, learning_rate: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """TracInCP with last-layer gradients (Pruthi et al. 2020).

    Args:
        model: a model of the trained architecture; each checkpoint's weights are loaded into a
            copy of it (``model`` itself is left unchanged).
        checkpoints: weight paths (:func:`checkpoint_paths`).
        learning_rate: the step size between checkpoints (TracIn's eta; Adam's learning rate).

    Returns:
        ``(influence (n_test, n_train), self_influence (n_train,))``, positive = helpful.
    """
    import tensorflow as tf

    if not checkpoints:
        raise ValueError("TracIn needs at least one checkpoint")
    copy = tf.keras.models.clone_model(model)
    inf = np.zeros((len(x_test), len(x_train)))
    selfi = np.zeros(len(x_train))
    for path in checkpoints:
        status = copy.load_weights(path)
        if hasattr(status, "expect_partial"):  # TF checkpoints also hold the optimizer's slots
            status.expect_partial()
        gtr = last_layer_grads(*features(copy, x_train), np.asarray(y_train))
        gte = last_layer_grads(*features(copy, x_test), np.asarray(y_test))
        inf += learning_rate * gte @ gtr.T  # a step on z lowers the test loss by about lr g_test . g_z
        selfi += learning_rate * (gtr ** 2).sum(axis=1)
    return inf, selfi


@dataclass
class LastLayerIF:
    """Exact influence functions of the refitted, damped logits layer on fixed features.

    Args:
        h: training features (n, d); y: training labels (n,); damping: lambda of the objective
            ``mean CE + lambda/2 |theta|^2`` (makes the Hessian positive definite).

    Call :meth:`fit` (from the CNN's own logits layer) before anything else.
    """

    h: np.ndarray
    y: np.ndarray
    damping: float = 1e-3
    theta: np.ndarray | None = None
    hess: np.ndarray | None = None
    _chol: tuple | None = field(default=None, repr=False)

    @classmethod
    def of_model(cls, model, x_train, y_train, *, damping: float = 1e-3) -> "LastLayerIF":
        """Fitted on ``model``'s penultimate features of ``x_train``, from its own logits layer."""
        h, _ = features(model, x_train)
        inf = cls(h, np.asarray(y_train), damping)
        w, b = model.get_layer("logits").get_weights()
        inf.fit(np.vstack([w, b[None]]))
        return inf

    def loss_grad(self, theta_flat: np.ndarray, h: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        th = theta_flat.reshape(h.shape[1] + 1, -1)
        z = _aug(h) @ th
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        loss = float((lse - z[np.arange(len(y)), y]).mean() + 0.5 * self.damping * (th ** 2).sum())
        p = np.exp(z - lse[:, None])
        p[np.arange(len(y)), y] -= 1
        return loss, (_aug(h).T @ p / len(y) + self.damping * th).ravel()

    def hessian(self, theta: np.ndarray, h: np.ndarray) -> np.ndarray:
        """The objective's exact Hessian at ``theta`` (d+1, K) on features ``h``: ((d+1) K)^2."""
        ha = _aug(h)
        p = _softmax(ha @ theta)
        n, d1 = ha.shape
        k = p.shape[1]
        hess = np.zeros((d1, k, d1, k))
        for a in range(k):
            for b in range(a, k):
                blk = ha.T @ ((p[:, a] * ((a == b) - p[:, b]))[:, None] * ha) / n
                hess[:, a, :, b] = blk
                hess[:, b, :, a] = blk.T
        return hess.reshape(d1 * k, d1 * k) + self.damping * np.eye(d1 * k)

    def fit(self, theta0: np.ndarray, *, mask: np.ndarray | None = None, tol: float = 1e-9, max_iter: int = 60
            ) -> np.ndarray:
        """Minimize the damped objective exactly (gradient max-norm below ``tol``).

        On all rows: Newton's method with the exact Hessian and backtracking (a few steps from the
        CNN's own logits layer); sets ``theta`` and ``hess``. With ``mask`` (a refit without some
        examples, from ``theta0`` near the optimum): chord steps with the full-data Hessian's
        Cholesky factor, Newton steps on the kept rows after 20 of them.
        """
        from scipy.linalg import cho_factor, cho_solve

        h, y = (self.h, self.y) if mask is None else (self.h[mask], self.y[mask])
        th = np.asarray(theta0, np.float64).ravel().copy()
        shape = (h.shape[1] + 1, -1)
        for it in range(max_iter):
            loss, g = self.loss_grad(th, h, y)
            if np.abs(g).max() < tol:
                break
            if mask is None or it >= 20:
                step = cho_solve(cho_factor(self.hessian(th.reshape(shape), h)), g)
                t = 1.0
                while self.loss_grad(th - t * step, h, y)[0] > loss - 1e-4 * t * (g @ step) and t > 1e-6:
                    t /= 2
                th -= t * step
            else:
                th -= cho_solve(self._factor(), g)
        else:
            raise RuntimeError(f"the logits-layer fit did not converge: max |grad| {np.abs(g).max():.1e} > {tol:.0e}")
        th = th.reshape(shape)
        if mask is None:
            self.theta, self.hess, self._chol = th, self.hessian(th, h), None
        return th

    def _factor(self):
        from scipy.linalg import cho_factor

        if self.hess is None:
            raise RuntimeError("call fit() first")
        if self._chol is None:
            self._chol = cho_factor(self.hess)
        return self._chol

    def grads(self, h: np.ndarray, y: np.ndarray) -> np.ndarray:
        return last_layer_grads(h, _aug(h) @ self.theta, np.asarray(y))

    def influence(self, h_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
        """Predicted change of each test loss when each training example is removed,
        ``(1/n) g_test^T H^-1 g_z``: (n_test, n_train), positive = helpful."""
        from scipy.linalg import cho_solve

        s = cho_solve(self._factor(), self.grads(h_test, y_test).T)
        return (self.grads(self.h, self.y) @ s).T / len(self.y)

    def self_influence(self) -> np.ndarray:
        """``g_z^T H^-1 g_z`` of every training example (n,)."""
        from scipy.linalg import cho_solve

        g = self.grads(self.h, self.y)
        return np.einsum("nd,dn->n", g, cho_solve(self._factor(), g.T))

    def test_loss(self, theta: np.ndarray, h_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
        """Cross-entropy (N,) of the refitted head ``theta`` on test features."""
        z = _aug(h_test) @ theta
        z = z - z.max(axis=1, keepdims=True)
        return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y_test)), np.asarray(y_test)]


def top_influences(scores: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Indices of the ``k`` most helpful (largest) and most harmful (smallest) scores of one row."""
    order = np.argsort(-np.asarray(scores))
    return {"helpful": order[:k], "harmful": order[::-1][:k]}


def flip_labels(y: np.ndarray, fraction: float, num_classes: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(labels with round(fraction * n) of them changed to a random other class, flipped mask)``."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y).copy()
    idx = rng.choice(len(y), int(round(fraction * len(y))), replace=False)
    y[idx] = (y[idx] + rng.integers(1, num_classes, len(idx))) % num_classes
    flipped = np.zeros(len(y), bool)
    flipped[idx] = True
    return y, flipped


def mislabel_detection(scores: dict[str, np.ndarray], flipped: np.ndarray, *, seed: int = 0):
    """How well each score ranks the flipped labels first (Koh & Liang's and Pruthi et al.'s use).

    Args:
        scores: ``{name: score per training example (n,)}``, higher = more suspicious (e.g. TracIn
            and IF self-influence, and the training loss as the control); a ``random`` row is added.

    Returns:
        A DataFrame indexed by score: ``auc`` (ROC AUC of the flipped labels), ``precision_at_flipped``
        (share flipped among the top n_flipped) and ``found_in_top_10pct`` (share of the flipped
        found in the top 10 %).
    """
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    flipped = np.asarray(flipped, bool)
    scores = {**scores, "random": np.random.default_rng(seed).random(len(flipped))}
    nf, top10 = int(flipped.sum()), int(np.ceil(0.1 * len(flipped)))
    rows = {}
    for name, s in scores.items():
        order = np.argsort(-np.asarray(s))
        rows[name] = {"auc": float(roc_auc_score(flipped, s)), "precision_at_flipped": float(flipped[order[:nf]].mean()),
                      "found_in_top_10pct": float(flipped[order[:top10]].sum() / nf)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("score")


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0]) if len(a) > 2 else float("nan")


def refit_validation(inf: LastLayerIF, h_test: np.ndarray, y_test: np.ndarray, *, k: int = 40,
                     tracin_scores: np.ndarray | None = None, singles: int = 12, random_singles: int = 6,
                     seed: int = 0) -> dict:
    """Influence against **exact refits** of the logits layer without the removed images.

    For each test point: (1) single removals of the ``singles`` largest |IF| images and
    ``random_singles`` random ones, Spearman of predicted vs actual change of the test loss; (2)
    removal of sets of ``k``: the top-k helpful by IF, by TracIn (when ``tracin_scores`` (n_test,
    n_train) is given) and k random images, actual change vs IF's prediction (sum over the set).

    Returns:
        dict with ``single_spearman`` (one per test point), ``sets`` (rows: test point, set,
        predicted, actual, tracin), ``set_spearman`` (IF-predicted vs actual over all sets) and
        ``mean_actual`` per set kind.
    """
    rng = np.random.default_rng(seed)
    pred = inf.influence(h_test, y_test)
    base = inf.test_loss(inf.theta, h_test, y_test)
    n = len(inf.y)
    single, sets = [], []
    for j in range(len(h_test)):
        def actual(removed):
            keep = np.ones(n, bool)
            keep[removed] = False
            return float(inf.test_loss(inf.fit(inf.theta, mask=keep), h_test[j:j + 1], y_test[j:j + 1])[0] - base[j])

        idx = np.concatenate([np.argsort(-np.abs(pred[j]))[:singles], rng.choice(n, random_singles, replace=False)])
        single.append(_spearman(pred[j, idx], [actual([z]) for z in idx]))
        kinds = {"IF top-k": top_influences(pred[j], k)["helpful"], f"{k} random": rng.choice(n, k, replace=False)}
        if tracin_scores is not None:
            kinds["TracIn top-k"] = top_influences(tracin_scores[j], k)["helpful"]
        for kind, removed in kinds.items():
            sets.append({"test_point": j, "set": kind, "predicted": float(pred[j, removed].sum()),
                         "actual": actual(removed),
                         "tracin": float(tracin_scores[j, removed].sum()) if tracin_scores is not None else np.nan})
    kinds = list(dict.fromkeys(r["set"] for r in sets))
    return {"single_spearman": single, "sets": sets,
            "set_spearman": _spearman([r["predicted"] for r in sets], [r["actual"] for r in sets]),
            "mean_actual": {kd: float(np.mean([r["actual"] for r in sets if r["set"] == kd])) for kd in kinds}}


def retrain_validation(build: Callable, x_train, y_train, x_test, y_test, *, train_cfg, k: int = 40,
                       points: int = 4, random_sets: int = 1, damping: float = 1e-3, checkpoints: int = 6,
                       num_classes: int = 10, workdir: str | Path, seed: int = 0) -> dict:
    """Influence against **retraining the whole CNN** without the top-k images (Koh & Liang, sec. 5.1).

    Trains ``build()`` on the training rows (no hold-out, ``train_cfg``, checkpoints in
    ``workdir``), takes ``points`` test images (half predicted right, half wrong), and for each
    retrains with the same seed without the top-k helpful images by last-layer IF, by TracIn, and
    without ``random_sets`` sets of k random images. Same seed and same data reproduce a run, so the
    change of the test loss comes from the removal; the random sets show how large a removal's
    effect is by chance.

    Returns:
        dict with ``rows`` (test point, correct, set, actual, predicted by IF, TracIn sum),
        ``spearman_if`` and ``spearman_tracin`` (predicted vs actual over all sets), ``mean_actual``
        per set kind, ``test_accuracy`` of the base model and ``retrainings``.
    """
    from lepton_nb.data import Dataset
    from lepton_nb.explain import _common
    from lepton_nb.settings import DataConfig
    from lepton_nb.training import train

    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    names = tuple(f"class {c}" for c in range(num_classes))

    def fit(keep: np.ndarray, ckpt=None):
        ds = Dataset(x_train[keep], y_train[keep], x_test[:2], y_test[:2], names, "retrain", "retrain_validation")
        return train(build, ds, train_cfg, data_cfg=DataConfig(validation_fraction=0.0), name="retrain",
                     evaluate_test=False, checkpoint_dir=ckpt).model

    n = len(x_train)
    every = np.ones(n, bool)
    base = fit(every, Path(workdir) / "base")
    pred = _common.predict_logits(base, x_test).argmax(axis=1)
    right, wrong = np.flatnonzero(pred == y_test), np.flatnonzero(pred != y_test)
    tp = np.concatenate([right[:points - points // 2], wrong[:points // 2]])
    yt = np.asarray(y_test)[tp]

    def loss(model):
        p = _common.softmax(_common.predict_logits(model, x_test[tp]))
        return -np.log(np.maximum(p[np.arange(len(tp)), yt], 1e-12))

    base_loss = loss(base)
    trac, _ = tracin(base, checkpoint_paths(Path(workdir) / "base", checkpoints), x_train, y_train, x_test[tp], yt,
                     learning_rate=train_cfg.learning_rate)
    inf = LastLayerIF.of_model(base, x_train, y_train, damping=damping)
    pif = inf.influence(features(base, x_test[tp])[0], yt)
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(len(tp)):
        kinds = {"IF top-k": top_influences(pif[j], k)["helpful"], "TracIn top-k": top_influences(trac[j], k)["helpful"]}
        kinds.update({f"random {r + 1}": rng.choice(n, k, replace=False) for r in range(random_sets)})
        for kind, removed in kinds.items():
            keep = every.copy()
            keep[removed] = False
            rows.append({"test_point": int(tp[j]), "correct": bool(pred[tp[j]] == yt[j]),
                         "set": "random" if kind.startswith("random") else kind,
                         "actual": float(loss(fit(keep))[j] - base_loss[j]), "predicted_if": float(pif[j, removed].sum()),
                         "tracin": float(trac[j, removed].sum())})
    kinds = list(dict.fromkeys(r["set"] for r in rows))
    return {"rows": rows, "spearman_if": _spearman([r["predicted_if"] for r in rows], [r["actual"] for r in rows]),
            "spearman_tracin": _spearman([r["tracin"] for r in rows], [r["actual"] for r in rows]),
            "mean_actual": {kd: float(np.mean([r["actual"] for r in rows if r["set"] == kd])) for kd in kinds},
            "test_accuracy": float((pred == y_test).mean()), "retrainings": 1 + len(rows), "k": k}


def checkpoint_dir(name: str) -> Path:
    """An empty folder ``reports/checkpoints/<name>`` for a run's epoch checkpoints (a previous
    run's checkpoints are removed, so that TracIn never mixes two runs)."""
    import shutil

    from lepton_nb.reports import reports_dir

    path = reports_dir() / "checkpoints" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def explain_predictions(model, checkpoints: Sequence[str], x_train, y_train, x_test, y_test, *, learning_rate: float,
                        damping: float = 1e-3, top: int = 6) -> list[dict]:
    """The most helpful and most harmful training images of each test image, by last-layer
    influence functions and by TracIn, for the test loss at the **true** label ``y_test`` (for a
    wrong prediction, the harmful images are those that pushed the model to its mistake).

    Returns:
        One dict per test image: ``{"IF": {"helpful", "harmful"}, "TracIn": {...}}`` (indices
        into ``x_train``) and ``scores`` ``{"IF": (n_train,), "TracIn": (n_train,)}``.
    """
    y_test = np.asarray(y_test)
    trac, _ = tracin(model, checkpoints, x_train, y_train, x_test, y_test, learning_rate=learning_rate)
    pif = LastLayerIF.of_model(model, x_train, y_train, damping=damping).influence(features(model, x_test)[0], y_test)
    return [ranking(pif[j], trac[j], top) for j in range(len(y_test))]


def ranking(if_scores: np.ndarray, tracin_scores: np.ndarray, top: int) -> dict:
    """One test image's ``{"IF": {"helpful", "harmful"}, "TracIn": {...}, "scores": {...}}``."""
    return {"IF": top_influences(if_scores, top), "TracIn": top_influences(tracin_scores, top),
            "scores": {"IF": if_scores, "TracIn": tracin_scores}}
