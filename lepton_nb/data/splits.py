"""Splits of a data set: stratified subsets, the validation hold-out, and partitions over clients."""

from __future__ import annotations

import numpy as np

from lepton_nb.data.loading import Dataset

__all__ = ["partition", "split_validation", "stratified_subset"]


def _stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices with class proportions kept (largest remainders), sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    if n >= len(labels):
        return np.arange(len(labels))
    if n < len(classes):
        raise ValueError(f"a stratified subset of {n} cannot hold all {len(classes)} classes")
    exact = counts / counts.sum() * n
    take = np.maximum(1, np.floor(exact).astype(int))
    for i in np.argsort(-(exact - np.floor(exact))):
        if take.sum() >= n:
            break
        take[i] += 1
    while take.sum() > n:
        take[np.argmax(take)] -= 1
    picks = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picks))


def stratified_subset(ds: Dataset, max_train: int | None = None, max_test: int | None = None,
                      seed: int = 0) -> Dataset:
    """A smaller copy of ``ds`` with the class proportions of each split kept."""
    rng = np.random.default_rng(seed)
    tr = _stratified_indices(ds.y_train, max_train or len(ds.y_train), rng)
    te = _stratified_indices(ds.y_test, max_test or len(ds.y_test), rng)
    return Dataset(ds.x_train[tr], ds.y_train[tr], ds.x_test[te], ds.y_test[te], ds.class_names,
                   ds.name, ds.source, ds.x_val, ds.y_val, ds.horizontal_flip_ok,
                   {**ds.notes, "subset": (len(tr), len(te))})


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified hold-out: returns ``x_train, y_train, x_val, y_val``."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction {fraction}: use a value in (0, 1)")
    rng = np.random.default_rng(seed)
    val = _stratified_indices(y, max(int(round(len(y) * fraction)), len(np.unique(y))), rng)
    mask = np.zeros(len(y), bool)
    mask[val] = True
    return x[~mask], y[~mask], x[mask], y[mask]


def partition(
    labels: np.ndarray,
    num_clients: int,
    alpha: float | None = None,
    seed: int = 0,
    *,
    shards_per_client: int | None = None,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Split example indices over ``num_clients`` simulated clients.

    - IID (default): a random permutation cut into near-equal parts.
    - ``alpha``: non-IID, each class spread over clients by Dirichlet(alpha) proportions
      (Hsu et al. 2019); small alpha gives few classes per client. Redrawn until every client
      holds at least ``min_size`` examples.
    - ``shards_per_client``: McMahan et al. 2017's label shards: sort by label, cut into
      ``num_clients * shards_per_client`` shards, deal each client that many.

    Returns:
        ``num_clients`` sorted int64 index arrays, disjoint, covering every example.
    """
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    if num_clients < 1:
        raise ValueError(f"num_clients={num_clients}: need at least one client")
    if num_clients * max(min_size, 1) > n:
        raise ValueError(f"{n} examples cannot give {num_clients} clients at least {min_size} each")
    if alpha is not None and shards_per_client is not None:
        raise ValueError("choose either alpha (Dirichlet) or shards_per_client, not both")
    rng = np.random.default_rng(seed)
    if shards_per_client is not None:
        if shards_per_client < 1:
            raise ValueError(f"shards_per_client={shards_per_client}: must be >= 1")
        order = np.argsort(labels, kind="stable")
        shards = np.array_split(order, num_clients * shards_per_client)
        deal = rng.permutation(len(shards)).reshape(num_clients, shards_per_client)
        return [np.sort(np.concatenate([shards[s] for s in row])).astype(np.int64) for row in deal]
    if alpha is None:
        return [np.sort(p).astype(np.int64) for p in np.array_split(rng.permutation(n), num_clients)]
    if not alpha > 0:
        raise ValueError(f"alpha={alpha}: the Dirichlet concentration must be > 0 (small = more skewed)")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * len(idx)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        out = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise ValueError(f"Dirichlet(alpha={alpha}) left a client with fewer than {min_size} examples in "
                     f"{max_tries} draws; use a larger alpha or fewer clients")
