"""Notebook 06, the medical case study: its settings by mode, and the orchestration that would
otherwise be long notebook cells.

The case study runs one data set through every part of lepton_nb and ends with one table:

- data: the bundled Fashion-MNIST sample by default, or any MedMNIST 28x28 ``.npz`` named by
  ``DataConfig.path`` (:func:`lepton_nb.data.from_config`), with augmentation adapted to it
  (:func:`augmentation_for`);
- centralized models (:func:`lepton_nb.training.train`): the seed's 2x128 MLP and CNN, and the CNN
  with augmentation under a ``tf.distribute`` strategy (:mod:`lepton_nb.distributed`);
- DP-SGD at a stated epsilon (:func:`lepton_nb.privacy.train_dp`, Abadi et al. 2016);
- FedAvg (McMahan et al. 2017) over simulated hospitals holding non-IID data (Dirichlet split,
  Hsu et al. 2019) with each hospital's accuracy on its own held-out images, and DP-FedAvg
  (McMahan et al. 2018) with Poisson sampling of hospitals and a user-level (hospital-level)
  epsilon under add/remove-one-hospital neighbouring (:func:`federated_hospitals`, on
  :class:`lepton_nb.federated.simulation.Simulation`);
- Grad-CAM (Selvaraju et al. 2017) on right and wrong predictions
  (:func:`lepton_nb.metrics.right_and_wrong`) of the CNN with two pooled blocks
  (:data:`lepton_nb.explain.settings.EXPLAINED_CNN`), and the training images that helped and
  harmed them most (TracIn and influence functions, :mod:`lepton_nb.explain.influence`);
- the final comparison beside the seed article's claim (:func:`row`, :func:`comparison_table`,
  :func:`claim_markdown`, :func:`quality_failures`).

Importing this module imports neither TensorFlow nor TFF: the notebook's parameters cell stays
light, so a CPU split for the distribution strategy can still happen in the next cell.

At about 520 lines this is the longest story module but one, because the case study joins every
capability: its settings (one block per capability), the federated hospitals and the claim table
are used by this notebook only, and splitting them would scatter one story over several files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from lepton_nb.explain.settings import EXPLAINED_CNN, InfluenceConfig
from lepton_nb.federated.settings import ClientConfig, DPFedAvgConfig, FedAvgConfig
from lepton_nb.privacy.settings import DPSGDConfig
from lepton_nb.reports import Summary
from lepton_nb.settings import (
    DP_CNN,
    DP_CNN_NO_NORM,
    SEED_CNN,
    Augmentation,
    CNNConfig,
    DataConfig,
    DistributionOptions,
    Mode,
    SettingsError,
    TrainConfig,
    by_mode,
)

if TYPE_CHECKING:  # pragma: no cover
    from lepton_nb.data import Dataset

__all__ = [
    "CaseStudyConfig",
    "Checks",
    "FederatedOutcome",
    "SECTION",
    "headline",
    "augmentation_for",
    "augmented_examples",
    "claim_markdown",
    "comparison_table",
    "distributed_markdown",
    "federated_hospitals",
    "federated_markdown",
    "get_config",
    "quality_failures",
    "row",
    "summary_rows",
]

SECTION = "06_medical_case_study"
SETTINGS = ("centralized", "DP", "federated", "DP-federated")


@dataclass(frozen=True)
class Checks:
    """Quality floors applied outside smoke mode (test accuracy, fractions).

    The accuracy floors are set for the bundled Fashion-MNIST sample and are applied only to it
    (``bundled_only``); the epsilon checks apply to every data set.

    Attributes:
        centralized: floor for the best centralized model.
        dp: floor for the DP-SGD model.
        federated: floor for FedAvg over non-IID hospitals.
        dp_federated: floor for DP-FedAvg.
        epsilon_slack: relative tolerance of "epsilon spent <= target" (accountant rounding).
    """

    centralized: float = 0.85
    dp: float = 0.70
    federated: float = 0.72
    dp_federated: float = 0.50
    epsilon_slack: float = 0.01


@dataclass(frozen=True)
class CaseStudyConfig:
    """Notebook 06.

    Attributes:
        data: what to load: the bundled sample by default; set ``path`` to a MedMNIST 28x28
            ``.npz`` (and ``dataset`` to its flag, e.g. "bloodmnist") to run the study on it.
        augment: augmentation of the distributed CNN's training batches; a horizontal flip is
            dropped for data whose classes are not mirror-invariant (:func:`augmentation_for`).
        train: the MLP and CNN baselines (one device, no augmentation, as in the seed article).
        distributed_train: the seed CNN with augmentation under the distribution strategy
            (``batch_size`` and ``learning_rate`` are the reference that ``lr_scaling`` scales from).
        distribution: per-replica batch and learning-rate scaling under the strategy.
        strategy_kind: ``lepton_nb.distributed.strategy`` kind ("auto": TPU, GPUs, TF_CONFIG
            cluster, else the CPU split below).
        cpu_replicas: logical CPU devices to mirror over when no accelerator is found (they share
            the same cores: the all-reduce code path, not a speed-up); ``None`` for one device.
        dp_model: the DP-friendly CNN (tanh, Papernot et al. 2021; no normalization by default, GroupNorm in
            full mode).
        dp_train: epochs, expected batch (Poisson sampling) and learning rate of DP-SGD.
        dp: clip, target epsilon, delta and sampling of DP-SGD (noise calibrated to the target).
        fed_model: the model FedAvg trains (the seed CNN).
        alpha: Dirichlet concentration of the hospitals' label mix (small = more skewed).
        min_hospital_size: smallest hospital allowed by the split (redrawn until it holds).
        hospital_holdout: fraction of each FedAvg hospital's images kept out of training, on which
            its own accuracy is measured (DP-FedAvg's hospitals keep none: per-hospital figures
            are not released under DP).
        fedavg: hospitals, hospitals per round, rounds and local training of FedAvg.
        dp_fed: DP-FedAvg's aggregation (noise, clipping, accounting); user level, one hospital
            is the privacy unit; hospitals join each round by Poisson sampling.
        dp_fedavg: its own (larger) population of hospitals, rounds and local training.
        dp_fed_model: its small model (the noise grows with the number of parameters).
        explain_model, explain_train: the CNN explained (two pooled blocks, see notebook 05 for why)
            and its training (with a checkpoint per epoch, for TracIn).
        explain_examples: right and as many wrong predictions explained with Grad-CAM.
        influence: settings of the training-data influence of one right and one wrong prediction.
        checks: quality floors outside smoke mode.
    """

    mode: Mode = "default"
    data: DataConfig = field(default_factory=DataConfig)
    augment: Augmentation = field(default_factory=lambda: Augmentation(rotation=0.03, shift=0.08,
                                                                      horizontal_flip=True))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, early_stopping_patience=4,
                                                                   verbose=0, tensorboard=False))
    distributed_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=10, early_stopping_patience=4, verbose=0, tensorboard=False))
    distribution: DistributionOptions = field(default_factory=lambda: DistributionOptions(per_replica_batch=64,
                                                                                          lr_scaling="sqrt"))
    strategy_kind: str = "auto"
    cpu_replicas: int | None = 2
    dp_model: CNNConfig = DP_CNN_NO_NORM
    dp_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=10, batch_size=128, learning_rate=1e-2, early_stopping_patience=None, verbose=0, tensorboard=False))
    dp: DPSGDConfig = field(default_factory=lambda: DPSGDConfig(l2_norm_clip=1.0, noise_multiplier=None,
                                                                target_epsilon=3.0, delta=1e-5))
    fed_model: CNNConfig = SEED_CNN
    alpha: float = 0.5
    min_hospital_size: int = 10
    hospital_holdout: float = 0.15
    fedavg: FedAvgConfig = field(default_factory=lambda: FedAvgConfig(
        num_clients=20, clients_per_round=5, rounds=15, client=ClientConfig(local_epochs=2, batch_size=20),
        eval_every=5, test_clients=4))
    dp_fed: DPFedAvgConfig = field(default_factory=lambda: DPFedAvgConfig(noise_multiplier=1.0))
    dp_fedavg: FedAvgConfig = field(default_factory=lambda: FedAvgConfig(
        num_clients=100, clients_per_round=20, rounds=15,
        client=ClientConfig(local_epochs=2, batch_size=20, learning_rate=0.1), eval_every=5, test_clients=4))
    dp_fed_model: CNNConfig = CNNConfig(filters=8, depth=2, dense_units=0, activation="tanh")
    explain_model: CNNConfig = EXPLAINED_CNN
    explain_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=12, early_stopping_patience=4,
                                                                           verbose=0, tensorboard=False))
    explain_examples: int = 4
    influence: InfluenceConfig = field(default_factory=InfluenceConfig)
    checks: Checks = field(default_factory=Checks)

    def __post_init__(self) -> None:
        if self.cpu_replicas is not None and self.cpu_replicas < 1:
            raise SettingsError(f"CaseStudyConfig.cpu_replicas={self.cpu_replicas}: use a positive number, or None "
                                "for one device")
        if not self.alpha > 0:
            raise SettingsError(f"CaseStudyConfig.alpha={self.alpha}: the Dirichlet concentration must be > 0")
        if self.min_hospital_size < 1:
            raise SettingsError(f"CaseStudyConfig.min_hospital_size={self.min_hospital_size}: must be >= 1")
        if not 0 < self.hospital_holdout < 1:
            raise SettingsError(f"CaseStudyConfig.hospital_holdout={self.hospital_holdout}: a fraction in (0, 1)")
        if self.dp.target_epsilon is None:
            raise SettingsError("CaseStudyConfig.dp needs a target_epsilon: the case study states the epsilon it "
                                "trains at")
        if self.explain_examples < 1:
            raise SettingsError(f"CaseStudyConfig.explain_examples={self.explain_examples}: explain at least one")
        if self.data.path is not None and Path(self.data.path).suffix not in ("", ".npz"):
            raise SettingsError(f"CaseStudyConfig.data.path={self.data.path!r}: give a MedMNIST .npz file (or a "
                                "folder of Fashion-MNIST idx files with full=True)")


def _smoke() -> CaseStudyConfig:
    client = ClientConfig(local_epochs=1, batch_size=20)
    quick = TrainConfig(epochs=1, early_stopping_patience=None, verbose=0, tensorboard=False)
    tiny = FedAvgConfig(num_clients=6, clients_per_round=3, rounds=2, client=client, eval_every=2, test_clients=2)
    return CaseStudyConfig(
        data=DataConfig(max_train=600, max_test=300),
        train=quick,
        distributed_train=quick,
        distribution=DistributionOptions(per_replica_batch=32, lr_scaling="sqrt"),
        dp_model=CNNConfig(filters=4, depth=1, norm="group", activation="tanh", dense_units=16),
        dp_train=TrainConfig(epochs=1, batch_size=64, learning_rate=2e-3, early_stopping_patience=None,
                             verbose=0, tensorboard=False),
        dp=DPSGDConfig(noise_multiplier=None, target_epsilon=8.0, delta=1e-4, accountant="rdp"),
        min_hospital_size=5,
        fedavg=tiny,
        dp_fedavg=replace(tiny, rounds=1, eval_every=1),
        explain_train=quick,
        explain_examples=2,
        influence=InfluenceConfig(checkpoints=1, top=4),
    )


def _full() -> CaseStudyConfig:
    return CaseStudyConfig(
        data=DataConfig(full=True),
        train=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4, verbose=0, tensorboard=False),
        distributed_train=TrainConfig(epochs=40, batch_size=128, early_stopping_patience=6, verbose=0,
                                      tensorboard=False),
        dp_model=DP_CNN,
        dp_train=TrainConfig(epochs=30, batch_size=512, learning_rate=2e-3, early_stopping_patience=None,
                             verbose=0, tensorboard=False),
        fedavg=FedAvgConfig(num_clients=100, clients_per_round=10, rounds=100,
                            client=ClientConfig(local_epochs=5, batch_size=10, learning_rate=0.02),
                            eval_every=5, test_clients=10),
        dp_fedavg=FedAvgConfig(num_clients=1000, clients_per_round=100, rounds=100,
                               client=ClientConfig(local_epochs=1, batch_size=10, learning_rate=0.05),
                               eval_every=10, test_clients=10),
        explain_train=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4, verbose=0, tensorboard=False),
        explain_examples=6,
        checks=Checks(centralized=0.90, dp=0.75, federated=0.85, dp_federated=0.6),
    )


def get_config(mode: Mode | None = None, *, path: str | None = None, dataset: str | None = None) -> CaseStudyConfig:
    """Settings of notebook 06 for ``mode`` (default: ``LEPTON_NB_SMOKE`` / ``LEPTON_NB_FULL``).

    Args:
        mode: "smoke", "default" or "full".
        path: a MedMNIST 28x28 ``.npz`` to study instead of the bundled sample.
        dataset: its flag (e.g. "bloodmnist"; default: the file name's stem).
    """
    cfg = by_mode(mode, smoke=_smoke, default=CaseStudyConfig, full=_full)
    if path is not None:
        flag = dataset or Path(path).stem.split("_")[0]
        cfg = replace(cfg, data=replace(cfg.data, dataset=flag, path=str(path), full=False))
    return cfg


def distributed_markdown(dist, single) -> str:
    """A sentence on the distributed run against the one-device CNN, every number from the runs.

    Args:
        dist: the :class:`~lepton_nb.training.TrainResult` trained under the strategy (with augmentation).
        single: the same model trained on one device without augmentation.
    """
    d = dist.distribution
    a, b = 100 * dist.report["accuracy"], 100 * single.report["accuracy"]
    text = (f"Trained with strategy **{d['strategy']}** over {d['replicas']} replica(s), global batch "
            f"{d['global_batch']} ({d['per_replica_batch']:g} per replica), learning rate {d['learning_rate']:.2g} "
            f"({d['lr_scaling']} scaling), {d['precision']}: test accuracy **{a:.1f} %** after {dist.epochs_run} "
            f"epoch(s), against {b:.1f} % for the same CNN on one device without augmentation")
    if a < b:
        return text + (f": lower; augmentation makes the training task harder, and {dist.epochs_run} epoch(s) may be "
                       "too few for it to pay off; distributing itself does not change what is learned (the replicas "
                       "compute the same averaged gradient as one device).")
    return text + "."


# ------------------------------------------------------------------------------------ federated


@dataclass(eq=False)
class FederatedOutcome:
    """A federated run on the hospitals, scored like the centralized models.

    Attributes:
        run: the :class:`lepton_nb.federated.loop.FederatedRun` (per-round history, state).
        hospitals: the :class:`lepton_nb.federated.client_data.FederatedData` split.
        model: the global model exported to Keras (logits).
        report: :func:`lepton_nb.metrics.report` of ``model`` on the test split (plus ``y_pred``).
        epsilon: user-level epsilon for DP-FedAvg (one hospital is the unit), else ``None``.
        delta: its delta, else ``None``.
        per_hospital: each hospital's accuracy on its own held-out images and on the test set at its
            label mix (:func:`lepton_nb.federated.per_client.per_client_accuracy`); ``None`` for
            DP-FedAvg, whose per-hospital figures are not covered by its epsilon.
    """

    run: object
    hospitals: object
    model: object
    report: dict
    epsilon: float | None = None
    delta: float | None = None
    per_hospital: object = None

    def summary(self) -> dict:
        """The run's figures with macro recall / F1 from the exported model (percent)."""
        out = self.run.summary()
        out.update({k: round(100 * self.report[k], 2) for k in ("accuracy", "recall_macro", "f1_macro")})
        if self.epsilon is not None:
            out.update({"epsilon": round(self.epsilon, 2), "delta": self.delta})
        return Summary(out)

    def hospital_distribution(self) -> dict:
        """min, 10th percentile and median of the hospitals' accuracies (percent), for reports."""
        from lepton_nb.federated.per_client import distribution

        if self.per_hospital is None:
            raise ValueError("no per-hospital figures: a DP-FedAvg run does not release them")
        return {"heldout": distribution(self.per_hospital["heldout_accuracy"]),
                "test_at_hospital_mix": distribution(self.per_hospital["test_accuracy_at_client_mix"])}


def federated_hospitals(ds: "Dataset", fed: FedAvgConfig, model: CNNConfig, *, alpha: float,
                        dp: DPFedAvgConfig | None = None, min_size: int = 1, holdout: float = 0.15,
                        name: str = "fedavg_hospitals", progress: bool = False) -> FederatedOutcome:
    """FedAvg (or DP-FedAvg when ``dp`` is given) over ``fed.num_clients`` simulated hospitals.

    The training split is spread over the hospitals with Dirichlet(``alpha``) label proportions;
    each round samples ``fed.clients_per_round`` hospitals (:func:`lepton_nb.federated.loop.run`);
    the global model is evaluated federatedly every ``fed.eval_every`` rounds and, exported to
    Keras, scored on the whole test split with macro recall and F1. Without ``dp`` each hospital
    keeps ``holdout`` of its images out of training and the outcome holds every hospital's
    accuracy on them. With ``dp``: DP-FedAvg (Poisson sampling of hospitals, no hold-out, no
    per-hospital figures) and the user-level epsilon of the rounds run
    (:meth:`lepton_nb.federated.simulation.Simulation.dp_fedavg`).

    Raises:
        ValueError: more hospitals than training examples, a bad split, or a model that does not
            fit the data, before any round runs.
    """
    from lepton_nb.distributed import quiet_tf_logging
    from lepton_nb.federated.simulation import Simulation
    from lepton_nb.training import evaluate

    from lepton_nb.federated.per_client import per_client_accuracy

    sim = Simulation(ds, progress=progress, tensorboard=False)
    hospitals = sim.split(fed.num_clients, alpha=alpha, min_size=min_size, seed=fed.seed,
                          holdout=holdout if dp is None else 0.0)
    if dp is None:
        run = sim.fedavg(model, hospitals, fed, name=name)
    else:
        run = sim.dp_fedavg(model, hospitals, fed, dp, name=name)
    keras_model = run.export_keras()
    with quiet_tf_logging("ERROR"):  # a fresh model's predict function: TF's retracing warning is noise here
        report = evaluate(keras_model, ds.x_test, ds.y_test, class_names=ds.class_names)
    per_hospital = per_client_accuracy(keras_model, hospitals, ds.x_test, ds.y_test) if dp is None else None
    return FederatedOutcome(run, hospitals, keras_model, report, run.extra.get("epsilon"), run.extra.get("delta"),
                            per_hospital)


def federated_markdown(fed: FederatedOutcome, dpf: FederatedOutcome) -> str:
    """The federated results in prose: FedAvg, its worst-served hospitals, DP-FedAvg with its epsilon,
    neighbouring relation and what the epsilon covers; every number from the runs."""
    h = fed.hospitals
    d = fed.hospital_distribution()
    held, mix = d["heldout"], d["test_at_hospital_mix"]
    e = dpf.run.extra
    return (f"FedAvg over {h.num_clients} hospitals ({h.split}, {h.summary()['mean_classes_per_client']:.1f} classes per "
            f"hospital on average) reached **{100 * fed.report['accuracy']:.1f} %** after {fed.run.summary()['rounds']} "
            f"rounds. One model does not serve every hospital equally: on their own held-out images the worst hospital "
            f"scored **{held['min']:.1f} %**, the 10th percentile {held['p10']:.1f} % and the median {held['median']:.1f} % "
            f"(on the test set at each hospital's label mix: {mix['min']:.1f} / {mix['p10']:.1f} / {mix['median']:.1f} %). "
            f"DP-FedAvg over {dpf.hospitals.num_clients} hospitals, each joining a round with probability "
            f"{dpf.run.config.clients_per_round / dpf.hospitals.num_clients:.2g} (Poisson sampling), reached "
            f"**{100 * dpf.report['accuracy']:.1f} %** at user-level epsilon **{dpf.epsilon:.2f}** (delta {dpf.delta:g}, "
            f"neighbouring populations differing by {e['neighbouring']}): a guarantee about whole hospitals, not single "
            f"images, so it is not comparable with the DP-SGD epsilon above. It covers {e['epsilon_covers']}; its "
            "per-hospital accuracies are therefore not shown.")


# ---------------------------------------------------------------------------------- the table


def row(setting: str, report: Mapping, *, epsilon: float | None = None, delta: float | None = None,
        privacy_unit: str | None = None, claim: Mapping[str, float] | None = None, **extra) -> dict:
    """One row of the final table: figures in percent, the difference from the claim in points.

    Args:
        setting: "centralized", "DP", "federated" or "DP-federated".
        report: a :func:`lepton_nb.metrics.report` dict (fractions).
        epsilon, delta: the privacy guarantee, for the DP settings (required there).
        privacy_unit: what one epsilon protects ("one image", "one hospital").
        claim: the claimed figures in percent (default :data:`lepton_nb.metrics.SEED_CLAIM`).
        extra: further columns (e.g. ``architecture``, ``params``).

    Returns:
        dict with ``setting``, ``accuracy``, ``recall_macro``, ``f1_macro`` (percent, 2 decimals),
        ``epsilon`` and ``delta`` where they apply, ``privacy unit``, and ``accuracy - claim``,
        ``recall - claim``, ``F1 - claim`` (points, 1 decimal), then ``extra``.

    Raises:
        ValueError: an unknown setting, a DP setting without a finite epsilon, or a report
            missing a figure.
    """
    from lepton_nb.metrics import SEED_CLAIM

    if setting not in SETTINGS:
        raise ValueError(f"setting={setting!r}: choose one of {', '.join(SETTINGS)}")
    missing = [k for k in ("accuracy", "recall_macro", "f1_macro") if k not in report]
    if missing:
        raise ValueError(f"report lacks {missing}: pass a lepton_nb.metrics.report() dict")
    private = setting.startswith("DP")
    if private and (epsilon is None or not np.isfinite(epsilon)):
        raise ValueError(f"setting={setting!r} needs the finite epsilon the model was trained at, got {epsilon}")
    if not private and epsilon is not None:
        raise ValueError(f"setting={setting!r} is not private: an epsilon does not apply")
    claim = claim or SEED_CLAIM
    out: dict = {"setting": setting}
    out.update({k: round(100 * float(report[k]), 2) for k in ("accuracy", "recall_macro", "f1_macro")})
    if private:
        out["epsilon"] = round(float(epsilon), 2)
        out["delta"] = delta
        out["privacy unit"] = privacy_unit or "?"
    for key, label in (("accuracy", "accuracy - claim"), ("recall_macro", "recall - claim"),
                       ("f1_macro", "F1 - claim")):
        out[label] = round(100 * float(report[key]) - claim[key], 1)
    out.update(extra)
    return out


def comparison_table(rows: Mapping[str, Mapping], claim: Mapping[str, float] | None = None):
    """The final table: the seed's claim first, then one row per model (pandas DataFrame).

    ``rows`` maps model names to :func:`row` dicts. Epsilon is blank where it does not apply.
    """
    import pandas as pd

    from lepton_nb.metrics import SEED_CLAIM

    claim = claim or SEED_CLAIM
    if not rows:
        raise ValueError("no rows: train at least one model and pass {name: row(...)}")
    table = {"seed article (claimed)": {"setting": "claimed", **{k: claim[k] for k in claim}}}
    table.update({name: dict(r) for name, r in rows.items()})
    df = pd.DataFrame.from_dict(table, orient="index")
    first = ["setting", "accuracy", "recall_macro", "f1_macro", "epsilon", "delta", "privacy unit",
             "accuracy - claim", "recall - claim", "F1 - claim"]
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    df = df[cols].rename(columns={"accuracy": "accuracy %", "recall_macro": "macro recall %",
                                  "f1_macro": "macro F1 %"})
    return df


def summary_rows(rows: Mapping[str, Mapping]) -> dict[str, dict]:
    """``rows`` for :func:`lepton_nb.reports.record_models`.

    ``None`` cells are left out (blank in ``summary.md``), and ``delta`` is written as text
    ("1e-05"), which the summary's two-decimal number format would otherwise show as 0.00.
    """
    return {name: {k: (f"{v:g}" if k == "delta" else v) for k, v in r.items() if v is not None}
            for name, r in rows.items()}


def headline(rows: Mapping[str, Mapping]) -> dict[str, float]:
    """The case study's headline for ``summary.json``: each setting's test accuracy, private ones with
    the epsilon and privacy unit they were trained at."""
    def name(setting, r):
        if r.get("epsilon") is None:
            return f"{setting}: test accuracy %"
        return f"{setting}: test accuracy % (epsilon {r['epsilon']:.2f}, delta {r['delta']:g}, unit: {r['privacy unit']})"

    return {name(setting, r): r["accuracy"] for setting, r in rows.items()}


def claim_markdown(rows: Mapping[str, Mapping], dataset: str, claim: Mapping[str, float] | None = None) -> str:
    """A paragraph on the final table, every number taken from ``rows``.

    Names the best model of each setting, its gap to the claim, and the price of privacy in
    points of accuracy against the best centralized model.
    """
    from lepton_nb.metrics import SEED_CLAIM

    claim = claim or SEED_CLAIM
    if not rows:
        raise ValueError("no rows to describe")
    best: dict[str, tuple[str, Mapping]] = {}
    for name, r in rows.items():
        s = r["setting"]
        if s not in best or r["accuracy"] > best[s][1]["accuracy"]:
            best[s] = (name, r)
    parts = [f"The seed article claims {claim['accuracy']:.1f} % accuracy, {claim['recall_macro']:.1f} % macro "
             f"recall and {claim['f1_macro']:.1f} % macro F1 on unnamed \"medical images\"; this run used "
             f"**{dataset}**."]
    for s in SETTINGS:
        if s not in best:
            continue
        name, r = best[s]
        gap = r["accuracy - claim"]
        eps = (f" at epsilon {r['epsilon']:g} (delta {r['delta']:g}, unit: {r.get('privacy unit', '?')})"
               if "epsilon" in r and r["epsilon"] is not None else "")
        parts.append(f"Best {s} model, **{name}**{eps}: {r['accuracy']:.1f} / {r['recall_macro']:.1f} / "
                     f"{r['f1_macro']:.1f} %, {abs(gap):.1f} points {'below' if gap < 0 else 'above'} the claimed "
                     "accuracy.")
    if "centralized" in best:
        base = best["centralized"][1]["accuracy"]
        costs = [f"{s} {base - best[s][1]['accuracy']:.1f}" for s in SETTINGS[1:] if s in best]
        if costs:
            parts.append("Against the best centralized model, accuracy drops by " + ", ".join(costs) + " points.")
    return " ".join(parts)


def quality_failures(cfg: CaseStudyConfig, rows: Mapping[str, Mapping], *, bundled: bool,
                     targets: Mapping[str, float] | None = None) -> list[str]:
    """What fails the quality checks (empty when everything passes); smoke mode checks nothing.

    Args:
        cfg: the settings (mode and floors).
        rows: the final table's rows (:func:`row` dicts).
        bundled: whether the data is the bundled Fashion-MNIST sample (accuracy floors apply only there).
        targets: ``{model name: target epsilon}`` each DP model must not exceed.
    """
    if cfg.mode == "smoke":
        return []
    failures = []
    floors = {"centralized": cfg.checks.centralized, "DP": cfg.checks.dp, "federated": cfg.checks.federated,
              "DP-federated": cfg.checks.dp_federated}
    if bundled:
        for s, floor in floors.items():
            accs = [r["accuracy"] for r in rows.values() if r["setting"] == s]
            if accs and max(accs) < 100 * floor:
                failures.append(f"best {s} accuracy {max(accs):.2f} % < {100 * floor:.0f} %")
    for name, target in (targets or {}).items():
        eps = rows[name].get("epsilon")
        if eps is None or eps > target * (1 + cfg.checks.epsilon_slack):
            failures.append(f"{name}: epsilon {eps} exceeds its target {target}")
    return failures
