"""User-level (epsilon, delta) of DP-FedAvg, computed with Google's ``dp_accounting``.

Each round samples clients and releases the sum of their clipped updates plus Gaussian noise of
standard deviation ``noise_multiplier * clip``: a sampled Gaussian mechanism whose unit is a
client (McMahan et al. 2018). The rounds compose; Renyi DP (Mironov 2017; Mironov, Talwar and
Zhang 2019 for the sampled Gaussian) converts the composition to (epsilon, delta).

- ``sampling="poisson"``: each client joins a round independently with probability
  ``clients_per_round / num_clients`` (the analysis of McMahan et al. 2018; add/remove-one
  neighbouring).
- ``sampling="without_replacement"``: exactly ``clients_per_round`` of ``num_clients`` each
  round, as the round loop samples (replace-one neighbouring, Wang, Balle and Kasiviswanathan 2019).
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ORDERS", "dp_fedavg_epsilon", "epsilon_curve"]

#: Renyi orders searched for the tightest conversion.
ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [128, 256, 512, 1024])


def _check(noise_multiplier: float, clients_per_round: int, num_clients: int, rounds: int, delta: float) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients={num_clients}: need at least one client")
    if not 1 <= clients_per_round <= num_clients:
        raise ValueError(f"clients_per_round={clients_per_round}: must lie in 1..num_clients={num_clients}")
    if rounds < 0:
        raise ValueError(f"rounds={rounds}: must be >= 0")
    if not noise_multiplier >= 0:
        raise ValueError(f"noise_multiplier={noise_multiplier}: must be >= 0")
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta}: use a value in (0, 1), well below 1/num_clients")


def dp_fedavg_epsilon(
    noise_multiplier: float,
    clients_per_round: int,
    num_clients: int,
    rounds: int,
    delta: float,
    *,
    sampling: Literal["poisson", "without_replacement"] = "poisson",
) -> float:
    """User-level epsilon after ``rounds`` rounds of DP-FedAvg.

    Args:
        noise_multiplier: Gaussian noise standard deviation / clipping norm (z).
        clients_per_round: clients sampled per round (expected number for Poisson sampling).
        num_clients: the population the clients are sampled from.
        rounds: rounds run.
        delta: the delta of (epsilon, delta).
        sampling: "poisson" or "without_replacement" (see the module docstring).

    Returns:
        epsilon (``inf`` when ``noise_multiplier`` is 0 and at least one round ran; 0 for no round).
    """
    import dp_accounting
    from dp_accounting import rdp

    _check(noise_multiplier, clients_per_round, num_clients, rounds, delta)
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return float("inf")
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling == "poisson":
        event = dp_accounting.PoissonSampledDpEvent(clients_per_round / num_clients, gaussian)
        relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    elif sampling == "without_replacement":
        event = dp_accounting.SampledWithoutReplacementDpEvent(num_clients, clients_per_round, gaussian)
        relation = dp_accounting.NeighboringRelation.REPLACE_ONE
    else:
        raise ValueError(f"sampling={sampling!r}: choose 'poisson' or 'without_replacement'")
    accountant = rdp.RdpAccountant(orders=list(ORDERS), neighboring_relation=relation)
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))


def epsilon_curve(noise_multiplier: float, clients_per_round: int, num_clients: int, rounds: int, delta: float,
                  *, sampling: Literal["poisson", "without_replacement"] = "poisson") -> list[float]:
    """Epsilon after each round 1..rounds (non-decreasing), for plotting the budget as it is spent."""
    return [dp_fedavg_epsilon(noise_multiplier, clients_per_round, num_clients, r, delta, sampling=sampling)
            for r in range(1, rounds + 1)]
