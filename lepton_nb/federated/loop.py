"""The round loop: sample clients, run a round, evaluate every k rounds, log, export.

:func:`run` drives any ``tff.learning`` process built by :mod:`lepton_nb.federated.algorithms`
on a :class:`~lepton_nb.federated.client_data.FederatedData`, on the managed TFF worker of
:mod:`lepton_nb.federated.runtime`. It returns a :class:`FederatedRun`: the per-round history as a
pandas table (also written to TensorBoard), the final server state, and the global model exported
as a plain Keras model that :func:`lepton_nb.training.evaluate` / :func:`lepton_nb.metrics.report`
score like any other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lepton_nb.federated.algorithms import Task, fed_eval
from lepton_nb.federated.client_data import FederatedData, split_test
from lepton_nb.federated.settings import FedAvgConfig
from lepton_nb.reports import Summary

__all__ = ["FederatedRun", "Evaluator", "run"]


class Evaluator:
    """Federated evaluation (``build_fed_eval``) of global models on the held-out test set.

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

    def __call__(self, model_weights) -> dict[str, float]:
        """``{"test_loss", "test_accuracy"}`` of ``model_weights`` (call inside a runtime context)."""
        state = self.process.initialize()
        state = self.process.set_model_weights(state, model_weights)
        out = self.process.next(state, self.datasets)
        m = out.metrics["client_work"]["eval"]["current_round_metrics"]
        return {"test_loss": float(m["loss"]), "test_accuracy": float(m["accuracy"])}


@dataclass(eq=False)
class FederatedRun:
    """The outcome of :func:`run`.

    Attributes:
        name: run name (TensorBoard folder, table rows).
        history: one row per round: ``round``, ``seconds``, ``clients``, ``train_loss``,
            ``train_accuracy`` (averaged over the round's local training), ``test_loss`` and
            ``test_accuracy`` on evaluation rounds (NaN otherwise), plus aggregator measurements
            such as ``clip`` (DP) when present.
        state: the final server state of the learning process.
        process: the ``tff.learning`` process that was run.
        task: the model builder, used by :meth:`export_keras`.
        config: the settings of the run.
    """

    name: str
    history: "pd.DataFrame"
    state: object
    process: object
    task: Task
    config: FedAvgConfig
    data_split: str = ""
    extra: dict = field(default_factory=dict)

    def model_weights(self):
        """The global model's ``tff.learning.models.ModelWeights``."""
        return self.process.get_model_weights(self.state)

    def export_keras(self):
        """The global model as a new (uncompiled) Keras logits model."""
        return self.task.keras_model(self.model_weights())

    @property
    def test_accuracy(self) -> float:
        """Test accuracy after the last round (fraction)."""
        acc = self.history["test_accuracy"].dropna()
        return float(acc.iloc[-1]) if len(acc) else float("nan")

    def rounds_to(self, target: float) -> int | None:
        """First evaluated round whose test accuracy is >= ``target`` (``None`` if never)."""
        hit = self.history[self.history["test_accuracy"] >= target]
        return int(hit["round"].iloc[0]) if len(hit) else None

    @property
    def steady_round_seconds(self) -> float:
        """Median seconds per round after the first (which includes TFF's tracing)."""
        s = self.history["seconds"].to_numpy()
        return float(np.median(s[1:] if len(s) > 1 else s))

    def summary(self) -> dict:
        """Figures for reports (accuracy in percent)."""
        c = self.config
        return Summary({"split": self.data_split, "rounds": int(self.history["round"].max()),
                        "clients": c.num_clients, "clients_per_round": c.clients_per_round,
                        "local_epochs": c.client.local_epochs, "batch_size": c.client.batch_size,
                        "accuracy": round(100 * self.test_accuracy, 2),
                        "round_seconds": round(self.steady_round_seconds, 3),
                        "train_seconds": round(float(self.history["seconds"].sum()), 1), **self.extra})


def _flatten(prefix: str, value, out: dict) -> None:
    if hasattr(value, "items"):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    else:
        arr = np.asarray(value)
        if arr.ndim == 0 and np.issubdtype(arr.dtype, np.number):
            out[prefix] = float(arr)


def _round_metrics(metrics) -> dict[str, float]:
    flat: dict[str, float] = {}
    _flatten("", metrics, flat)
    row = {"train_loss": flat.get("client_work/train/loss", np.nan),
           "train_accuracy": flat.get("client_work/train/accuracy", np.nan)}
    for key, value in flat.items():  # DP aggregators report their current clipping norm
        if key.endswith("dp_query_metrics/clip") or key.endswith("/clip"):
            row["clip"] = value
        if key.endswith("zeroed_count"):
            row["zeroed"] = value
    return row


def run(
    process,
    data: FederatedData,
    cfg: FedAvgConfig,
    *,
    task: Task,
    evaluator: Evaluator | None = None,
    name: str = "fedavg",
    context: Literal["native", "test"] = "native",
    progress: bool = True,
    tensorboard: bool = True,
    address: str | None = None,
) -> FederatedRun:
    """Run ``cfg.rounds`` rounds of ``process`` over ``data``.

    Each round samples ``cfg.clients_per_round`` distinct clients with a NumPy generator seeded by
    ``cfg.seed`` (the same clients for the same seed, whatever the algorithm), gives each a
    shuffled, ``local_epochs``-times repeated, batched dataset, and calls ``process.next``. The
    global model is evaluated every ``cfg.eval_every`` rounds and after the last one.

    Args:
        process: a learning process from :mod:`lepton_nb.federated.algorithms`.
        data: the clients' training data.
        cfg: rounds, sampling, local training, evaluation period, seed.
        task: the model builder the process was built from (for export).
        evaluator: federated evaluation on the test set (``None``: no test metrics).
        name: run name (TensorBoard folder ``reports/tensorboard/<name>``, table rows).
        context: "native", or "test" for secure aggregation (simulated without cryptography).
        progress: show a progress bar over rounds.
        tensorboard: write the per-round history as TensorBoard scalars.
        address: ``host:port`` of a TFF worker started elsewhere (TFF's remote execution, see
            :func:`lepton_nb.federated.runtime.remote_context`); ``None``: the managed local worker.

    Raises:
        ValueError: more clients per round than clients, or an empty client, before any round.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from lepton_nb.federated import runtime

    if data.num_clients < 1:
        raise ValueError("no clients: federate the data over at least one client")
    if cfg.clients_per_round > data.num_clients:
        raise ValueError(f"clients_per_round={cfg.clients_per_round} exceeds the {data.num_clients} clients; "
                         "sample fewer clients per round or split the data over more clients")
    if (data.sizes == 0).any():
        raise ValueError(f"clients {np.flatnonzero(data.sizes == 0)[:10].tolist()} hold no examples")

    rng = np.random.default_rng(cfg.seed)
    ids = np.array(data.client_ids)
    rows: list[dict] = []
    writer = None
    if tensorboard:
        import tensorflow as tf

        from lepton_nb.reports import reports_dir

        writer = tf.summary.create_file_writer(str(reports_dir() / "tensorboard" / name))
    c = cfg.client
    where = runtime.remote_context(address, context) if address else runtime.context(context)
    with where:
        state = process.initialize()
        bar = tqdm(range(1, cfg.rounds + 1), desc=name, unit="round", disable=not progress, leave=True)
        for r in bar:
            chosen = rng.choice(len(ids), cfg.clients_per_round, replace=False)
            datasets = [data.dataset(ids[i], local_epochs=c.local_epochs, batch_size=c.batch_size,
                                     shuffle_buffer=c.shuffle_buffer, seed=int(cfg.seed * 1_000_003 + r * 10_007 + i))
                        for i in chosen]
            t0 = time.perf_counter()
            out = process.next(state, datasets)
            seconds = time.perf_counter() - t0
            state = out.state
            row = {"round": r, "seconds": seconds, "clients": cfg.clients_per_round,
                   "examples": int(data.sizes[chosen].sum()) * c.local_epochs, **_round_metrics(out.metrics),
                   "test_loss": np.nan, "test_accuracy": np.nan}
            if evaluator is not None and (r % cfg.eval_every == 0 or r == cfg.rounds):
                row.update(evaluator(process.get_model_weights(state)))
                bar.set_postfix(test_acc=f"{row['test_accuracy']:.3f}")
            rows.append(row)
            if writer is not None:
                with writer.as_default(step=r):
                    import tensorflow as tf

                    for k, v in row.items():
                        if k != "round" and np.isfinite(v):
                            tf.summary.scalar(k, v)
        bar.close()
    if writer is not None:
        writer.flush()
        writer.close()
    return FederatedRun(name, pd.DataFrame(rows), state, process, task, cfg, data.split)
