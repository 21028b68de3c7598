"""Builders of the federated algorithms, each a ``tff.learning.templates.LearningProcess``.

- :func:`fedavg`: Federated Averaging (McMahan et al. 2017, "Communication-Efficient Learning of
  Deep Networks from Decentralized Data"), ``tff.learning.algorithms.build_weighted_fed_avg``.
- :func:`dp_fedavg`: DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent
  Language Models"): per-client update clipping (adaptive after Andrew et al. 2021, or fixed)
  and Gaussian noise on the sum; user-level privacy; ``build_unweighted_fed_avg`` because the DP
  aggregator averages unweighted.
- :func:`secure_fedavg`: FedAvg whose update sum goes through ``tff.learning.secure_aggregator``
  (Bonawitz et al. 2017, "Practical Secure Aggregation"), realized by
  ``federated_secure_sum_bitwidth``. TFF 0.87 runs it only in its *test* context, which
  simulates the protocol without cryptography (:mod:`lepton_nb.federated.runtime`).
- :func:`fed_eval`: federated evaluation, ``tff.learning.algorithms.build_fed_eval``
  (``build_federated_evaluation`` is gone in 0.87).

Models come from a :class:`Task`: a function building a fresh, uncompiled Keras logits model
(e.g. :func:`lepton_nb.models.build_seed_cnn`), wrapped by ``tff.learning.models.from_keras_model``
with sparse categorical cross-entropy on logits and accuracy. The builder is checked once, eagerly,
before anything is traced.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from lepton_nb.federated.settings import ClientConfig, DPFedAvgConfig, FedAvgConfig

__all__ = ["CLIENT_TO_SERVER", "Task", "aggregation_signature", "check_model_builder", "client_optimizer", "dp_fedavg", "fed_eval", "fedavg",
           "intrinsics", "secure_aggregation_signature", "secure_fedavg", "task"]

KerasBuilder = Callable[[], tf.keras.Model]


def _tff():
    """``tensorflow_federated``, with the managed worker installed as its default context."""
    import tensorflow_federated as tff

    from lepton_nb.federated import runtime

    runtime.install_default()
    return tff


def check_model_builder(build: KerasBuilder, *, input_shape: tuple[int, ...] | None = None,
                        num_classes: int | None = None) -> tf.keras.Model:
    """Check that ``build`` returns a fresh, uncompiled Keras model each call; returns one.

    TFF calls the model function many times while tracing and needs new variables each time; a
    closure over one model (or a compiled model, whose optimizer TFF would silently ignore) gives
    wrong results or obscure tracing errors later.

    Raises:
        TypeError: ``build`` is not callable or does not return a ``tf.keras.Model``.
        ValueError: the model is compiled, the same model (or variables) comes back twice, or its
            input shape / number of outputs does not match the data.
    """
    if isinstance(build, tf.keras.Model) or not callable(build):
        raise TypeError("model_fn must be a function that builds a new Keras model on every call, e.g. "
                        "lambda: ln.models.build_seed_cnn(); got " + type(build).__name__)
    first, second = build(), build()
    if not isinstance(first, tf.keras.Model):
        raise TypeError(f"model_fn returned {type(first).__name__}, not a tf.keras.Model")
    if first is second or any(a is b for a, b in zip(first.weights, second.weights)):
        raise ValueError("model_fn returned the same model (or shared variables) twice; TFF needs a new model "
                         "per call: build it inside the function (lambda: ln.models.build_seed_cnn()), "
                         "do not close over a model built outside")
    if getattr(first, "optimizer", None) is not None or getattr(first, "compiled_loss", None) is not None:
        raise ValueError("model_fn returned a compiled Keras model; TFF 0.87 ignores Keras optimizers and "
                         "losses: return the model uncompiled and set the optimizer in ClientConfig")
    if input_shape is not None and tuple(first.input_shape[1:]) != tuple(input_shape):
        raise ValueError(f"the model expects inputs {tuple(first.input_shape[1:])} but the client images are "
                         f"{tuple(input_shape)}")
    if num_classes is not None and first.output_shape[-1] != num_classes:
        raise ValueError(f"the model has {first.output_shape[-1]} outputs but the data has {num_classes} classes")
    return first


@dataclass(frozen=True)
class Task:
    """A Keras model builder and the element spec of the client data.

    Attributes:
        build: returns a fresh, uncompiled Keras model, input (B, H, W, C), output (B, classes) logits.
        input_spec: ``(TensorSpec((None, H, W, C), float32), TensorSpec((None,), int64))``.
    """

    build: KerasBuilder
    input_spec: tuple

    def model_fn(self):
        """The ``tff.learning.models.VariableModel`` TFF traces: a fresh Keras model each call."""
        import tensorflow_federated as tff

        return tff.learning.models.from_keras_model(
            self.build(), input_spec=self.input_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[lambda: tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")])

    def keras_model(self, weights=None) -> tf.keras.Model:
        """A new Keras model, with ``weights`` (``tff.learning.models.ModelWeights``) assigned."""
        model = self.build()
        if weights is not None:
            weights.assign_weights_to(model)
        return model


def task(build: KerasBuilder, image_shape: tuple[int, ...], num_classes: int | None = None) -> Task:
    """Check ``build`` (see :func:`check_model_builder`) and pair it with the client data's spec."""
    check_model_builder(build, input_shape=tuple(image_shape), num_classes=num_classes)
    spec = (tf.TensorSpec((None, *image_shape), tf.float32), tf.TensorSpec((None,), tf.int64))
    return Task(build, spec)


def client_optimizer(cfg: ClientConfig):
    """The TFF optimizer of the clients (``build_sgdm`` or ``build_adam``)."""
    import tensorflow_federated as tff

    if cfg.optimizer == "adam":
        return tff.learning.optimizers.build_adam(learning_rate=cfg.learning_rate)
    return tff.learning.optimizers.build_sgdm(learning_rate=cfg.learning_rate,
                                              momentum=cfg.momentum or None)


def _server_optimizer(cfg: FedAvgConfig):
    import tensorflow_federated as tff

    return tff.learning.optimizers.build_sgdm(learning_rate=cfg.server_learning_rate,
                                              momentum=cfg.server_momentum or None)


def fedavg(t: Task, cfg: FedAvgConfig = FedAvgConfig()):
    """FedAvg with the example-weighted mean (McMahan et al. 2017).

    One round: the server broadcasts the model; each sampled client runs
    ``local_epochs`` of minibatch SGD (or Adam) on its data; the server averages the model deltas
    weighted by example counts and applies them with its own optimizer (SGD, lr 1 = plain FedAvg).
    Local epochs and batch size are properties of the client datasets (see the round loop), so one
    process serves every E and B.
    """
    tff = _tff()
    tf.keras.utils.set_random_seed(cfg.seed)
    return tff.learning.algorithms.build_weighted_fed_avg(
        t.model_fn, client_optimizer_fn=client_optimizer(cfg.client),
        server_optimizer_fn=_server_optimizer(cfg))


def dp_aggregator(dp: DPFedAvgConfig, clients_per_round: int):
    """The unweighted DP aggregation factory of ``dp`` for ``clients_per_round`` clients per round.

    Adaptive clipping is ``DifferentiallyPrivateFactory.gaussian_adaptive`` (what
    ``tff.learning.dp_aggregator`` wraps, here with our initial clip and quantile) plus the same
    zeroing of huge updates. The noise on the clipped-update *count* that adaptive clipping needs
    is TFF's default (0.05 x clients per round) unless that is too small for the requested
    effective noise multiplier (few clients per round), where it is raised to the noise
    multiplier; TFF then adds correspondingly more noise to the updates so that the effective
    multiplier stays ``dp.noise_multiplier``.
    """
    tff = _tff()
    cpr = float(clients_per_round)
    if dp.clipping == "fixed":
        agg = tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(dp.noise_multiplier, cpr, dp.clip)
    else:
        count_std = max(0.05 * cpr, dp.noise_multiplier) if dp.noise_multiplier > 0 else None
        agg = tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
            dp.noise_multiplier, cpr, initial_l2_norm_clip=dp.clip, target_unclipped_quantile=dp.target_quantile,
            clipped_count_stddev=count_std)
    if dp.zeroing:
        from tensorflow_federated.python.learning import model_update_aggregator

        agg = model_update_aggregator._default_zeroing(agg)  # as tff.learning.dp_aggregator does
    return agg


def dp_fedavg(t: Task, cfg: FedAvgConfig, dp: DPFedAvgConfig = DPFedAvgConfig()):
    """DP-FedAvg: unweighted FedAvg (population, rounds, local training: ``cfg``) whose mean of
    clipped updates gets Gaussian noise (``dp``).

    The noise standard deviation on the sum is ``noise_multiplier * clip``; on the mean it is that
    divided by ``clients_per_round``, so utility needs many clients per round. The privacy unit is
    a client; see :func:`lepton_nb.federated.accounting.dp_fedavg_epsilon` for its epsilon.
    """
    tff = _tff()
    tf.keras.utils.set_random_seed(cfg.seed)
    return tff.learning.algorithms.build_unweighted_fed_avg(
        t.model_fn, client_optimizer_fn=client_optimizer(cfg.client),
        server_optimizer_fn=_server_optimizer(cfg), model_aggregator=dp_aggregator(dp, cfg.clients_per_round))


def secure_fedavg(t: Task, cfg: FedAvgConfig = FedAvgConfig()):
    """FedAvg whose weighted sum of updates uses ``tff.learning.secure_aggregator``.

    Updates are clipped (adaptive L2 norm, then per coordinate), quantized to integers and summed
    with ``federated_secure_sum_bitwidth``, so the server only ever holds the sum. Execute it inside
    ``runtime.context("test")``: TFF 0.87's only context that runs secure sums, and it replaces
    them by plain sums (a simulation without cryptography).
    """
    tff = _tff()
    tf.keras.utils.set_random_seed(cfg.seed)
    with _quiet_tf_logs():
        return tff.learning.algorithms.build_weighted_fed_avg(
            t.model_fn, client_optimizer_fn=client_optimizer(cfg.client),
            server_optimizer_fn=_server_optimizer(cfg),
            model_aggregator=tff.learning.secure_aggregator(zeroing=True, clipping=True, weighted=True))


def fed_eval(t: Task):
    """Federated evaluation of a global model (``tff.learning.algorithms.build_fed_eval``)."""
    tff = _tff()
    return tff.learning.algorithms.build_fed_eval(t.model_fn)


#: TFF intrinsics through which a value placed at the clients reaches the server.
CLIENT_TO_SERVER = frozenset({
    "federated_aggregate", "federated_mean", "federated_weighted_mean", "federated_sum", "federated_min",
    "federated_max", "federated_secure_sum", "federated_secure_sum_bitwidth", "federated_secure_modular_sum",
})


@contextlib.contextmanager
def _quiet_tf_logs():
    """Hide TF's "Object was never used" log spam that building secure aggregators triggers."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("CRITICAL")
    try:
        yield
    finally:
        logger.setLevel(level)


def intrinsics(computation) -> list[str]:
    """The federated intrinsics (e.g. ``federated_secure_sum_bitwidth``) a computation calls, sorted."""
    from tensorflow_federated.python.core.impl.compiler import building_blocks

    found: set[str] = set()
    stack = [computation.to_building_block()]
    while stack:
        node = stack.pop()
        if isinstance(node, building_blocks.Intrinsic):
            found.add(node.uri)
        stack.extend(node.children())
    return sorted(u for u in found if u.startswith("federated_"))


def aggregation_signature(t: Task, factory=None) -> dict:
    """What the server receives from an aggregator of the model's trainable weights, from TFF's types.

    Builds the aggregation process of ``factory`` (a weighted ``tff.aggregators`` factory; default
    ``tff.learning.secure_aggregator(weighted=True)``) for the weights of ``t``'s model and reads
    its ``next`` type signature: client values are ``{T}@CLIENTS`` (a set the server never
    sees); the result is ``T@SERVER`` (one aggregate). Together with the intrinsics the
    computation calls, this shows whether client values reach the server only through secure sums.

    Returns:
        dict with ``signature`` (str), ``client_value`` and ``server_result`` (str types),
        ``intrinsics`` (list of str), ``client_to_server`` (the intrinsics that move client
        values to the server), ``server_gets_only_aggregate`` (bool: the result is one value at
        the server of the clients' value type, and every client-to-server intrinsic is a secure sum).
    """
    tff = _tff()
    model = t.build()
    value_type = tff.types.to_type([(v.dtype.as_numpy_dtype, v.shape.as_list()) for v in model.trainable_variables])
    with _quiet_tf_logs():
        factory = factory if factory is not None else tff.learning.secure_aggregator(weighted=True)
        proc = factory.create(value_type, tff.TensorType(np.float32))
    sig = proc.next.type_signature
    value = sig.parameter[1]
    result = sig.result[1]
    used = intrinsics(proc.next)
    upward = [u for u in used if u in CLIENT_TO_SERVER]
    only_aggregate = (value.placement is tff.CLIENTS and not value.all_equal and result.placement is tff.SERVER
                      and result.member == value.member and bool(upward)
                      and all(u.startswith("federated_secure_") for u in upward))
    return {"signature": str(sig), "client_value": str(value), "server_result": str(result),
            "intrinsics": used, "client_to_server": upward, "server_gets_only_aggregate": bool(only_aggregate)}


def secure_aggregation_signature(t: Task) -> dict:
    """:func:`aggregation_signature` of ``tff.learning.secure_aggregator`` (Bonawitz et al. 2017)."""
    return aggregation_signature(t)
