"""FedProx's client optimizer: TFF's FedAvg plus the proximal gradient, since TFF 0.87's own FedProx
has the proximal term's sign reversed.

FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks") has each client
minimise ``loss(w) + mu / 2 ||w - w_global||^2``, whose gradient adds ``mu * (w - w_global)``
and keeps the client near the global model. TFF 0.87's ``build_weighted_fed_prox``
(``tensorflow_federated/python/learning/templates/proximal_client_work.py``) adds
``delta_l2_regularizer * (y - x)`` with ``x`` the current and ``y`` the initial weights, that is
``mu * (w_global - w)``: the opposite sign, which drives the clients *away* from the global model
(a strong mu makes a round's update larger instead of smaller; tests/test_federated_algorithms.py
measures both). :class:`ProximalOptimizer` wraps any TFF client optimizer and adds the correct
term, as the paper's reference code does (its ``PerturbedGradientDescent``); FedProx is then
``build_weighted_fed_avg`` with it (:func:`lepton_nb.federated.algorithms.fedavg`).
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

__all__ = ["ProximalOptimizer"]


class ProximalOptimizer(tff.learning.optimizers.Optimizer):
    """A TFF client optimizer whose step uses the gradient of ``loss + mu / 2 ||w - w_global||^2``.

    ``w_global`` is the weights at the first local step of a round: TFF initializes the client
    optimizer for every client and round (``model_delta_client_work``) and starts it from the
    broadcast global model. The state carries it; the hyperparameters are the inner optimizer's.

    Args:
        inner: the TFF optimizer taking the step (e.g. ``tff.learning.optimizers.build_sgdm``).
        mu: the proximal strength (>= 0; 0 is FedAvg).
    """

    def __init__(self, inner, mu: float):
        if not mu >= 0:
            raise ValueError(f"mu={mu}: FedProx's proximal strength is >= 0")
        self.inner, self.mu = inner, float(mu)

    def initialize(self, specs):
        zeros = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs)
        return collections.OrderedDict(inner=self.inner.initialize(specs), anchor=zeros, anchored=tf.constant(False))

    def next(self, state, weights, gradients):
        anchor = tf.nest.map_structure(lambda a, w: tf.where(state["anchored"], a, w), state["anchor"], weights)
        grads = tf.nest.map_structure(lambda g, w, a: g + self.mu * (w - a), gradients, weights, anchor)
        inner, updated = self.inner.next(state["inner"], weights, grads)
        return collections.OrderedDict(inner=inner, anchor=anchor, anchored=tf.constant(True)), updated

    def get_hparams(self, state):
        return self.inner.get_hparams(state["inner"])

    def set_hparams(self, state, hparams):
        return collections.OrderedDict(state, inner=self.inner.set_hparams(state["inner"], hparams))
