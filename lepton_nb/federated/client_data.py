"""Training data split over simulated clients, exposed as a TFF ``ClientData``.

The split itself is :func:`lepton_nb.data.partition` (IID, Dirichlet(alpha) after Hsu et al. 2019,
or McMahan et al. 2017's label shards); this module checks it, keeps each client's examples
contiguous, and serves per-client ``tf.data`` pipelines with local epochs, shuffling and batching.
Optionally each client keeps a random part of its examples out of training (``holdout``): its
own held-out data, which federated evaluation and the per-client ("per-hospital") accuracy use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lepton_nb.data import Dataset, partition
from lepton_nb.reports import Summary

__all__ = ["FederatedData", "federate", "from_parts", "hold_out", "split_test"]


def _client_data_class():
    """``ArrayClientData``, defined on first use so that TFF is imported only when needed."""
    global _ArrayClientData
    if _ArrayClientData is not None:
        return _ArrayClientData
    import tensorflow as tf
    import tensorflow_federated as tff

    from lepton_nb.federated import runtime

    runtime.install_default()  # never let TFF start its own unmanaged worker

    class ArrayClientData(tff.simulation.datasets.ClientData):
        """A ``tff.simulation.datasets.ClientData`` over in-memory arrays.

        Client ``i`` holds ``x[offsets[i]:offsets[i+1]]`` (images (n_i, H, W, C) float32) and the
        matching int64 labels; its dataset yields ``(image, label)`` pairs, one example each.
        """

        def __init__(self, client_ids, x, y, offsets):
            self._ids = list(client_ids)
            self._x, self._y, self._offsets = x, y, np.asarray(offsets, np.int64)
            self._index = {cid: i for i, cid in enumerate(self._ids)}
            self._serializable = None

        @property
        def client_ids(self) -> list[str]:
            return list(self._ids)

        def create_tf_dataset_for_client(self, client_id: str) -> "tf.data.Dataset":
            if client_id not in self._index:
                raise ValueError(f"unknown client id {client_id!r}; known ids are {self._ids[:3]}...")
            i = self._index[client_id]
            a, b = self._offsets[i], self._offsets[i + 1]
            return tf.data.Dataset.from_tensor_slices((self._x[a:b], self._y[a:b]))

        @property
        def serializable_dataset_fn(self):
            """A ``tf.function``-compatible ``client_id -> dataset`` (embeds the arrays as constants)."""
            if self._serializable is None:
                table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(tf.constant(self._ids), tf.range(len(self._ids), dtype=tf.int64)),
                    default_value=-1)
                x, y, off = self._x, self._y, self._offsets

                def fn(client_id):
                    i = table.lookup(client_id)
                    a, b = tf.gather(off, i), tf.gather(off, i + 1)
                    return tf.data.Dataset.from_tensor_slices((x, y)).skip(a).take(b - a)

                self._serializable = fn
            return self._serializable

        @property
        def element_type_structure(self):
            return (tf.TensorSpec(self._x.shape[1:], tf.float32), tf.TensorSpec((), tf.int64))

    _ArrayClientData = ArrayClientData
    return ArrayClientData


_ArrayClientData = None


@dataclass(eq=False)
class FederatedData:
    """Training data spread over ``num_clients`` simulated clients.

    Attributes:
        client_data: the TFF ``ClientData`` (ids "client_000", ...).
        parts: per client, the indices into the original training arrays.
        histograms: examples per class per client, int array (num_clients, num_classes).
        class_names: names of the classes, in label order.
        split: how the data was split ("iid", "dirichlet(0.5)", "shards(2)", "custom").
        element_shape: the shape of one image (H, W, C).
        heldout_parts: per client, indices of its held-out examples (never trained on), or
            ``None`` when the clients keep nothing out.
        source: the original ``(x, y)`` arrays the indices point into.
    """

    client_data: object
    parts: list[np.ndarray]
    histograms: np.ndarray
    class_names: tuple[str, ...]
    split: str
    element_shape: tuple[int, ...]
    heldout_parts: list[np.ndarray] | None = None
    source: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def client_ids(self) -> list[str]:
        return self.client_data.client_ids

    @property
    def num_clients(self) -> int:
        return len(self.parts)

    @property
    def sizes(self) -> np.ndarray:
        """Examples per client, shape (num_clients,)."""
        return self.histograms.sum(axis=1)

    def classes_per_client(self, min_share: float = 0.05) -> np.ndarray:
        """Classes making up at least ``min_share`` of each client's data, shape (num_clients,)."""
        share = self.histograms / np.maximum(self.sizes[:, None], 1)
        return (share >= min_share).sum(axis=1)

    def dataset(self, client_id: str, *, local_epochs: int = 1, batch_size: int = 20,
                shuffle_buffer: int | None = None, seed: int | None = None) -> "tf.data.Dataset":
        """One client's training pipeline: shuffle -> repeat(local_epochs) -> batch.

        Shuffling is reseeded by ``seed`` (the loop passes one per round and client), with a
        fresh order in every local epoch. Images (B, H, W, C) float32, labels (B,) int64.
        """
        ds = self.client_data.create_tf_dataset_for_client(client_id)
        n = int(self.sizes[self.client_ids.index(client_id)])
        ds = ds.shuffle(shuffle_buffer or n, seed=seed, reshuffle_each_iteration=True)
        return ds.repeat(local_epochs).batch(batch_size)

    @property
    def has_heldout(self) -> bool:
        return self.heldout_parts is not None

    def heldout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every client's held-out examples: images (M, H, W, C), labels (M,), owning client (M,).

        Raises:
            ValueError: the clients hold nothing out (``federate(..., holdout=0)``).
        """
        if self.heldout_parts is None or self.source is None:
            raise ValueError("these clients hold no data out: federate(..., holdout=0.15) keeps 15 % of each "
                             "client's examples for evaluation")
        idx = np.concatenate(self.heldout_parts)
        owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(self.heldout_parts)])
        x, y = self.source
        return x[idx], np.asarray(y[idx], np.int64), owner

    def heldout_datasets(self, batch_size: int = 256) -> list["tf.data.Dataset"]:
        """One batched dataset of held-out examples per client (for federated evaluation)."""
        import tensorflow as tf

        x, y, owner = self.heldout()
        return [tf.data.Dataset.from_tensor_slices((x[owner == i], y[owner == i])).batch(batch_size)
                for i in range(self.num_clients)]

    def table(self):
        """Per-client sizes and class counts as a pandas DataFrame (one row per client)."""
        import pandas as pd

        df = pd.DataFrame(self.histograms, index=self.client_ids, columns=list(self.class_names))
        df.insert(0, "examples", self.sizes)
        return df

    def summary(self) -> dict:
        """Split, number of clients, sizes and class spread, for reports."""
        out = {"split": self.split, "clients": self.num_clients, "examples": int(self.sizes.sum()),
               "min_size": int(self.sizes.min()), "max_size": int(self.sizes.max()),
               "mean_classes_per_client": round(float(self.classes_per_client().mean()), 2)}
        if self.heldout_parts is not None:
            out["heldout_examples"] = int(sum(len(p) for p in self.heldout_parts))
        return Summary(out)

    def __repr__(self) -> str:
        s = self.summary()
        return (f"FederatedData({s['split']}: {s['clients']} clients, {s['examples']} examples, "
                f"{s['min_size']}..{s['max_size']} per client, {s['mean_classes_per_client']} classes per client)")


def hold_out(parts: Sequence[np.ndarray], fraction: float, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each client's indices into a training part and a held-out part of ``fraction``.

    Each client with at least two examples holds out ``round(fraction * n)`` of them (at least
    one), drawn at random; a client of one example keeps it for training.

    Returns:
        (train parts, held-out parts), sorted index arrays.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout={fraction}: use a fraction in (0, 1), e.g. 0.15")
    rng = np.random.default_rng([seed, 7919])
    train, held = [], []
    for p in parts:
        p = rng.permutation(np.asarray(p, np.int64))
        k = min(max(1, int(round(fraction * len(p)))), len(p) - 1) if len(p) > 1 else 0
        held.append(np.sort(p[:k]))
        train.append(np.sort(p[k:]))
    return train, held


def from_parts(x: np.ndarray, y: np.ndarray, parts: Sequence[np.ndarray], *, class_names: Sequence[str] | None = None,
               split: str = "custom", heldout_parts: Sequence[np.ndarray] | None = None) -> FederatedData:
    """Wrap a given split of ``(x, y)`` as :class:`FederatedData`.

    Args:
        x: images (N, H, W, C) float32 in [0, 1].
        y: int labels (N,).
        parts: per client, indices into ``x``; each non-empty (an empty client cannot train).
        heldout_parts: per client, indices of examples it holds out (disjoint from ``parts``).

    Raises:
        ValueError: no client, an empty client, an index out of range, or labels that do not
            match the images.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    parts = [np.asarray(p, np.int64).reshape(-1) for p in parts]
    if not parts:
        raise ValueError("no clients: pass at least one index array (num_clients >= 1)")
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise ValueError(f"client(s) {empty[:10]} hold no examples; an empty client cannot train: "
                         "drop them, use fewer clients, or partition with min_size >= 1")
    flat = np.concatenate(parts)
    if flat.min() < 0 or flat.max() >= len(y):
        raise ValueError(f"client indices must lie in 0..{len(y) - 1}, found {flat.min()}..{flat.max()}")
    k = len(class_names) if class_names else int(y.max()) + 1
    names = tuple(class_names) if class_names else tuple(str(i) for i in range(k))
    hist = np.stack([np.bincount(y[p], minlength=k) for p in parts])
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    ids = [f"client_{i:03d}" for i in range(len(parts))]
    cd = _client_data_class()(ids, x[flat], y[flat], offsets)
    held = None
    if heldout_parts is not None:
        held = [np.asarray(p, np.int64).reshape(-1) for p in heldout_parts]
        if len(held) != len(parts):
            raise ValueError(f"{len(held)} held-out parts for {len(parts)} clients")
        if any(np.intersect1d(a, b).size for a, b in zip(parts, held)):
            raise ValueError("a client's held-out examples overlap its training examples")
    return FederatedData(cd, parts, hist, names, split, tuple(x.shape[1:]), held, (x, y))


def federate(data: Dataset, num_clients: int, *, alpha: float | None = None, shards_per_client: int | None = None,
             seed: int = 0, min_size: int = 1, holdout: float = 0.0) -> FederatedData:
    """Split ``data``'s training set over ``num_clients`` clients with :func:`lepton_nb.data.partition`.

    Args:
        data: a loaded :class:`lepton_nb.data.Dataset`.
        num_clients: number of simulated clients (>= 1, at most one per example).
        alpha: Dirichlet concentration for a non-IID split (> 0; small = few classes each).
        shards_per_client: label shards per client (McMahan et al. 2017's pathological split).
        seed: seeds the split.
        min_size: smallest client allowed (Dirichlet splits are redrawn until it holds).
        holdout: fraction of each client's examples kept out of training (0: none), see
            :func:`hold_out`.

    Raises:
        ValueError: num_clients < 1, alpha <= 0, or more clients than examples, before any work.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients={num_clients}: need at least one client")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha={alpha}: the Dirichlet concentration must be > 0 (small = more skewed); "
                         "use alpha=None for an IID split")
    parts = partition(data.y_train, num_clients, alpha=alpha, seed=seed, shards_per_client=shards_per_client,
                      min_size=min_size)
    split = (f"dirichlet({alpha:g})" if alpha is not None else
             f"shards({shards_per_client})" if shards_per_client is not None else "iid")
    held = None
    if holdout:
        parts, held = hold_out(parts, holdout, seed)
    return from_parts(data.x_train, data.y_train, parts, class_names=data.class_names, split=split,
                      heldout_parts=held)


def split_test(x: np.ndarray, y: np.ndarray, num_clients: int, *, batch_size: int = 256, seed: int = 0
               ) -> list["tf.data.Dataset"]:
    """The held-out test set split IID over ``num_clients`` evaluation clients, batched.

    Federated evaluation sums counts over clients, so the accuracy it reports is that of the whole
    test set whatever the split.
    """
    import tensorflow as tf

    parts = partition(np.asarray(y), num_clients, seed=seed)
    return [tf.data.Dataset.from_tensor_slices((np.asarray(x[p], np.float32), np.asarray(y[p], np.int64)))
            .batch(batch_size) for p in parts]
