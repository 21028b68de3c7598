"""The round loop: sample clients, run a round, evaluate on schedule, save, release, resume.

:func:`run` drives any ``tff.learning`` process built by :mod:`lepton_nb.federated.algorithms`
on a :class:`~lepton_nb.federated.client_data.FederatedData`, on the managed TFF worker of
:mod:`lepton_nb.federated.runtime`. It is TFF's own loop, ``tff.simulation.run_training_process``,
with TFF's program state manager (``tff.program.FileProgramStateManager``: the server state is
saved after every round, written to a temporary folder then renamed, so a run killed while saving
leaves nothing half-written) and release managers (``tff.program.CSVFileReleaseManager``, one row
per round; ``tff.program.TensorBoardReleaseManager``). A call with the ``state_dir`` of a killed
run resumes from its last saved round; the clients of round r (:mod:`lepton_nb.federated.sampling`,
seeded) and their shuffles are functions of (seed, r), and so is the evaluation schedule, so the
resumed run trains on exactly what the uninterrupted run would have.

What is added around TFF's loop, and why:

- **Jupyter.** ``run_training_process`` calls ``asyncio.get_event_loop().run_until_complete``,
  which raises "This event loop is already running" inside a notebook kernel; there it runs in a
  helper thread with its own event loop, and the TFF context is installed inside that thread
  (TFF's context stack is thread-local).
- **Evaluation after the last round.** TFF evaluates when ``round % rounds_per_evaluation == 0``
  only; the evaluation function is called every round and evaluates every ``eval_every`` rounds
  and after the last one (returning ``{}`` otherwise). Outside DP runs it also releases the round's
  number of clients and examples (TFF's loop has no other per-round hook after training).
- **History.** TFF's loop returns only the state; the per-round table is read back from the CSV,
  which also holds the rounds run before a kill.

It returns a :class:`FederatedRun`: the per-round history as a pandas table, the final server
state, and the global model exported as a plain Keras model that :func:`lepton_nb.training.evaluate`
/ :func:`lepton_nb.metrics.report` score like any other.

A little over 400 lines: TFF's loop and each workaround it needs, kept beside the loop they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from lepton_nb.federated.algorithms import Task, fed_eval
from lepton_nb.federated.client_data import FederatedData, split_test
from lepton_nb.federated.settings import FedAvgConfig
from lepton_nb.reports import Summary

__all__ = ["Evaluator", "FederatedRun", "history", "round_seed", "run", "slug"]


class Evaluator:
    """Federated evaluation (``build_fed_eval``) of global models: on the test set, and on the
    clients' own held-out data when a run passes it.

    The test set (x (N, H, W, C), y (N,)) is split IID over ``test_clients`` evaluation clients;
    TFF sums the counts, so the accuracy is that of the whole test set.
    """

    def __init__(self, t: Task, x_test: np.ndarray, y_test: np.ndarray, *, test_clients: int = 4, seed: int = 0):
        if len(x_test) != len(y_test) or len(y_test) < test_clients:
            raise ValueError(f"test set: {len(x_test)} images, {len(y_test)} labels, {test_clients} evaluation "
                             "clients; need as many labels as images and at least one example per client")
        self.task = t
        self.process = fed_eval(t)
        self.datasets = split_test(x_test, y_test, test_clients, seed=seed)
        self.n = int(len(y_test))

    def _evaluate(self, model_weights, datasets) -> tuple[float, float]:
        state = self.process.set_model_weights(self.process.initialize(), model_weights)
        m = self.process.next(state, datasets).metrics["client_work"]["eval"]["current_round_metrics"]
        return float(m["loss"]), float(m["accuracy"])

    def __call__(self, model_weights, validation: list | None = None) -> dict[str, float]:
        """``{"test_loss", "test_accuracy"}`` of ``model_weights`` (call inside a runtime context),
        plus ``val_loss`` and ``val_accuracy`` over the ``validation`` client datasets if given."""
        out = dict(zip(("test_loss", "test_accuracy"), self._evaluate(model_weights, self.datasets)))
        if validation:
            out.update(zip(("val_loss", "val_accuracy"), self._evaluate(model_weights, validation)))
        return out


@dataclass(eq=False)
class FederatedRun:
    """The outcome of :func:`run`.

    Attributes:
        name: run name (TensorBoard folder, table rows).
        history: one row per round: ``round``, ``seconds``, ``train_loss`` and ``train_accuracy``
            (averaged over the round's local training; absent in DP runs), ``clients`` and
            ``examples`` (absent in DP runs), ``test_*`` and ``val_*`` on evaluation rounds (NaN
            otherwise), and aggregator measurements such as ``clip`` (DP) when present.
        state: the final server state of the learning process.
        process: the ``tff.learning`` process that was run.
        task: the model builder, used by :meth:`export_keras`.
        config: the settings of the run.
        data_split: the split's name ("iid", "dirichlet(0.5)", ...).
        extra: further figures for the summary (e.g. epsilon).
        resumed_from: the last round found saved when the run started (0: a fresh start).
        cohorts: the clients of each round run by this process (kept in memory only, never
            released: in DP runs who took part is private).
        private: a DP run (nothing computed from client data is released but the noised aggregate).
    """

    name: str
    history: "pd.DataFrame"
    state: object
    process: object
    task: Task
    config: FedAvgConfig
    data_split: str = ""
    extra: dict = field(default_factory=dict)
    resumed_from: int = 0
    cohorts: dict = field(default_factory=dict, repr=False)
    private: bool = False

    def model_weights(self):
        """The global model's ``tff.learning.models.ModelWeights``."""
        return self.process.get_model_weights(self.state)

    def export_keras(self):
        """The global model as a new (uncompiled) Keras logits model."""
        return self.task.keras_model(self.model_weights())

    def _last(self, column: str) -> float:
        if column not in self.history:
            return float("nan")
        acc = self.history[column].dropna()
        return float(acc.iloc[-1]) if len(acc) else float("nan")

    @property
    def test_accuracy(self) -> float:
        """Test accuracy after the last round (fraction)."""
        return self._last("test_accuracy")

    @property
    def val_accuracy(self) -> float:
        """Accuracy on the clients' held-out data after the last round (fraction; NaN if not evaluated)."""
        return self._last("val_accuracy")

    def val_accuracy_last(self, k: int = 3) -> float:
        """Mean held-out accuracy of the last ``k`` evaluations: the figure to choose between runs by
        (steadier than the last one alone; the test set is never used to choose)."""
        if "val_accuracy" not in self.history:
            return float("nan")
        acc = self.history["val_accuracy"].dropna()
        return float(acc.iloc[-k:].mean()) if len(acc) else float("nan")

    def rounds_to(self, target: float, column: str = "test_accuracy") -> int | None:
        """First evaluated round whose ``column`` is >= ``target`` (``None`` if never)."""
        if column not in self.history:
            return None
        hit = self.history[self.history[column] >= target]
        return int(hit["round"].iloc[0]) if len(hit) else None

    @property
    def steady_round_seconds(self) -> float:
        """Median seconds per round after the first (which includes TFF's tracing)."""
        s = self.history["seconds"].to_numpy()
        return float(np.median(s[1:] if len(s) > 1 else s))

    def summary(self) -> dict:
        """Figures for reports (accuracy in percent)."""
        c = self.config
        out = {"split": self.data_split, "algorithm": c.algorithm.name, "rounds": int(self.history["round"].max()),
               "clients": c.num_clients, "clients_per_round": c.clients_per_round,
               "local_epochs": c.client.local_epochs, "batch_size": c.client.batch_size,
               "accuracy": round(100 * self.test_accuracy, 2)}
        if "val_accuracy" in self.history:
            out["val_accuracy_last3"] = round(100 * self.val_accuracy_last(3), 2)
        out.update({"round_seconds": round(self.steady_round_seconds, 3),
                    "train_seconds": round(float(self.history["seconds"].sum()), 1)})
        if self.resumed_from:
            out["resumed_from_round"] = self.resumed_from
        return Summary({**out, **self.extra})


def slug(name: str) -> str:
    """A folder name for a run name ("FedAvg + cosine lr / dirichlet(0.5)" -> "fedavg_cosine_lr_dirichlet_0.5")."""
    import re

    return re.sub(r"[^a-z0-9.]+", "_", name.lower()).strip("_")


def round_seed(seed: int, r: int, client: int) -> int:
    """The shuffle seed of ``client``'s data in round ``r``: a pure function of (seed, round, client),
    so a resumed run shuffles exactly as the uninterrupted one."""
    return int((seed * 1_000_003 + r * 10_007 + client) % (2 ** 31 - 1))


#: CSV columns (TFF's names) -> history columns.
_COLUMNS = {"key": "round", "training_time_in_seconds": "seconds", "client_work/train/loss": "train_loss",
            "client_work/train/accuracy": "train_accuracy", "evaluation/clients": "clients",
            "evaluation/examples": "examples"}


def history(csv_path: str | Path):
    """The released rows of a run (one per round, round 0 dropped) as a pandas DataFrame, numbers parsed."""
    import pandas as pd

    with open(csv_path, newline="") as f:
        df = pd.DataFrame(list(csv.DictReader(f)))
    df = df.apply(pd.to_numeric, errors="coerce")
    renamed = {}
    for col in df.columns:
        if col in _COLUMNS:
            renamed[col] = _COLUMNS[col]
        elif col.startswith("evaluation/") and col.split("/", 1)[1].startswith(("test_", "val_")):
            renamed[col] = col.split("/", 1)[1]
        elif col.endswith("/clip"):  # the adaptive clipping norm of DP runs (from the noised count)
            renamed[col] = "clip"
    df = df.rename(columns=renamed)
    keep = ["round", "seconds", "clients", "examples", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
            "val_loss", "val_accuracy", "clip"]
    df = df[[c for c in keep if c in df.columns]]
    return df[df["round"] > 0].reset_index(drop=True)


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _in_own_thread(body: Callable[[], object]) -> object:
    """``body()`` in this thread, or in a helper thread when an asyncio loop already runs here (Jupyter)."""
    if not _in_running_loop():
        return body()
    box: dict = {}

    def target():
        try:
            box["value"] = body()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    th = threading.Thread(target=target, name="lepton-nb-round-loop")
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def run(
    process,
    data: FederatedData,
    cfg: FedAvgConfig,
    *,
    task: Task,
    evaluator: Evaluator | None = None,
    name: str = "fedavg",
    context: Literal["native", "test"] | object = "native",
    sampler: Callable[[int], np.ndarray] | None = None,
    private: bool = False,
    state_dir: str | Path | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    address: str | None = None,
) -> FederatedRun:
    """Run (or resume) ``cfg.rounds`` rounds of ``process`` over ``data``.

    Each round takes the clients ``sampler(r)`` (default: ``cfg.clients_per_round`` distinct
    clients from TFF's uniform sampler seeded by ``cfg.seed``), gives each a shuffled,
    ``local_epochs``-times repeated, batched dataset (shuffle seed :func:`round_seed`), and calls
    ``process.next``. The global model is evaluated every ``cfg.eval_every`` rounds and after the
    last one: on the test set, and on the clients' held-out data when ``data`` has some and the run
    is not ``private``.

    Args:
        process: a learning process from :mod:`lepton_nb.federated.algorithms`.
        data: the clients' training data.
        cfg: rounds, sampling, local training, evaluation period, seed.
        task: the model builder the process was built from (for export).
        evaluator: federated evaluation (``None``: no test or held-out metrics).
        name: run name (table rows; TensorBoard folder ``reports/tensorboard/<slug(name)>``).
        context: "native"; "test" for secure aggregation (simulated without cryptography); or a
            TFF context object, e.g. :func:`lepton_nb.federated.mergeable.mergeable_context`'s.
        sampler: ``round -> client indices`` (:mod:`lepton_nb.federated.sampling`); DP runs pass
            their Poisson sampler.
        private: a DP run: release nothing computed from the clients' data but the noised
            aggregate (no client counts, no evaluation on their held-out data).
        state_dir: save the server state after every round here, and resume from the last saved
            round if the folder holds one (``None``: no saving; the history goes to a temporary
            folder).
        progress: show a progress bar over rounds.
        tensorboard: also release the per-round figures as TensorBoard scalars.
        address: ``host:port`` of a TFF worker started elsewhere (TFF's remote execution, see
            :func:`lepton_nb.federated.runtime.remote_context`); ``None``: the managed local worker.

    Raises:
        ValueError: more clients per round than clients, or an empty client, before any round.
    """
    from lepton_nb.federated import runtime, sampling

    if data.num_clients < 1:
        raise ValueError("no clients: federate the data over at least one client")
    if cfg.clients_per_round > data.num_clients:
        raise ValueError(f"clients_per_round={cfg.clients_per_round} exceeds the {data.num_clients} clients; "
                         "sample fewer clients per round or split the data over more clients")
    if (data.sizes == 0).any():
        raise ValueError(f"clients {np.flatnonzero(data.sizes == 0)[:10].tolist()} hold no examples")
    if sampler is None:
        sampler = sampling.uniform(data.num_clients, cfg.clients_per_round, cfg.seed)
    validation = data.heldout_datasets() if (data.has_heldout and not private and evaluator is not None) else None
    ids, c = data.client_ids, cfg.client
    cohorts: dict[int, np.ndarray] = {}
    tmp = None if state_dir is not None else tempfile.TemporaryDirectory(prefix="lepton_nb_fl_")
    folder = Path(state_dir if state_dir is not None else tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "metrics.csv"
    if state_dir is not None:
        _check_same_run(folder, cfg, data, private)

    def body():
        import tensorflow_federated as tff
        from tqdm.auto import tqdm

        from lepton_nb.reports import reports_dir

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # run_training_process calls asyncio.get_event_loop()
        bar = tqdm(total=cfg.rounds, desc=name, unit="round", disable=not progress, leave=True)
        state_manager = (tff.program.FileProgramStateManager(str(folder), keep_total=3)
                         if state_dir is not None else None)
        start = 0
        if state_manager is not None:
            versions = loop.run_until_complete(state_manager.get_versions()) or []
            start = max(versions) if versions else 0
            bar.update(start)
        managers = [tff.program.CSVFileReleaseManager(str(csv_path), save_mode=tff.program.CSVSaveMode.WRITE)]
        if tensorboard:
            managers.append(tff.program.TensorBoardReleaseManager(str(reports_dir() / "tensorboard" / slug(name))))

        def select(r):
            chosen = np.asarray(sampler(r), np.int64)
            cohorts[r] = chosen
            return [data.dataset(ids[i], local_epochs=c.local_epochs, batch_size=c.batch_size,
                                 shuffle_buffer=c.shuffle_buffer, seed=round_seed(cfg.seed, r, int(i)))
                    for i in chosen]

        def evaluate(state, r):
            if r == 0:
                return {}
            out = {}
            if not private:
                out = {"clients": len(cohorts[r]), "examples": int(data.sizes[cohorts[r]].sum()) * c.local_epochs}
            if evaluator is not None and (r % cfg.eval_every == 0 or r == cfg.rounds):
                out.update(evaluator(process.get_model_weights(state), validation))
                bar.set_postfix(test_acc=f"{out['test_accuracy']:.3f}")
            bar.update(r - bar.n)
            return out

        from lepton_nb.distributed import quiet_tf_logging

        runtime.install_default()
        where = (runtime.remote_context(address, context) if address else
                 runtime.context(context) if isinstance(context, str) else _installed(context))
        try:
            with where, quiet_tf_logging("ERROR"):  # each saved state logs "Assets written to" at INFO
                return start, tff.simulation.run_training_process(
                    process, training_selection_fn=select, total_rounds=cfg.rounds, evaluation_fn=evaluate,
                    evaluation_selection_fn=lambda r: r, rounds_per_evaluation=1,
                    program_state_manager=state_manager, metrics_managers=managers)
        finally:
            bar.close()
            asyncio.set_event_loop(None)
            loop.close()

    try:
        start, state = _in_own_thread(body)
        table = history(csv_path)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return FederatedRun(name, table, state, process, task, cfg, data.split, resumed_from=start, cohorts=cohorts,
                        private=private)


def _check_same_run(folder: Path, cfg: FedAvgConfig, data: FederatedData, private: bool) -> None:
    """Refuse to resume a state saved by a different run (other settings or clients) in ``folder``.

    The number of rounds may grow (that is how a run is continued), unless a learning-rate
    schedule depends on it.
    """
    import json
    from dataclasses import asdict

    settings = asdict(cfg)
    settings.pop("eval_every")
    if cfg.algorithm.client_schedule is None:
        settings.pop("rounds")
    mine = {"config": repr(settings), "split": data.split, "sizes": [int(n) for n in data.sizes], "private": private}
    path = folder / "run.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != mine:
            diff = sorted(k for k in mine if saved.get(k) != mine[k])
            raise ValueError(f"{folder} holds the saved state of a different run (its {', '.join(diff)} differ); "
                             "delete the folder or give this run another state_dir")
    else:
        path.write_text(json.dumps(mine))


@contextlib.contextmanager
def _installed(ctx):
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

    with context_stack_impl.context_stack.install(ctx):
        yield ctx
