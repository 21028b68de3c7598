"""One round's clients spread over several TFF workers (``worker_binary`` processes).

TFF 0.87's ``tff.backends.native.create_mergeable_comp_execution_context(async_contexts)``
compiles a computation to *mergeable form* (``up_to_merge`` -> ``merge`` -> ``after_merge``, split
at its aggregations), runs ``up_to_merge`` on each context with a slice of the CLIENTS-placed
arguments (with two workers: the first half of the round's clients on one, the rest on the
other), merges the partial aggregates with the aggregation's own ``merge`` computation, then runs
``after_merge`` (the server update) once. :func:`mergeable_context` builds it over workers at
``host:port`` addresses (:func:`workers` starts managed ones on 127.0.0.1).

What compiles to mergeable form: a computation in which no aggregation depends on the result of
another. FedAvg's ``next`` and its relatives (FedProx, FedAdam, the schedule), DP-FedAvg and
``build_fed_eval`` do. **Secure aggregation does not**: ``secure_fedavg``'s ``next`` fails with
``AfterMergeStructureError: Expected after_merge to contain no intrinsics with signatures
accepting values at clients and returning values at server. Found the following aggregations:
federated_secure_sum_bitwidth ...``. The compiler lowers ``federated_sum`` and ``federated_mean``
to ``federated_aggregate`` to split on, but has no lowering for secure sums, so they stay in
``after_merge`` (:func:`compile_check` returns that error).

Numerics: the merged round sums the clients in another order (two partial sums, then their sum),
so it agrees with one worker to float32 rounding, not bit for bit. Keep and reuse one context:
it caches the (seconds-long) compilation to mergeable form per computation. The channels are plain
gRPC without TLS: trusted networks only.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

__all__ = ["compile_check", "mergeable_context", "workers"]


def _async_remote_context(address: str, channels: list):
    """An ``AsyncExecutionContext`` on the TFF worker at ``host:port`` (native compiler)."""
    import grpc

    from tensorflow_federated.python.core.backends.native import compiler
    from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
    from tensorflow_federated.python.core.impl.execution_contexts import async_execution_context
    from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub

    from lepton_nb.federated import runtime

    if ":" not in address:
        raise ValueError(f"address={address!r}: give host:port, e.g. '127.0.0.1:8000'")
    channel = grpc.insecure_channel(address, runtime._GRPC_OPTIONS)
    channels.append(channel)
    stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
    return async_execution_context.AsyncExecutionContext(
        executor_fn=runtime._executor_factory(lambda: stub),  # the executor stack of runtime's contexts
        compiler_fn=compiler.desugar_and_transform_to_native,
        transform_args=tensorflow_computation.transform_args,
        transform_result=tensorflow_computation.transform_result)


@contextlib.contextmanager
def mergeable_context(addresses: Sequence[str], *, install: bool = True) -> Iterator[object]:
    """A TFF context that runs each computation's clients split over the workers at ``addresses``.

    Args:
        addresses: ``host:port`` of each worker (at least one).
        install: install it for the ``with`` block (else only yield it, e.g. to pass to
            :func:`lepton_nb.federated.loop.run` as ``context=``).

    Yields:
        the ``MergeableCompExecutionContext``.
    """
    import tensorflow_federated as tff

    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

    if not addresses:
        raise ValueError("addresses is empty: give at least one worker as host:port")
    channels: list = []
    try:
        ctx = tff.backends.native.create_mergeable_comp_execution_context(
            [_async_remote_context(a, channels) for a in addresses])
        if install:
            with context_stack_impl.context_stack.install(ctx):
                yield ctx
        else:
            yield ctx
    finally:
        for c in channels:
            c.close()


@contextlib.contextmanager
def workers(n: int, **kwargs) -> Iterator[list]:
    """``n`` managed ``worker_binary`` processes on 127.0.0.1 (:class:`~lepton_nb.federated.runtime.WorkerProcess`),
    stopped when the block ends (and with Python)."""
    from lepton_nb.federated import runtime

    if n < 1:
        raise ValueError(f"n={n}: start at least one worker")
    started: list = []
    try:
        for _ in range(n):
            started.append(runtime.WorkerProcess(**kwargs))
        yield started
    finally:
        for w in started:
            w.stop()


def compile_check(computation) -> str | None:
    """``None`` if ``computation`` compiles to mergeable form, else the error as "Type: message"."""
    from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler

    try:
        mergeable_comp_compiler.compile_to_mergeable_comp_form(computation)
        return None
    except Exception as e:  # noqa: BLE001 - the error is the answer, reported whole
        return f"{type(e).__name__}: {e}"
