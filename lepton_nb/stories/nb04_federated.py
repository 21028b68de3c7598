"""Notebook 04, federated learning: its settings, its comparisons and the prose from their numbers.

The core is :mod:`lepton_nb.federated` (client data, TFF algorithms, the resumable round loop,
accounting, per-client metrics, the managed TFF worker, and
:class:`~lepton_nb.federated.simulation.Simulation`, which builds each TFF process once);
:class:`Experiment` runs the comparisons notebook 04 shows on top of it: centralized training,
FedAvg and its relatives from TFF (FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, a client
learning-rate schedule) on IID, Dirichlet(alpha) and label-shard splits, a run stopped and resumed,
per-hospital accuracy, DP-FedAvg with Poisson client sampling and its epsilon, and secure
aggregation (simulated) of every value that leaves a client. (A little over 400 lines: one
notebook's settings, comparisons, prose and checks, which belong together.)
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lepton_nb.data import Dataset
from lepton_nb.federated import client_data, loop
from lepton_nb.federated.settings import ALGORITHMS, ClientConfig, DPFedAvgConfig, FedAvgConfig
from lepton_nb.federated.simulation import Simulation
from lepton_nb.settings import SEED_CNN, CNNConfig, DataConfig, Mode, SettingsError, TrainConfig, by_mode

__all__ = ["Experiment", "FederatedConfig", "SECTION", "comparison_markdown", "dp_markdown", "get_config",
           "per_client_markdown", "quality_failures", "resume_markdown", "secure_markdown"]

SECTION = "04_federated_learning"
SPLITS = ("iid", "dirichlet", "shards")


@dataclass(frozen=True)
class FederatedConfig:
    """Notebook 04: centralized vs federated algorithms on three splits, per-hospital accuracy,
    resume, DP-FedAvg, secure aggregation.

    Attributes:
        data: the data set (bundled sample by default).
        model: the CNN trained everywhere but in the DP run (the seed CNN by default).
        fed: population, clients per round, rounds, local training and evaluation period of every
            run of the comparison (its ``algorithm`` is replaced per run).
        holdout: fraction of each client's examples held out of training: the clients' own
            validation data (choices between algorithms are made on it, never on the test set)
            and the data of the per-hospital accuracy.
        alpha: Dirichlet concentration of the non-IID split (Hsu et al. 2019).
        shards_per_client: label shards per client of the harsh split (McMahan et al. 2017): with
            2, most clients hold two classes.
        min_client_size: smallest client of the Dirichlet split (redrawn until it holds).
        comparison: (split, algorithm names) pairs: which algorithms of
            :data:`lepton_nb.federated.settings.ALGORITHMS` run on which split ("iid",
            "dirichlet", "shards"). FedAvg must run on IID and the Dirichlet split must be there.
        dp: the DP aggregation of the DP-FedAvg run (Poisson client sampling by default).
        dp_fedavg: its population, expected clients per round, rounds and local training (DP
            needs many clients per round: the noise on the mean shrinks as 1 / clients per round).
        dp_model: its model. The noise vector's norm grows as sqrt(parameters), so a small CNN
            (tanh after Papernot et al. 2021) learns where the 800k-parameter seed CNN drowns in
            noise at this number of clients.
        secure_rounds: rounds of the secure-aggregation run.
        centralized: the centralized baseline trained with :func:`lepton_nb.training.train`.
        target_accuracy: test accuracy whose first round is reported (rounds to target).
        checkpoints: save every run's state after each round under ``reports/federated_state``
            so that a killed notebook resumes its runs (the clean-up cell deletes the states).
        min_iid_accuracy: quality floor (%) of FedAvg IID, checked in default mode.
        max_central_gap: largest gap (points) of FedAvg IID below centralized, checked in full mode.
    """

    mode: Mode = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: CNNConfig = SEED_CNN
    fed: FedAvgConfig = field(default_factory=lambda: FedAvgConfig(
        num_clients=20, clients_per_round=5, rounds=12, eval_every=4,
        client=ClientConfig(local_epochs=1, batch_size=20, learning_rate=0.1)))
    holdout: float = 0.15
    alpha: float = 0.5
    shards_per_client: int = 2
    min_client_size: int = 10
    comparison: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("iid", ("FedAvg", "FedAdam")),
        ("dirichlet", ("FedAvg", "FedProx", "FedAvgM", "FedAdam", "FedAvg + cosine lr")),
        ("shards", ("FedAvg", "FedAdam")))
    dp: DPFedAvgConfig = field(default_factory=DPFedAvgConfig)
    dp_fedavg: FedAvgConfig = field(default_factory=lambda: FedAvgConfig(
        num_clients=60, clients_per_round=20, rounds=15, eval_every=5,
        client=ClientConfig(local_epochs=2, learning_rate=0.1)))
    dp_model: CNNConfig = CNNConfig(filters=8, depth=2, dense_units=0, activation="tanh")
    secure_rounds: int = 3
    centralized: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, early_stopping_patience=4,
                                                                         verbose=0))
    target_accuracy: float = 0.70
    checkpoints: bool = False
    min_iid_accuracy: float | None = 72.0
    max_central_gap: float | None = None

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise SettingsError(f"FederatedConfig.alpha={self.alpha}: the Dirichlet concentration must be > 0 "
                                "(small = more skewed)")
        if not 0 < self.holdout < 1:
            raise SettingsError(f"FederatedConfig.holdout={self.holdout}: a fraction in (0, 1), e.g. 0.15")
        if self.secure_rounds < 1:
            raise SettingsError("FederatedConfig.secure_rounds must be >= 1")
        if not 0 < self.target_accuracy < 1:
            raise SettingsError(f"FederatedConfig.target_accuracy={self.target_accuracy}: a fraction in (0, 1)")
        plan = dict(self.comparison)
        for split, names in self.comparison:
            if split not in SPLITS:
                raise SettingsError(f"FederatedConfig.comparison names split {split!r}: choose from {SPLITS}")
            unknown = [a for a in names if a not in ALGORITHMS]
            if unknown:
                raise SettingsError(f"FederatedConfig.comparison names {unknown}: choose from {sorted(ALGORITHMS)}")
        if "FedAvg" not in plan.get("iid", ()) or not plan.get("dirichlet"):
            raise SettingsError("FederatedConfig.comparison must run FedAvg on 'iid' (the reference) and at least "
                                "one algorithm on 'dirichlet'")


def _smoke() -> FederatedConfig:
    client = ClientConfig(local_epochs=1, batch_size=20, learning_rate=0.1)
    tiny = FedAvgConfig(num_clients=6, clients_per_round=3, rounds=2, client=client, eval_every=1, test_clients=2)
    return FederatedConfig(
        data=DataConfig(max_train=600, max_test=300), fed=tiny, min_client_size=5,
        comparison=(("iid", ("FedAvg",)), ("dirichlet", ("FedAvg", "FedAdam")), ("shards", ("FedAvg",))),
        dp_fedavg=replace(tiny, rounds=1), secure_rounds=1,
        centralized=TrainConfig(epochs=1, early_stopping_patience=None, verbose=0, tensorboard=False),
        target_accuracy=0.3, min_iid_accuracy=None)


def _full() -> FederatedConfig:
    # 100 clients, 10 per round (the FedAvg paper's C = 0.1); E = 2, B = 20. Measured on 2 CPU cores:
    # 3-5 s per round of ~10k examples, the whole notebook in 57 minutes.
    client = ClientConfig(local_epochs=2, batch_size=20, learning_rate=0.1)
    return FederatedConfig(
        data=DataConfig(full=True),
        fed=FedAvgConfig(num_clients=100, clients_per_round=10, rounds=80, client=client, eval_every=5,
                         test_clients=10),
        comparison=(("iid", ("FedAvg",)),
                    ("dirichlet", ("FedAvg", "FedProx", "FedAdam", "FedYogi", "FedAvg + cosine lr")),
                    ("shards", ("FedAvg", "FedAdam"))),
        dp=DPFedAvgConfig(noise_multiplier=1.0),
        dp_fedavg=FedAvgConfig(num_clients=1000, clients_per_round=100, rounds=50,
                               client=ClientConfig(local_epochs=1, batch_size=10, learning_rate=0.05), eval_every=10,
                               test_clients=10),
        secure_rounds=10,
        centralized=TrainConfig(epochs=30, batch_size=128, early_stopping_patience=4, verbose=0),
        target_accuracy=0.85, checkpoints=True, min_iid_accuracy=None, max_central_gap=2.0)


def get_config(mode: Mode | None = None) -> FederatedConfig:
    """Settings of notebook 04 for ``mode`` (default: ``LEPTON_NB_SMOKE`` / ``LEPTON_NB_FULL``)."""
    return by_mode(mode, smoke=_smoke, default=FederatedConfig, full=_full)


class Experiment:
    """The runs of notebook 04 on one data set, on one :class:`~lepton_nb.federated.simulation.Simulation`.

    Args:
        data: the loaded data set (its training split is spread over clients; its test split is
            the held-out evaluation set).
        cfg: every setting of the notebook.
        progress: progress bars over rounds.
    """

    def __init__(self, data: Dataset, cfg: FederatedConfig, *, progress: bool = True):
        n = cfg.fed.num_clients
        if n * cfg.min_client_size > len(data.y_train):
            raise ValueError(f"num_clients={n} of at least {cfg.min_client_size} examples exceed the "
                             f"{len(data.y_train)} training examples")
        from lepton_nb.reports import reports_dir

        self.data, self.cfg = data, cfg
        root = reports_dir() / "federated_state" / SECTION if cfg.checkpoints else None
        self.sim = Simulation(data, progress=progress, state_root=root)
        self._splits: dict[str, client_data.FederatedData] = {}

    @property
    def runs(self) -> dict[str, loop.FederatedRun]:
        return self.sim.runs

    def split(self, kind: str = "iid") -> client_data.FederatedData:
        """The training split over ``cfg.fed.num_clients`` clients: "iid", "dirichlet" (``cfg.alpha``) or
        "shards", each client holding ``cfg.holdout`` of its examples out (built once)."""
        n, held = self.cfg.fed.num_clients, self.cfg.holdout
        key = kind
        if key not in self._splits:
            seed = self.cfg.fed.seed
            if kind == "iid":
                fd = self.sim.split(n, seed=seed, holdout=held)
            elif kind == "dirichlet":
                fd = self.sim.split(n, alpha=self.cfg.alpha, seed=seed, min_size=self.cfg.min_client_size,
                                    holdout=held)
            elif kind == "shards":
                fd = self.sim.split(n, shards_per_client=self.cfg.shards_per_client, seed=seed, holdout=held)
            else:
                raise ValueError(f"split {kind!r}: choose 'iid', 'dirichlet' or 'shards'")
            self._splits[key] = fd
        return self._splits[key]

    def splits(self) -> dict[str, client_data.FederatedData]:
        """The three splits of the comparison, keyed by their names (e.g. "dirichlet(0.5)")."""
        return {fd.split: fd for fd in (self.split(k) for k in SPLITS)}

    def centralized(self):
        """The same model trained centrally with :func:`lepton_nb.training.train` (all data pooled)."""
        from lepton_nb.models import build_cnn
        from lepton_nb.training import train

        shape, k = self.data.input_shape, self.data.num_classes
        return train(lambda: build_cnn(self.cfg.model, input_shape=shape, num_classes=k), self.data,
                     self.cfg.centralized, data_cfg=self.cfg.data, name="centralized")

    def _cfg(self, algorithm: str) -> FedAvgConfig:
        return replace(self.cfg.fed, algorithm=ALGORITHMS[algorithm])

    def _name(self, kind: str, algorithm: str) -> str:
        return f"{algorithm} / {self.split(kind).split}"

    def resume_demo(self) -> loop.FederatedRun:
        """FedAvg on the IID split, stopped halfway and resumed from its saved state.

        The first call runs half the rounds and saves the state after each round
        (``tff.program.FileProgramStateManager``); the second call, given the same folder, loads the
        last saved round and runs the rest. The result is the comparison's IID FedAvg run.
        """
        cfg = self._cfg("FedAvg")
        half = max(1, cfg.rounds // 2)
        name = self._name("iid", "FedAvg")
        with tempfile.TemporaryDirectory(prefix="lepton_nb_resume_") as tmp:
            state_dir = self.sim.state_dir(name) or Path(tmp)
            self.sim.fedavg(self.cfg.model, self.split("iid"), replace(cfg, rounds=half), name=name,
                            state_dir=state_dir)
            return self.sim.fedavg(self.cfg.model, self.split("iid"), cfg, name=name, state_dir=state_dir)

    def compare(self) -> dict[str, dict[str, loop.FederatedRun]]:
        """Every (split, algorithm) run of ``cfg.comparison``: ``{split name: {algorithm: run}}``.

        Runs already done (e.g. by :meth:`resume_demo`) are reused. Every run starts from the same
        initial model and sees the same clients and shuffles per round.
        """
        out: dict[str, dict[str, loop.FederatedRun]] = {}
        for kind, names in self.cfg.comparison:
            data = self.split(kind)
            out[data.split] = {}
            for a in names:
                name = self._name(kind, a)
                run = self.runs.get(name) or self.sim.fedavg(self.cfg.model, data, self._cfg(a), name=name)
                out[data.split][a] = run
        return out

    @staticmethod
    def best(runs: dict[str, loop.FederatedRun]) -> str:
        """The algorithm of ``runs`` with the highest mean held-out accuracy over its last three
        evaluations (the clients' validation data; never the test set)."""
        return max(runs, key=lambda a: runs[a].val_accuracy_last(3))

    def comparison_table(self, results: dict[str, dict[str, loop.FederatedRun]]):
        """One row per (split, algorithm): test accuracy, held-out accuracy (last three evaluations),
        rounds to ``cfg.target_accuracy``, seconds per round (pandas DataFrame)."""
        import pandas as pd

        rows = []
        for split, runs in results.items():
            for a, run in runs.items():
                rows.append({"split": split, "algorithm": a, "test accuracy %": round(100 * run.test_accuracy, 2),
                             "held-out accuracy % (last 3)": round(100 * run.val_accuracy_last(3), 2),
                             f"rounds to {100 * self.cfg.target_accuracy:.0f} %": run.rounds_to(self.cfg.target_accuracy),
                             "seconds per round": round(run.steady_round_seconds, 2)})
        df = pd.DataFrame(rows).set_index(["split", "algorithm"])
        col = f"rounds to {100 * self.cfg.target_accuracy:.0f} %"
        df[col] = df[col].astype("Int64")  # a whole number of rounds, or <NA> when never reached
        return df

    def per_client(self, results: dict[str, dict[str, loop.FederatedRun]]) -> dict[str, "pd.DataFrame"]:
        """Per-client accuracy (:func:`lepton_nb.federated.per_client.for_run`) of FedAvg and of the
        best algorithm (by held-out accuracy) on each split: ``{"<algorithm> / <split>": table}``."""
        from lepton_nb.federated import per_client

        out = {}
        data = {fd.split: fd for fd in self.splits().values()}
        for split, runs in results.items():
            for a in dict.fromkeys(["FedAvg", self.best(runs)]):
                if a in runs:
                    out[f"{a} / {split}"] = per_client.for_run(runs[a], data[split], self.data.x_test,
                                                               self.data.y_test)
        return out

    def dp_fedavg(self) -> loop.FederatedRun:
        """DP-FedAvg on an IID split (no client holds data out: a DP run evaluates on the test set
        only), with its user-level epsilon and what it covers in ``run.extra``."""
        return self.sim.dp_fedavg(self.cfg.dp_model, self._dp_split(), self.cfg.dp_fedavg, self.cfg.dp,
                                  name="DP-FedAvg")

    def _dp_split(self) -> client_data.FederatedData:
        cfg = self.cfg.dp_fedavg
        key = f"dp/{cfg.num_clients}"
        if key not in self._splits:
            self._splits[key] = self.sim.split(cfg.num_clients, seed=cfg.seed)
        return self._splits[key]

    def dp_epsilon_curve(self, run: loop.FederatedRun) -> dict[int, float]:
        """User-level epsilon after rounds of the DP run (the accounting of the run itself)."""
        from lepton_nb.federated.accounting import epsilon_curve

        cfg, dp = run.config, self.cfg.dp
        return epsilon_curve(dp.noise_multiplier, cfg.clients_per_round, cfg.num_clients,
                             int(run.history["round"].max()), run.extra["delta"], sampling=dp.sampling)

    def dp_non_private(self) -> loop.FederatedRun:
        """The DP run's model and population without noise or clipping (its utility ceiling)."""
        return self.sim.fedavg(self.cfg.dp_model, self._dp_split(), self.cfg.dp_fedavg, name="DP model, no noise")

    def secure(self) -> loop.FederatedRun:
        """FedAvg with every client value securely summed, in TFF's test context (no cryptography)."""
        cfg = replace(self.cfg.fed, rounds=self.cfg.secure_rounds, eval_every=self.cfg.secure_rounds)
        return self.sim.secure_fedavg(self.cfg.model, self.split("iid"), cfg, name="secure FedAvg (simulated)")

    def table(self):
        """Every run so far, one row each."""
        return self.sim.table()


def quality_failures(cfg: FederatedConfig, acc: dict[str, float]) -> list[str]:
    """What fails notebook 04's floors (``acc``: "centralized", "fedavg_iid", "fedavg_non_iid" -> test accuracy %)."""
    failures = []
    if cfg.min_iid_accuracy is not None:
        if acc["fedavg_iid"] < cfg.min_iid_accuracy:
            failures.append(f"FedAvg IID reached {acc['fedavg_iid']} % (< {cfg.min_iid_accuracy} %)")
        if acc["fedavg_iid"] < acc["fedavg_non_iid"] - 2:
            failures.append("non-IID beat IID by more than noise")
    if cfg.max_central_gap is not None and acc["centralized"] - acc["fedavg_iid"] > cfg.max_central_gap:
        failures.append(f"FedAvg IID is {acc['centralized'] - acc['fedavg_iid']:.1f} points below centralized "
                        f"(> {cfg.max_central_gap})")
    return failures


# ---------------------------------------------------------------------------------- prose from runs


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def comparison_markdown(results: dict[str, dict[str, loop.FederatedRun]], central_accuracy: float,
                        target: float) -> str:
    """The comparison in prose: centralized vs IID FedAvg, the best algorithm on each non-IID split
    (chosen on the clients' held-out data) and its distance to IID FedAvg; every number from the runs."""
    iid_name = next(s for s in results if s == "iid")
    ref = results[iid_name]["FedAvg"]
    c = ref.config
    gap = 100 * (central_accuracy - ref.test_accuracy)
    hit = ref.rounds_to(target)
    parts = [f"Centralized training reached **{_pct(central_accuracy)}**. FedAvg over {c.num_clients} clients, "
             f"{c.clients_per_round} per round, E = {c.client.local_epochs}, B = {c.client.batch_size}, reached "
             f"**{_pct(ref.test_accuracy)}** on the IID split after {int(ref.history['round'].max())} rounds "
             f"({abs(gap):.1f} points {'below' if gap >= 0 else 'above'} centralized; "
             + (f"{_pct(target)} first at round {hit})." if hit else f"{_pct(target)} not reached).")]
    for split, runs in results.items():
        if split == iid_name:
            continue
        best = Experiment.best(runs)
        b, f = runs[best], runs.get("FedAvg")
        d = 100 * (ref.test_accuracy - b.test_accuracy)
        text = (f"On **{split}**, the best of {len(runs)} algorithm(s) on the clients' held-out data was "
                f"**{best}** ({_pct(b.val_accuracy_last(3))} held out, mean of the last three evaluations): "
                f"**{_pct(b.test_accuracy)}** on the test set, {abs(d):.1f} points {'below' if d >= 0 else 'above'} "
                "IID FedAvg")
        if f is not None and best != "FedAvg":
            text += f"; FedAvg reached {_pct(f.test_accuracy)} there"
        parts.append(text + ".")
    parts.append("Differences of a point or two are within the noise of one seed and a few hundred held-out "
                 "images; the choice uses the held-out data only, and the test set reports it.")
    return " ".join(parts)


def resume_markdown(run: loop.FederatedRun) -> str:
    """A sentence on the run that was stopped and resumed."""
    first, last = run.resumed_from + 1, int(run.history["round"].max())
    rest = f"round {last}" if first == last else f"rounds {first}-{last}"
    return (f"The IID FedAvg run was stopped after round {run.resumed_from} and started again on the same state "
            f"folder: TFF's `FileProgramStateManager` loaded round {run.resumed_from}, and the loop ran {rest} "
            "with the clients and shuffles the uninterrupted "
            "run would have used (both are functions of the seed and the round); the history above comes back "
            "whole from the CSV release manager. `make test` kills a real run with SIGKILL and checks that the "
            "resumed run ends with the same model as an uninterrupted one.")


def per_client_markdown(tables: dict[str, "pd.DataFrame"]) -> str:
    """The spread of per-client accuracy, worst client first; every number from the tables."""
    from lepton_nb.federated.per_client import distribution

    parts = []
    for label, t in tables.items():
        h, m = distribution(t["heldout_accuracy"]), distribution(t["test_accuracy_at_client_mix"])
        parts.append(f"**{label}**: on their own held-out data the worst client scored {h['min']:.1f} %, the 10th "
                     f"percentile {h['p10']:.1f} % and the median {h['median']:.1f} %; at their label mix on the test "
                     f"set {m['min']:.1f} / {m['p10']:.1f} / {m['median']:.1f} %.")
    sizes = next(iter(tables.values()))["heldout_n"]
    lo, hi = int(sizes.min()), int(sizes.max())
    return (" ".join(parts) + f" Held-out parts are small ({lo if lo == hi else f'{lo}-{hi}'} images per client), "
            "so the held-out figures of single clients are noisy; the test-set figure at each client's label mix "
            "rests on the whole test set.")


def dp_markdown(dp_run: loop.FederatedRun, reference: loop.FederatedRun | None = None) -> str:
    """A paragraph on the DP-FedAvg run: epsilon with its relation, sampling and coverage; numbers from the run."""
    e, c = dp_run.extra, dp_run.config
    text = (f"DP-FedAvg with noise multiplier {e['noise_multiplier']:g} over {c.num_clients} clients (client "
            f"sampling: {e['sampling']}; {c.clients_per_round} clients per round expected) for "
            f"{int(dp_run.history['round'].max())} rounds gives "
            f"**user-level epsilon = {e['epsilon']:.2f}** at delta = {e['delta']:.2g}, for neighbouring data sets that "
            f"differ by **{e['neighbouring']}** (dp_accounting, the smaller of the RDP bound {e['epsilon_rdp']:.2f} "
            + (f"and the PLD bound {e['epsilon_pld']:.2f}" if np.isfinite(e['epsilon_pld']) else "(no PLD bound for "
               "this sampling)")
            + f"), and a test accuracy of **{_pct(dp_run.test_accuracy)}** with a {e['params']:,}-parameter model")
    if reference is not None:
        text += f" (the same model and clients without noise or clipping: {_pct(reference.test_accuracy)})"
    if e["epsilon"] > 10:
        scale = ("with this few clients the noise on the mean is large, so meaningful epsilons (below 10) need "
                 "thousands of clients per round")
    else:
        scale = (f"the noise on the mean shrinks as 1 / clients per round, which is why this run needs "
                 f"{c.num_clients:,} clients and {c.clients_per_round} per round for an epsilon below 10")
    return text + (f". The epsilon covers {e['epsilon_covers']}. Client sampling: {e['randomness']}. It protects a "
                   f"whole client (all its images), not one image; {scale} (McMahan et al. 2018 sampled about 100 "
                   "of 763,000 users per round).")


def secure_markdown(run: loop.FederatedRun) -> str:
    """What the secure run's computation lets leave the clients, and how it ran; from the run."""
    e = run.extra
    verdict = ("every one of them is a secure sum" if e["only_secure_sums"] else
               "**not** all of them are secure sums")
    return (f"In the whole `next` computation of this process, {e['client_to_server_calls']} intrinsic calls move a "
            f"value from the clients to the server ({', '.join(f'`{u}`' for u in e['client_to_server_intrinsics'])}): "
            f"{verdict}, for the model update and for the training metrics (loss, accuracy, example and batch "
            f"counts) alike. It reached {_pct(run.test_accuracy)} after {int(run.history['round'].max())} round(s). "
            f"Execution: {e['execution']}.")
