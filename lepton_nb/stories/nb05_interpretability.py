"""Notebook 05, interpretability: its settings by mode, the orchestration of its checks, and the
prose built from their numbers.

The core is :mod:`lepton_nb.explain` (methods, Grad-CAM/HiResCAM, Xplique's methods and metrics,
faithfulness, sanity, localization, training-data influence, the surrogate, figures, explorer).
Every check here is shown beside controls that fail it: a random map and the image itself used as
its map (faithfulness, localization), a constant, a random and the input map (randomization).

About 500 lines, more than the other stories: notebook 05 runs eleven analyses, each with its
settings block, one orchestration function and one prose builder, and they share the method
table and the explained model; split across files they would scatter one notebook's story.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import numpy as np

from lepton_nb.explain.settings import (EXPLAINED_CNN, AttributionConfig, FaithfulnessConfig, InfluenceConfig,
                                       SurrogateConfig)
from lepton_nb.settings import SEED_CNN, CNNConfig, DataConfig, Mode, TrainConfig, by_mode

if TYPE_CHECKING:  # pragma: no cover
    from lepton_nb.data import Dataset

__all__ = ["EXPLAINED_CNN", "InterpretabilityConfig", "SECTION", "architecture_choice", "choice_markdown",
           "controls", "faithfulness_markdown", "get_config", "ig_completeness", "influence_markdown", "localization_markdown",
           "influence_study", "influence_titles", "map_fns", "mislabel_experiment", "quality_failures", "record", "retraining",
           "sanity_markdown", "surrogate_markdown", "tabular_markdown", "validation_points", "ig_error_at"]

SECTION = "05_interpretability"

_QUIET = dict(verbose=0, tensorboard=False)


@dataclass(frozen=True)
class InterpretabilityConfig:
    """Notebook 05.

    Attributes:
        data, model, train: the data, the CNN explained (:data:`EXPLAINED_CNN`) and its training.
        reference_seed: seed of an independently trained copy (the trained-vs-trained level).
        randomization_draws: re-initializations per cascade step (``choice_draws`` in the
            architecture comparison, which randomizes only the logits layer).
        contrast_model, contrast_train: the seed CNN, trained twice, for the architecture choice.
        attribution, faithfulness, influence, surrogate: the methods' settings.
        n_eval: test images every method explains (faithfulness, sanity, specificity).
        sanity_methods: methods run through the randomization cascade (the cheap ones).
        mufidelity_methods, xplique_metric_methods: methods scored by MuFidelity and by Xplique's
            RandomLogit / AverageStability metrics (each call has a fixed cost, so not all).
        per_class: images per class in the Grad-CAM grid; n_region: images in the region importance.
        ig_steps_checked: node counts of the IG completeness table.
        localization_images, localization_evaluated, localization_train, localization_methods:
            the shapes benchmark.
        flip_images, flip_train: the mislabel-detection run (a copy of the data, labels flipped).
        retrain_images, retrain_model, retrain_train, retrain_points: influence against whole-CNN
            retraining (``retrain_points=0`` skips it). 2,000 images and 8 epochs in default and full
            mode: with fewer, the effect of removing 40 images is lost in the retraining noise; each
            test point costs three retrainings (about 5 s each here).
        tabular_train, permutation_repeats: the breast-cancer MLP and its permutation importance.
        explorer_images: test images in the explorer widget.
    """

    mode: Mode = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: CNNConfig = EXPLAINED_CNN
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, early_stopping_patience=3, **_QUIET))
    reference_seed: int = 1
    randomization_draws: int = 2
    choice_draws: int = 4
    contrast_model: CNNConfig = SEED_CNN
    contrast_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, early_stopping_patience=3,
                                                                            **_QUIET))
    attribution: AttributionConfig = field(default_factory=lambda: AttributionConfig(rise_masks=500, lime_samples=150,
                                                                                     sobol_designs=8))
    faithfulness: FaithfulnessConfig = field(default_factory=lambda: FaithfulnessConfig(mufidelity_chunks=3))
    influence: InfluenceConfig = field(default_factory=InfluenceConfig)
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    n_eval: int = 24
    sanity_methods: tuple[str, ...] = ("gradcam", "hirescam", "gradcampp", "integrated_gradients", "smoothgrad",
                                       "vanilla_gradients", "occlusion")
    mufidelity_methods: tuple[str, ...] = ("gradcam", "hirescam", "integrated_gradients", "occlusion", "rise", "lime")
    xplique_metric_methods: tuple[str, ...] = ("gradcam", "hirescam", "integrated_gradients", "smoothgrad")
    per_class: int = 3
    n_region: int = 300
    ig_steps_checked: tuple[int, ...] = (8, 16, 32)
    localization_images: int = 3000
    localization_evaluated: int = 48
    localization_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, batch_size=32,
                                                                                early_stopping_patience=None, **_QUIET))
    localization_methods: tuple[str, ...] = ("gradcam", "hirescam", "gradcampp", "integrated_gradients", "smoothgrad",
                                             "vanilla_gradients", "occlusion")
    flip_images: int = 2000
    flip_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, early_stopping_patience=None,
                                                                        **_QUIET))
    retrain_images: int = 2000
    retrain_model: CNNConfig = CNNConfig(filters=16, depth=2)
    retrain_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, early_stopping_patience=None,
                                                                           **_QUIET))
    retrain_points: int = 2
    tabular_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=80, batch_size=32, early_stopping_patience=10, **_QUIET))
    permutation_repeats: int = 30
    explorer_images: int = 200


def _smoke() -> InterpretabilityConfig:
    quick = TrainConfig(epochs=1, early_stopping_patience=None, **_QUIET)
    return InterpretabilityConfig(
        data=DataConfig(max_train=600, max_test=300), train=quick, contrast_train=quick, randomization_draws=1,
        choice_draws=2,
        attribution=AttributionConfig(ig_steps=8, smoothgrad_samples=4, rise_masks=50, lime_samples=20, sobol_designs=4),
        faithfulness=FaithfulnessConfig(steps=6, mufidelity_subsets=8, mufidelity_chunks=2),
        influence=InfluenceConfig(checkpoints=1, top=4, removal_k=10, validation_points=2),
        surrogate=SurrogateConfig(leaves=16, copies=1, frontier=(8, 16, 32), bootstrap=100),
        n_eval=4, sanity_methods=("gradcam", "hirescam", "integrated_gradients"),
        mufidelity_methods=("gradcam", "integrated_gradients"), xplique_metric_methods=("gradcam",),
        per_class=1, n_region=50, ig_steps_checked=(8, 32), localization_images=400,
        localization_evaluated=8, localization_train=quick, localization_methods=("gradcam", "hirescam"),
        flip_images=300, flip_train=quick, retrain_images=200, retrain_train=quick, retrain_points=1,
        tabular_train=TrainConfig(epochs=3, batch_size=32, early_stopping_patience=None, **_QUIET),
        permutation_repeats=3, explorer_images=20)


def _full() -> InterpretabilityConfig:
    return InterpretabilityConfig(
        data=DataConfig(full=True),
        train=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4, **_QUIET),
        contrast_train=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4, **_QUIET),
        randomization_draws=5, choice_draws=8,
        attribution=AttributionConfig(rise_masks=4000, lime_samples=400, sobol_designs=32),
        faithfulness=FaithfulnessConfig(fills=("zero", "mean", "blur", "nli"), mufidelity_subsets=128,
                                        mufidelity_chunks=8),
        influence=InfluenceConfig(checkpoints=8, validation_points=6, random_sets=2),
        surrogate=SurrogateConfig(copies=4),
        n_eval=200, n_region=5000, localization_images=6000, localization_evaluated=200,
        localization_train=TrainConfig(epochs=10, batch_size=32, early_stopping_patience=None, **_QUIET),
        localization_methods=InterpretabilityConfig.localization_methods + ("rise", "sobol"),
        mufidelity_methods=InterpretabilityConfig.sanity_methods + ("rise", "lime", "kernelshap", "sobol"),
        flip_images=6000, flip_train=TrainConfig(epochs=8, early_stopping_patience=None, **_QUIET),
        retrain_images=2000, retrain_train=TrainConfig(epochs=8, early_stopping_patience=None, **_QUIET),
        retrain_points=4, ig_steps_checked=(8, 16, 32, 64), explorer_images=500)


def get_config(mode: Mode | None = None) -> InterpretabilityConfig:
    """Settings of notebook 05 for ``mode`` (default: ``LEPTON_NB_SMOKE`` / ``LEPTON_NB_FULL``)."""
    return by_mode(mode, smoke=_smoke, default=InterpretabilityConfig, full=_full)


def map_fns(cfg: InterpretabilityConfig, methods=None) -> dict:
    """``{method: fn(model, images, targets) -> signed maps}`` with the notebook's options, plus
    nothing else; add controls where a check needs them (:func:`controls`)."""
    from lepton_nb.explain import attribution

    names = methods or attribution.METHODS
    return {m: (lambda mdl, x, t, m=m: attribution.maps(mdl, x, m, t, **cfg.attribution.options(m))) for m in names}


def controls(seed: int = 0) -> dict:
    """The maps every sanity check must fail: the input itself, a constant map and a random map."""
    state = {"calls": 0}

    def random_map(model, x, t):
        state["calls"] += 1
        return np.random.default_rng(seed + state["calls"]).random(np.shape(x)[:3])

    return {"input": lambda m, x, t: np.asarray(x)[..., 0], "constant": lambda m, x, t: np.ones(np.shape(x)[:3]),
            "random": random_map}


# ------------------------------------------------------------------------------- model choice


def architecture_choice(ds: "Dataset", cfg: InterpretabilityConfig, model, reference, x_eval: np.ndarray) -> dict:
    """Grad-CAM on the explained CNN and on the seed CNN: the first cascade step (logits only,
    ``cfg.choice_draws`` re-initializations) against two independently trained copies, and the
    class specificity (top-1 vs top-2 class map).

    Trains the seed CNN twice (seeds ``cfg.contrast_train.seed`` and ``cfg.reference_seed``).

    Returns:
        ``{"verdicts": {architecture: verdict + "layer"}, "specificity": {architecture: Spearman},
        "test_accuracy": {architecture: accuracy}}``.
    """
    from dataclasses import replace

    from lepton_nb.explain import _common, default_layer, sanity
    from lepton_nb.models import build_cnn
    from lepton_nb.training import train

    fns = map_fns(cfg, ["gradcam"])
    seeds = [train(lambda: build_cnn(cfg.contrast_model, input_shape=ds.input_shape, num_classes=ds.num_classes), ds,
                   replace(cfg.contrast_train, seed=seed), data_cfg=cfg.data, name="seed_cnn").model
             for seed in (cfg.contrast_train.seed, cfg.reference_seed)]
    out = {"verdicts": {}, "specificity": {}, "test_accuracy": {}}
    for label, (m, ref) in {f"explained CNN ({cfg.model.label})": (model, reference),
                            f"seed CNN ({cfg.contrast_model.label})": tuple(seeds)}.items():
        t = _common.predict_logits(m, x_eval).argmax(axis=1).astype(np.int32)
        table, _ = sanity.cascade(m, x_eval, t, fns, reference_model=ref, seed=cfg.reference_seed, steps=1,
                                  draws=cfg.choice_draws)
        out["verdicts"][label] = {**sanity.verdict(table)["gradcam"], "layer": default_layer(m),
                                  "draws": cfg.choice_draws}
        out["specificity"][label] = float(sanity.class_specificity(m, x_eval, fns).loc["gradcam", "spearman_abs"])
        out["test_accuracy"][label] = float((_common.predict_logits(m, ds.x_test).argmax(axis=1) == ds.y_test).mean())
    return out


def choice_markdown(choice: dict) -> str:
    """Why the notebook explains the depth-2 CNN, from :func:`architecture_choice`'s numbers."""
    parts = []
    for label, v in choice["verdicts"].items():
        parts.append(f"**{label}** (Grad-CAM on `{v['layer']}`, test accuracy {100 * choice['test_accuracy'][label]:.1f} %):"
                     f" two independently trained copies agree at Spearman {v['reproducible']:.2f} on the foreground; "
                     f"randomizing only the logits layer ({v['draws']} draws) leaves {v['after_logits']:.2f}, a drop of "
                     f"{v['gap']:.2f} (needed: {v['needed_gap']:.2f}) -- **{'passes' if v['pass'] else 'fails'}**; the "
                     f"maps for the top-1 and the top-2 class agree at {choice['specificity'][label]:.2f}.")
    (a, va), (b, vb) = choice["verdicts"].items()
    sa, sb = choice["specificity"][a], choice["specificity"][b]
    if va["pass"] and not vb["pass"]:
        why = "So this notebook explains the first: its Grad-CAM maps depend on what the top of the model learned."
    elif va["pass"] == vb["pass"]:
        why = ("The randomization check does not separate the two architectures here"
               + (f"; the explained CNN's maps are the more class-specific ({sa:.2f} against {sb:.2f}, lower is more "
                  "specific)" if sa < sb else f", and the seed CNN's maps are the more class-specific ({sb:.2f} against "
                  f"{sa:.2f}, lower is more specific)")
               + ". The notebook explains the depth-2 CNN because its last convolution sits after downsampling, "
                 "on features of parts rather than of pixels, which is what Grad-CAM weighs.")
    else:
        why = ("On this run the seed CNN passes and the explained CNN does not: read the Grad-CAM maps below with "
               "that in mind; the cascade below says how far each method can be trusted.")
    return " ".join(parts) + " " + why


# ------------------------------------------------------------------------------ the numbers


def ig_completeness(model, x: np.ndarray, t: np.ndarray, steps=(8, 16, 32, 64)):
    """Median and 95th percentile of |delta| / |F(x) - F(0)| (percent) per quadrature rule and
    node count, and the share of images within 1 % (a DataFrame)."""
    import pandas as pd

    from lepton_nb.explain import attribution
    from lepton_nb.explain.settings import IG_RULES

    rows = []
    for rule in IG_RULES:
        for n in steps:
            a, delta = attribution.integrated_gradients(model, x, t, steps=n, rule=rule, return_delta=True)
            rel = np.abs(delta) / np.maximum(np.abs(a.reshape(len(a), -1).sum(axis=1) - delta), 1e-12)
            rows.append({"rule": rule, "steps": n, "median %": 100 * float(np.median(rel)),
                         "p95 %": 100 * float(np.quantile(rel, 0.95)), "within 1 %": float((rel < 0.01).mean())})
    return pd.DataFrame(rows)


def faithfulness_markdown(table, mufidelity) -> str:
    """Which methods beat both controls at which fill (deletion/insertion and MuFidelity)."""
    from lepton_nb.explain.faithfulness import verdicts
    from lepton_nb.explain.plotting import METHOD_TITLES

    def listing(v):
        return "; ".join(f"{f}: {', '.join(METHOD_TITLES.get(m, m) for m, fs in v.items() if f in fs) or 'none'}"
                         for f in dict.fromkeys(table["fill"]))

    zero = table[table["fill"] == "zero"].set_index("method")
    rnd = mufidelity[mufidelity["method"] == "random, uncentred"]
    return (f"Faithful by deletion/insertion (beats the random order **and** the input used as its map, by 2 SE) -- "
            f"{listing(verdicts(table))}. At the zero fill the input control's deletion AUC is "
            f"{zero.loc['input', 'deletion']:.3f} against {zero.loc['random', 'deletion']:.3f} for a random order: "
            "ranking ink first already looks faithful there, which is why one fill alone decides nothing. "
            f"By MuFidelity on centred maps -- {listing(verdicts(mufidelity))}. As Xplique computes it, without "
            f"centring, a random positive map scores {', '.join(f'{v:+.2f}' for v in rnd['mufidelity'])} "
            f"(fills {', '.join(rnd['fill'])}), not 0.")


def sanity_markdown(verdict: Mapping[str, dict]) -> str:
    """The cascade's first-step verdict per method, with the threshold and its reason."""
    from lepton_nb.explain.plotting import METHOD_TITLES

    def names(ok):
        return ", ".join(METHOD_TITLES.get(m, m) for m, v in verdict.items() if v["pass"] == ok) or "none"

    return ("Threshold: a method passes if two independently trained models give similar maps (trained-vs-trained "
            "Spearman on the foreground >= 0.15: its maps are reproducible) and randomizing the logits layer alone "
            "lowers that similarity by more than max(0.15, 3 standard errors). The trained-vs-trained level is the "
            "reference because it is how alike explanations of two equally good models are; a fixed number would "
            "ignore that the levels differ by method. "
            f"**Pass**: {names(True)}. **Fail**: {names(False)} (the three controls must fail: they do not depend "
            "on the model).")


def localization_markdown(loc: dict) -> str:
    """The localization benchmark's scores beside its controls' chance levels."""
    from lepton_nb.explain.plotting import METHOD_TITLES

    t = loc["table"]
    methods = [m for m in t.index if m not in ("input", "random")]
    return (f"The shapes CNN reaches {100 * loc['accuracy']:.1f} % test accuracy; {loc['evaluated']} correctly "
            f"classified test images are scored. The input used as its map points at the decisive shape "
            f"{t.loc['input', 'pointing']:.2f} ± {t.loc['input', 'pointing_se']:.2f} of the time (chance: 1/3, three "
            f"equally bright shapes) and a random map {t.loc['random', 'pointing']:.2f} (chance: "
            f"{t.loc['random', 'chance_pointing']:.2f}, the box's share of the image). Pointing game: "
            + ", ".join(f"{METHOD_TITLES.get(m, m)} {t.loc[m, 'pointing']:.2f}" for m in methods) + ".")


def mislabel_experiment(ds: "Dataset", cfg: InterpretabilityConfig) -> dict:
    """Flip ``cfg.influence.flip_fraction`` of the labels of ``cfg.flip_images`` training images,
    train the explained architecture on them (no hold-out, checkpoints each epoch), and rank the
    training images by TracIn self-influence, last-layer IF self-influence and, as the control,
    the final training loss.

    Returns:
        dict with ``table`` (:func:`lepton_nb.explain.influence.mislabel_detection`), the
        model's ``test_accuracy``, ``flipped`` and ``fitted_flipped`` (share of flipped labels it fits).
    """
    from lepton_nb.data import Dataset, stratified_subset
    from lepton_nb.explain import _common, influence
    from lepton_nb.models import build_cnn
    from lepton_nb.settings import DataConfig as DC
    from lepton_nb.training import train

    sub = stratified_subset(ds, min(cfg.flip_images, len(ds.y_train)), None, seed=cfg.data.seed)
    y_noisy, flipped = influence.flip_labels(sub.y_train, cfg.influence.flip_fraction, ds.num_classes,
                                             seed=cfg.data.seed)
    noisy = Dataset(sub.x_train, y_noisy, ds.x_test, ds.y_test, ds.class_names, f"{ds.name}-flipped", ds.source)
    ckpt = influence.checkpoint_dir("05_flipped")
    run = train(lambda: build_cnn(cfg.model, input_shape=ds.input_shape, num_classes=ds.num_classes), noisy,
                cfg.flip_train, data_cfg=DC(validation_fraction=0.0), checkpoint_dir=ckpt, name="flipped_labels")
    _, selfi = influence.tracin(run.model, influence.checkpoint_paths(ckpt, cfg.influence.checkpoints), sub.x_train,
                                y_noisy, sub.x_train[:1], y_noisy[:1], learning_rate=cfg.flip_train.learning_rate)
    inf = influence.LastLayerIF.of_model(run.model, sub.x_train, y_noisy, damping=cfg.influence.damping)
    p = _common.softmax(_common.predict_logits(run.model, sub.x_train))
    loss = -np.log(np.maximum(p[np.arange(len(y_noisy)), y_noisy], 1e-12))
    table = influence.mislabel_detection({"TracIn self-influence": selfi, "IF self-influence": inf.self_influence(),
                                          "training loss (control)": loss}, flipped, seed=cfg.data.seed)
    return {"table": table, "test_accuracy": float(run.report["accuracy"]), "flipped": int(flipped.sum()),
            "fitted_flipped": float((p.argmax(axis=1) == y_noisy)[flipped].mean()), "images": len(y_noisy)}


def influence_markdown(refit: dict, retrain: dict | None, mislabel: dict) -> str:
    """The validations of training-data influence, every number from the run."""
    t = mislabel["table"]
    best = t.drop(index="random")["auc"].idxmax()
    text = (f"**Against exact refits of the logits layer**: Spearman between predicted and actual change of the test "
            f"loss for single removals {', '.join(f'{v:.2f}' for v in refit['single_spearman'])} (one per test "
            f"image); over the removed sets {refit['set_spearman']:.2f}, with mean actual changes "
            + ", ".join(f"{k} {v:+.3f}" for k, v in refit["mean_actual"].items()) + ". ")
    if retrain:
        text += (f"**Against retraining the whole CNN** ({retrain['retrainings']} trainings, k = {retrain['k']}): "
                 f"Spearman of the IF prediction with the actual change {retrain['spearman_if']:.2f}, of TracIn "
                 f"{retrain['spearman_tracin']:.2f}; mean actual change "
                 + ", ".join(f"{k} {v:+.2f}" for k, v in retrain["mean_actual"].items())
                 + " (last-layer influence is exact for the last layer and only indicative for the whole network). ")
    text += (f"**Mislabelled training images** ({mislabel['flipped']} of {mislabel['images']} flipped; the model fits "
             f"{100 * mislabel['fitted_flipped']:.0f} % of them): AUC "
             + ", ".join(f"{k} {v:.3f}" for k, v in t["auc"].items()) + f". The best ranking is **{best}**")
    loss = t.loc["training loss (control)", "auc"]
    if best == "training loss (control)" or loss >= t.drop(index=["random", "training loss (control)"])["auc"].max() - 0.01:
        text += (": the plain training loss finds the flipped labels as well as self-influence on this model, which "
                 "never memorised them; self-influence can only add to the loss where a model fits its flipped labels.")
    else:
        text += f", ahead of the training loss control ({loss:.3f})."
    return text


def surrogate_markdown(d, goal: tuple[int, float] = (64, 0.95)) -> str:
    """The surrogate's fidelity beside its baselines and ceiling, and the goal, from the run."""
    r = d.report
    lab = d.row("readable", "true labels (baseline)")
    ceiling = d.frontier[(d.frontier["features"] == "penultimate") & d.frontier["variant"].str.startswith("CNN")]
    best_ceiling = ceiling.sort_values("leaves").iloc[-1]
    readable = d.frontier[(d.frontier["features"] == "readable") & ~d.frontier["variant"].str.startswith("true")]
    at_goal = readable[readable["leaves"] <= goal[0]]["fidelity"].max()
    text = (f"The CNN labelled {d.queries:,} queries. The drawn tree ({d.variant}, {d.leaves} leaves, chosen on a "
            f"validation tenth of the training images) agrees with the CNN on **{100 * r['fidelity']:.1f} %** "
            f"[{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] of the held-out images (kappa {r['kappa']:.3f}), "
            f"and on {100 * r['fidelity_on_model_errors']:.1f} % of the images the CNN gets wrong. A tree of the same "
            f"size on the true labels, which never saw the CNN, already agrees {100 * lab['fidelity']:.1f} % "
            f"(on the CNN's errors {100 * lab['fidelity_on_model_errors']:.1f} %). The ceiling -- a tree on the CNN's "
            f"penultimate layer, not readable -- reaches {100 * best_ceiling['fidelity']:.1f} % at "
            f"{int(best_ceiling['leaves'])} leaves. ")
    if at_goal >= goal[1]:
        return text + f"The goal, {100 * goal[1]:.0f} % at {goal[0]} leaves on readable features, is met."
    return text + (f"The goal, {100 * goal[1]:.0f} % at <= {goal[0]} leaves on readable features, is **not reached**: "
                   f"the best readable tree of that size agrees {100 * at_goal:.1f} %, and the readable frontier reaches "
                   f"{100 * readable['fidelity'].max():.1f} % at any size tried.")


def tabular_markdown(mlp, tab_sur, features, perm, test_size: int) -> str:
    """The tabular model's accuracy, its surrogate's fidelity and top splits, and the top attributions."""
    return (f"The MLP reaches {100 * mlp.report['accuracy']:.1f} % test accuracy. A depth-{tab_sur.depth} tree on the "
            f"raw measurements agrees with it on **{100 * tab_sur.fidelity:.1f} %** of the {test_size} held-out tumours; "
            f"its top splits are {', '.join(tab_sur.importances(top=3)['feature'])}. The largest mean |integrated "
            f"gradients| are {', '.join(features.index[:3])}; the largest permutation drops (scikit-learn) are "
            + ", ".join(f"{f} {v:.1f} ± {s:.1f} points" for f, v, s in
                        zip(perm.index[:3], perm.iloc[:3, 0], perm["std"].iloc[:3])) + ".")


def validation_points(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """``n`` test indices, half predicted right and half wrong, spread over the classes."""
    from lepton_nb.metrics import right_and_wrong

    right, wrong = right_and_wrong(y_true, y_pred, max(1, (n + 1) // 2))
    return np.concatenate([right[:n - n // 2], wrong[:n // 2]]).astype(int)


def influence_study(model, checkpoint_dir, split, ds: "Dataset", y_pred: np.ndarray,
                    cfg: InterpretabilityConfig) -> dict:
    """TracIn and last-layer influence of the explained model for the validation test images
    (half right, half wrong; the first right and the first wrong are shown), each computed once.

    Returns:
        dict with ``points`` (test indices), ``shown`` (the right and the wrong one), their
        ``titles`` and ``ranked`` (:func:`lepton_nb.explain.influence.ranking`), and ``refit``
        (:func:`lepton_nb.explain.influence.refit_validation` over all points).
    """
    from lepton_nb.explain import influence

    pts = validation_points(ds.y_test, y_pred, max(2, cfg.influence.validation_points))
    yt = ds.y_test[pts]
    trac, _ = influence.tracin(model, influence.checkpoint_paths(checkpoint_dir, cfg.influence.checkpoints),
                               split.x_train, split.y_train, ds.x_test[pts], yt, learning_rate=cfg.train.learning_rate)
    inf = influence.LastLayerIF.of_model(model, split.x_train, split.y_train, damping=cfg.influence.damping)
    h = influence.features(model, ds.x_test[pts])[0]
    pif = inf.influence(h, yt)
    right = y_pred[pts] == yt
    shown = [int(np.flatnonzero(kind)[0]) for kind in (right, ~right) if kind.any()]  # the first right, the first wrong
    return {"points": pts, "shown": pts[shown], "titles": influence_titles(pts[shown], ds.y_test, y_pred, ds.class_names),
            "ranked": [influence.ranking(pif[j], trac[j], cfg.influence.top) for j in shown],
            "refit": influence.refit_validation(inf, h, yt, k=cfg.influence.removal_k, tracin_scores=trac,
                                                seed=cfg.data.seed)}


def retraining(ds: "Dataset", cfg: InterpretabilityConfig) -> dict | None:
    """:func:`lepton_nb.explain.influence.retrain_validation` on ``cfg.retrain_images`` stratified
    training images with ``cfg.retrain_model`` (``None`` when ``cfg.retrain_points`` is 0)."""
    from lepton_nb.data import stratified_subset
    from lepton_nb.explain import influence
    from lepton_nb.models import build_cnn

    if cfg.retrain_points < 1:
        return None
    sub = stratified_subset(ds, min(cfg.retrain_images, len(ds.y_train)), None, seed=cfg.data.seed)
    return influence.retrain_validation(
        lambda: build_cnn(cfg.retrain_model, input_shape=ds.input_shape, num_classes=ds.num_classes),
        sub.x_train, sub.y_train, ds.x_test, ds.y_test, train_cfg=cfg.retrain_train, k=cfg.influence.removal_k,
        points=cfg.retrain_points, random_sets=cfg.influence.random_sets, damping=cfg.influence.damping,
        checkpoints=cfg.influence.checkpoints, num_classes=ds.num_classes,
        workdir=influence.checkpoint_dir("05_retrain"), seed=cfg.data.seed)


def ig_error_at(ig_table, cfg: InterpretabilityConfig) -> float:
    """The median relative completeness error (a fraction) at the notebook's IG settings."""
    row = ig_table[(ig_table["rule"] == cfg.attribution.ig_rule) & (ig_table["steps"] == cfg.attribution.ig_steps)]
    if row.empty:
        raise ValueError(f"ig_steps_checked={cfg.ig_steps_checked} lacks the default ig_steps={cfg.attribution.ig_steps}")
    return float(row["median %"].iloc[0]) / 100


def record(cfg: InterpretabilityConfig, *, run, choice, heat, ig_table, faith, mufid, cascade, verdict, spec,
           xq_metrics, loc, refit, retrain, mislabel, distilled, mlp, tab_sur) -> dict:
    """Write the notebook's figures to ``reports/summary.json``; returns ``{"headline": ...}``."""
    from lepton_nb.reports import record_models

    def rows(df, cols=None):
        return (df if cols is None else df[cols]).round(4).to_dict("records")

    first = cascade[cascade["layers_randomized"] == 1].set_index("method")
    ref = cascade[cascade["step"] == "independently trained"].set_index("method")
    frontier = distilled.frontier.drop(columns="per_class_fidelity")
    at = distilled.row
    label_tree = at("readable", "true labels (baseline)")
    mis = mislabel["table"]
    headline = {
        f"Grad-CAM foreground Spearman, trained vs independently trained ({cfg.model.label})":
            round(float(ref.loc["gradcam", "spearman_abs"]), 3),
        "Grad-CAM foreground Spearman after randomizing the logits layer": round(float(first.loc["gradcam", "spearman_abs"]), 3),
        "shapes benchmark pointing: Grad-CAM": round(float(loc["table"].loc["gradcam", "pointing"]), 3),
        "shapes benchmark pointing: input as map (chance 1/3)": round(float(loc["table"].loc["input", "pointing"]), 3),
        "methods faithful at the blur fill (deletion/insertion)":
            int(faith[(faith["fill"] == "blur") & faith["faithful"]].shape[0]),
        f"IG median completeness error % ({cfg.attribution.ig_rule}, {cfg.attribution.ig_steps} nodes)":
            round(100 * ig_error_at(ig_table, cfg), 3),
        "mislabel AUC: TracIn self-influence": round(float(mis.loc["TracIn self-influence", "auc"]), 3),
        "mislabel AUC: training loss (control)": round(float(mis.loc["training loss (control)", "auc"]), 3),
        "influence vs exact last-layer refits, Spearman over removed sets": round(refit["set_spearman"], 3),
        f"surrogate fidelity % ({distilled.leaves} leaves, readable features)": round(100 * distilled.report["fidelity"], 2),
        f"label-trained tree fidelity % ({distilled.leaves} leaves, readable features)": round(100 * label_tree["fidelity"], 2),
    }
    if retrain:
        headline["influence (IF) vs whole-CNN retraining, Spearman"] = round(retrain["spearman_if"], 3)
    record_models(SECTION, {"explained_cnn": run.summary(), "breast_cancer_mlp": mlp.summary()},
                  architecture_choice=choice, background_heat=heat.round(4).to_dict("index"),
                  ig_completeness=rows(ig_table), faithfulness=rows(faith, ["fill", "method", "deletion", "deletion_se",
                                                                           "insertion", "insertion_se", "faithful"]),
                  mufidelity=rows(mufid, ["fill", "method", "mufidelity", "se", "faithful"]),
                  randomization=rows(cascade, ["method", "step", "spearman_abs", "spearman_signed", "ssim"]),
                  randomization_verdict=verdict, class_specificity=spec.round(4).to_dict("index"),
                  xplique_metrics=xq_metrics.round(4).to_dict("index"),
                  localization={"cnn_accuracy": loc["accuracy"], "evaluated": loc["evaluated"],
                                "table": loc["table"].round(4).to_dict("index")},
                  influence={"refit_validation": {k: refit[k] for k in ("single_spearman", "set_spearman", "mean_actual")},
                             "refit_sets": refit["sets"],
                             "retrain_validation": retrain and {k: v for k, v in retrain.items() if k != "rows"},
                             "retrain_rows": retrain and retrain["rows"],
                             "mislabel": {**{k: v for k, v in mislabel.items() if k != "table"},
                                          "table": mis.round(4).to_dict("index")}},
                  surrogate={"drawn": {"variant": distilled.variant, "leaves": distilled.leaves, **distilled.report},
                             "queries": distilled.queries, "validation_fidelity": distilled.validation,
                             "label_tree": label_tree, "frontier": frontier.round(4).to_dict("records")},
                  tabular_surrogate=tab_sur.summary(), headline=headline)
    return {"headline": headline}


def influence_titles(indices, y_true, y_pred, class_names) -> list[str]:
    """Titles "right: Coat" / "wrong: Shirt (pred. Coat)" of the explained test images."""
    from lepton_nb.explain.plotting import right_wrong_titles

    return [t.replace("\n", " ") for t in right_wrong_titles(indices, y_true, y_pred, class_names)]


def quality_failures(cfg: InterpretabilityConfig, checks: dict) -> list[str]:
    """What fails notebook 05's checks outside smoke mode (``checks`` as the notebook builds it).

    Keys: ``verdict`` (sanity verdicts), ``localization`` (its table), ``shapes_accuracy``,
    ``ig_median_error`` (fraction, default steps), ``mislabel`` (its table), ``faithful_anywhere``.
    """
    if cfg.mode == "smoke":
        return []
    failures = []
    v = checks["verdict"]
    if not v["gradcam"]["pass"]:
        failures.append("Grad-CAM fails the logits-randomization check on the explained CNN")
    failures += [f"the {c} control passes the randomization check" for c in ("input", "constant", "random")
                 if v[c]["pass"]]
    loc = checks["localization"]
    if checks["shapes_accuracy"] < 0.9:
        failures.append(f"the shapes CNN reached {checks['shapes_accuracy']:.0%} (< 90 %): the benchmark says nothing")
    if abs(loc.loc["input", "pointing"] - 1 / 3) > 3 * max(loc.loc["input", "pointing_se"], 0.02):
        failures.append(f"the input control points at {loc.loc['input', 'pointing']:.2f}, not at chance (1/3)")
    if loc.loc["gradcam", "pointing"] < 0.9:
        failures.append(f"Grad-CAM points at the decisive shape {loc.loc['gradcam', 'pointing']:.0%} (< 90 %)")
    if checks["ig_median_error"] >= 0.01:
        failures.append(f"IG completeness error {100 * checks['ig_median_error']:.2f} % (>= 1 %) at the default steps")
    mis = checks["mislabel"]
    if mis.loc["TracIn self-influence", "auc"] < mis.loc["random", "auc"] + 0.2:
        failures.append("TracIn self-influence does not find the flipped labels (AUC within 0.2 of random)")
    if not checks["faithful_anywhere"]:
        failures.append("no method beats both faithfulness controls at any fill")
    return failures
