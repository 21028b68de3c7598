"""Builders of the federated algorithms, each a ``tff.learning.templates.LearningProcess``.

- :func:`fedavg`: Federated Averaging (McMahan et al. 2017, "Communication-Efficient Learning of
  Deep Networks from Decentralized Data") and the relatives TFF 0.87 builds, chosen by
  :class:`~lepton_nb.federated.settings.AlgorithmConfig`: FedAvgM (Hsu et al. 2019), FedAdam,
  FedYogi and FedAdagrad (Reddi et al. 2021, "Adaptive Federated Optimization"), a client
  learning-rate schedule over rounds, and FedProx (Li et al. 2020, "Federated Optimization in
  Heterogeneous Networks"). FedProx is *not* TFF's ``build_weighted_fed_prox``: TFF 0.87 adds
  ``mu * (w_global - w)`` to the client gradient (``proximal_client_work``: ``lambda x, y:
  delta_l2_regularizer * (y - x)`` with x the current and y the initial weights), the negative of
  the proximal gradient ``mu * (w - w_global)``, so its clients are pushed *away* from the global
  model (a test measures it). Here FedProx is TFF's FedAvg with
  :class:`lepton_nb.federated.proximal.ProximalOptimizer`, a client optimizer that adds the
  proximal gradient, as the paper's reference code does (its ``PerturbedGradientDescent``).
- :func:`dp_fedavg`: DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent
  Language Models"): per-client update clipping (adaptive after Andrew et al. 2021, or fixed)
  and Gaussian noise on the sum, divided by the *expected* cohort size; user-level privacy;
  ``build_unweighted_fed_avg`` because the DP aggregator averages unweighted. It releases no
  client training metric (:func:`no_client_metrics`): those would be un-noised sums.
- :func:`secure_fedavg`: FedAvg whose model update goes through ``tff.learning.secure_aggregator``
  and whose client metrics go through ``tff.learning.metrics.secure_sum_then_finalize``
  (Bonawitz et al. 2017, "Practical Secure Aggregation"), both realized by
  ``federated_secure_sum_bitwidth``. TFF 0.87 runs it only in its *test* context, which
  simulates the protocol without cryptography (:mod:`lepton_nb.federated.runtime`).
- :func:`fed_eval`: federated evaluation, ``tff.learning.algorithms.build_fed_eval``.

Models come from a :class:`Task`: a function building a fresh, uncompiled Keras logits model
(e.g. :func:`lepton_nb.models.build_seed_cnn`), wrapped by ``tff.learning.models.from_keras_model``
with sparse categorical cross-entropy on logits and accuracy. The builder is checked once, eagerly,
before anything is traced. What each process lets leave the clients is checked on its computation
by :mod:`lepton_nb.federated.dataflow`.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

from lepton_nb.distributed import quiet_tf_logging
from lepton_nb.federated.settings import AlgorithmConfig, ClientConfig, DPFedAvgConfig, FedAvgConfig

__all__ = ["Task", "check_model_builder", "client_optimizer", "dp_aggregator", "dp_fedavg", "fed_eval", "fedavg",
           "metric_ranges", "no_client_metrics", "secure_fedavg", "server_optimizer", "task"]

KerasBuilder = Callable[[], tf.keras.Model]


def _tff():
    """``tensorflow_federated``, with the managed worker installed as this thread's default context."""
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


def client_optimizer(cfg: ClientConfig, learning_rate=None):
    """The TFF optimizer of the clients (``build_sgdm`` or ``build_adam``), at ``learning_rate``
    (default ``cfg.learning_rate``; a schedule passes a traced value)."""
    import tensorflow_federated as tff

    lr = cfg.learning_rate if learning_rate is None else learning_rate
    if cfg.optimizer == "adam":
        return tff.learning.optimizers.build_adam(learning_rate=lr)
    return tff.learning.optimizers.build_sgdm(learning_rate=lr, momentum=cfg.momentum or None)


def server_optimizer(a: AlgorithmConfig):
    """The server's TFF optimizer: SGD (FedAvg, FedAvgM), Adam, Yogi or Adagrad (Reddi et al. 2021).

    The adaptive ones start their second moment at 0 and use betas (0.9, 0.999), as in the paper.
    """
    import tensorflow_federated as tff

    opt = tff.learning.optimizers
    if a.server_optimizer == "adam":
        return opt.build_adam(learning_rate=a.server_learning_rate, beta_1=0.9, beta_2=0.999, epsilon=a.epsilon)
    if a.server_optimizer == "yogi":
        return opt.build_yogi(learning_rate=a.server_learning_rate, beta_1=0.9, beta_2=0.999, epsilon=a.epsilon,
                              initial_preconditioner_value=0.0)
    if a.server_optimizer == "adagrad":
        return opt.build_adagrad(learning_rate=a.server_learning_rate, initial_preconditioner_value=0.0,
                                 epsilon=a.epsilon)
    return opt.build_sgdm(learning_rate=a.server_learning_rate, momentum=a.server_momentum or None)


def _cosine(lr0: float, rounds: int):
    """``round_num -> lr``: from ``lr0`` at round 0 down to ``lr0 / 10`` at the last round.

    TFF traces it with the round number as an int32 tensor, so it is written with TF ops.
    """
    horizon = float(max(rounds - 1, 1))

    def fn(round_num):
        t = tf.minimum(tf.cast(round_num, tf.float32) / horizon, 1.0)
        return lr0 * (0.1 + 0.45 * (1.0 + tf.cos(math.pi * t)))

    return fn


def fedavg(t: Task, cfg: FedAvgConfig = FedAvgConfig(), *, model_aggregator=None, metrics_aggregator=None):
    """FedAvg with the example-weighted mean, or the relative named by ``cfg.algorithm``.

    One round: the server broadcasts the model; each sampled client runs ``local_epochs`` of
    minibatch SGD (or Adam; FedProx adds mu / 2 ||w - w_global||^2 to its objective) on its data; the
    server averages the model deltas weighted by example counts and applies the mean as a
    pseudo-gradient with its optimizer (SGD at learning rate 1 = plain FedAvg). Local epochs and
    batch size are properties of the client datasets (see the round loop), so one process serves
    every E and B; a client schedule spans ``cfg.rounds``.

    Args:
        t: the model.
        cfg: client optimizer, algorithm, rounds (for a schedule) and seed (the initial model).
        model_aggregator: a weighted ``tff.aggregators`` factory (default: TFF's mean).
        metrics_aggregator: how client training metrics reach the server (default: TFF's
            ``sum_then_finalize``, plain sums).
    """
    tff = _tff()
    a = cfg.algorithm
    tf.keras.utils.set_random_seed(cfg.seed)  # the initial model, traced into initialize
    kw = dict(server_optimizer_fn=server_optimizer(a), model_aggregator=model_aggregator,
              metrics_aggregator=metrics_aggregator)
    alg = tff.learning.algorithms
    with quiet_tf_logging("CRITICAL"):
        if a.client_schedule == "cosine":
            return alg.build_weighted_fed_avg_with_optimizer_schedule(
                t.model_fn, client_learning_rate_fn=_cosine(cfg.client.learning_rate, cfg.rounds),
                client_optimizer_fn=lambda lr: client_optimizer(cfg.client, lr), **kw)
        client = client_optimizer(cfg.client)
        if a.proximal_strength:  # not TFF's build_weighted_fed_prox, whose proximal term has the wrong sign
            from lepton_nb.federated.proximal import ProximalOptimizer

            client = ProximalOptimizer(client, a.proximal_strength)
        return alg.build_weighted_fed_avg(t.model_fn, client_optimizer_fn=client, **kw)


def no_client_metrics(metric_finalizers, local_unfinalized_metrics_type=None):
    """A ``metrics_aggregator`` that releases no client training metric.

    Same signature as ``tff.learning.metrics.sum_then_finalize``; the clients' loss, accuracy
    and example counts stay at the clients (no intrinsic moves them), and the server's
    ``client_work/train`` metrics are empty. Used by DP runs, whose epsilon covers only what the
    noised aggregate reveals.
    """
    import tensorflow_federated as tff

    del metric_finalizers, local_unfinalized_metrics_type

    @tff.federated_computation
    def aggregate(client_metrics):
        del client_metrics
        return tff.federated_value(collections.OrderedDict(), tff.SERVER)

    return aggregate


def dp_aggregator(dp: DPFedAvgConfig, expected_clients: float):
    """The unweighted DP mean of ``dp``: noised sum of clipped updates / ``expected_clients``.

    ``tff.aggregators.DifferentiallyPrivateFactory`` divides by its ``clients_per_round``
    argument, a constant, whatever the number of clients in the round (checked by the tests),
    so passing the expected cohort q * n gives McMahan et al.'s fixed-denominator estimator under
    Poisson sampling; the cohort size itself is never used. Adaptive clipping is
    ``gaussian_adaptive`` (what ``tff.learning.dp_aggregator`` wraps, here with our initial clip
    and quantile, and without its zeroing). The noise on the clipped-update *count* that adaptive
    clipping needs is TFF's default (0.05 x clients per round) unless that is too small for the
    requested effective noise multiplier (few clients per round), where it is raised to the
    noise multiplier; TFF then adds correspondingly more noise to the updates so that the
    effective multiplier stays ``dp.noise_multiplier``.
    """
    tff = _tff()
    cpr = float(expected_clients)
    if dp.clipping == "fixed":
        return tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(dp.noise_multiplier, cpr, dp.clip)
    count_std = max(0.05 * cpr, dp.noise_multiplier) if dp.noise_multiplier > 0 else None
    return tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
        dp.noise_multiplier, cpr, initial_l2_norm_clip=dp.clip, target_unclipped_quantile=dp.target_quantile,
        clipped_count_stddev=count_std)


def dp_fedavg(t: Task, cfg: FedAvgConfig, dp: DPFedAvgConfig = DPFedAvgConfig()):
    """DP-FedAvg: unweighted FedAvg (population, rounds, local training, server optimizer: ``cfg``)
    whose mean of clipped updates gets Gaussian noise (``dp``), and no client metric released.

    The noise standard deviation on the sum is ``noise_multiplier * clip``; the mean divides it by
    ``cfg.clients_per_round`` (the expected cohort), so utility needs many clients per round. The
    privacy unit is a client; :mod:`lepton_nb.federated.accounting` gives its epsilon. TFF draws
    the noise in the worker from an unseeded generator, fresh on every call.

    Raises:
        SettingsError: FedProx or a client schedule (no unweighted TFF builder has them).
    """
    from lepton_nb.settings import SettingsError

    a = cfg.algorithm
    if a.proximal_strength or a.client_schedule:
        raise SettingsError(f"DP-FedAvg with {a.name}: TFF 0.87's unweighted FedAvg (which its DP aggregator needs) "
                            "has no FedProx term or client schedule; use a server optimizer only (FedAvg, FedAvgM, "
                            "FedAdam, ...)")
    tff = _tff()
    tf.keras.utils.set_random_seed(cfg.seed)  # the initial model only; TFF's DP noise is not seeded by it
    return tff.learning.algorithms.build_unweighted_fed_avg(
        t.model_fn, client_optimizer_fn=client_optimizer(cfg.client), server_optimizer_fn=server_optimizer(a),
        model_aggregator=dp_aggregator(dp, cfg.clients_per_round), metrics_aggregator=no_client_metrics)


def metric_ranges(max_examples_per_client: int, loss_cap: float = 20.0) -> dict:
    """Secure-sum ranges of the metrics ``from_keras_model`` reports (loss and accuracy as
    (sum, count) pairs, example and batch counts).

    TFF's default range [0, 2^20 - 1] for every value spends the 32-bit quantization on a range far
    wider than the values; ranges fitted to the largest client give exact counts. A loss sum is
    capped at ``loss_cap`` per example; values outside a range are clipped (TFF reports how many
    in ``secure_sum_measurements``).
    """
    n = float(max_examples_per_client)
    return collections.OrderedDict(loss=[(0.0, loss_cap * n), (0.0, n)], accuracy=[(0.0, n), (0.0, n)],
                                   num_examples=[(0, int(n))], num_batches=[(0, int(n))])


def secure_fedavg(t: Task, cfg: FedAvgConfig = FedAvgConfig(), *, max_examples_per_client: int | None = None):
    """FedAvg in which every value leaving a client goes through a secure sum.

    The model update: ``tff.learning.secure_aggregator`` (adaptive L2 clipping, then per
    coordinate; quantized to integers; weighted). The training metrics:
    ``tff.learning.metrics.secure_sum_then_finalize``, with :func:`metric_ranges` for clients of at
    most ``max_examples_per_client`` examples per round (local epochs included; ``None``: TFF's
    default ranges). :func:`lepton_nb.federated.dataflow.only_secure_sums` checks the whole
    ``next``. Execute it inside ``runtime.context("test")``: TFF 0.87's only context that runs
    secure sums, and it replaces them by plain sums (a simulation without cryptography).
    """
    tff = _tff()
    ranges = metric_ranges(max_examples_per_client) if max_examples_per_client else None

    def metrics(metric_finalizers, local_unfinalized_metrics_type=None):
        return tff.learning.metrics.secure_sum_then_finalize(metric_finalizers, local_unfinalized_metrics_type,
                                                             metric_value_ranges=ranges)

    with quiet_tf_logging("CRITICAL"):
        return fedavg(t, cfg, model_aggregator=tff.learning.secure_aggregator(zeroing=True, clipping=True,
                                                                              weighted=True),
                      metrics_aggregator=metrics)


def fed_eval(t: Task):
    """Federated evaluation of a global model (``tff.learning.algorithms.build_fed_eval``)."""
    tff = _tff()
    return tff.learning.algorithms.build_fed_eval(t.model_fn)
