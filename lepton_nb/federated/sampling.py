"""Which clients take part in round r: fixed-size uniform sampling, or Poisson sampling for DP.

A sampler is a callable ``round -> client indices`` (ascending ``np.ndarray`` of int). Seeded,
a round's cohort depends only on (seed, round), so a run resumed after a crash samples the
rounds it has not run yet exactly as the uninterrupted run would have.

- :func:`uniform`: ``clients_per_round`` distinct clients per round, from TFF's own
  ``tff.simulation.build_uniform_sampling_fn`` (a Lehmer generator indexed by the round).
- :class:`PoissonSampler`: each client joins independently with probability q (McMahan et al.
  2018's DP-FedAvg; the cohort size varies, and can be 0). Unseeded (the default for DP runs) it
  draws from OS entropy, so nobody can recompute who took part; a seed makes the cohorts
  reproducible and the run *not private*.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["PoissonSampler", "Sampler", "uniform"]

Sampler = Callable[[int], np.ndarray]


def uniform(num_clients: int, clients_per_round: int, seed: int | None) -> Sampler:
    """``clients_per_round`` distinct clients of ``num_clients`` per round (``seed=None``: OS entropy).

    Raises:
        ValueError: more clients per round than clients.
    """
    import tensorflow_federated as tff

    if not 1 <= clients_per_round <= num_clients:
        raise ValueError(f"clients_per_round={clients_per_round}: must lie in 1..{num_clients} (the clients)")
    fn = tff.simulation.build_uniform_sampling_fn(list(range(num_clients)), replace=False, random_seed=seed)

    def sample(r: int) -> np.ndarray:
        return np.sort(np.asarray(fn(int(r), clients_per_round), np.int64))

    sample.kind = "uniform without replacement"
    return sample


class PoissonSampler:
    """Each of ``num_clients`` clients joins a round independently with probability ``q``.

    Args:
        num_clients: the population n.
        q: the participation probability, in (0, 1]; the expected cohort is q * n.
        seed: ``None`` (default): OS entropy, a fresh generator per sampler (private). An integer:
            round r's cohort is drawn from ``np.random.default_rng([seed, r])`` (reproducible,
            hence not private: whoever knows the seed knows who took part).
    """

    kind = "Poisson"

    def __init__(self, num_clients: int, q: float, seed: int | None = None):
        if num_clients < 1:
            raise ValueError(f"num_clients={num_clients}: need at least one client")
        if not 0 < q <= 1:
            raise ValueError(f"q={q}: the participation probability must lie in (0, 1]")
        self.num_clients, self.q, self.seed = int(num_clients), float(q), seed
        self._rng = np.random.default_rng() if seed is None else None

    @property
    def private(self) -> bool:
        """True when the draws come from OS entropy (nobody can recompute them)."""
        return self.seed is None

    @property
    def expected(self) -> float:
        """The expected cohort size q * n."""
        return self.q * self.num_clients

    def __call__(self, r: int) -> np.ndarray:
        rng = self._rng if self.seed is None else np.random.default_rng([int(self.seed), int(r)])
        return np.flatnonzero(rng.random(self.num_clients) < self.q).astype(np.int64)

    def __repr__(self) -> str:
        return (f"PoissonSampler(n={self.num_clients}, q={self.q:g}, "
                f"{'OS entropy' if self.private else f'seed={self.seed}: reproducible, not private'})")
