"""TFF execution contexts with a worker process that is started, owned and stopped here.

TensorFlow Federated 0.87 executes every computation in a C++ ``worker_binary`` subprocess
reached over gRPC. Its default context (installed by ``import tensorflow_federated``) starts that
process lazily with the parent's stdout/stderr, stops it only from a ``__del__`` that may never
run, and nothing ties it to the parent's life: after Python exits the worker can keep running and
keep the inherited pipes open, so ``python script.py | tail`` or a CI step hangs (docs/stack.md).

This module replaces that context before any computation runs:

- :class:`WorkerProcess` starts ``worker_binary`` on a free port with stdin and stdout/stderr
  redirected (to ``/dev/null`` or a log file: no inherited pipe), asks Linux to kill it when
  Python dies (``PR_SET_PDEATHSIG`` from a spawner thread that lives as long as the interpreter,
  so even ``kill -9`` of Python leaves nothing behind), and stops it on :meth:`~WorkerProcess.stop`, at interpreter exit (``atexit``)
  and when garbage-collected.
- :func:`context` installs a TFF synchronous execution context on that worker, compiled either
  the native way (``kind="native"``) or with TFF's *test* compiler (``kind="test"``), which
  replaces ``federated_secure_sum*`` intrinsics by plain sums: it **simulates** secure
  aggregation without any cryptography, and is the only way TFF 0.87 runs secure sums.
- :func:`remote_context` connects to a worker started elsewhere (another host, or a second
  :class:`WorkerProcess` on 127.0.0.1): TFF's remote execution.
- :func:`shutdown` stops every worker started here; :func:`running_workers` lists those still
  alive (the tests assert it is empty).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Literal

__all__ = [
    "WorkerProcess",
    "child_worker_pids",
    "context",
    "install_default",
    "remote_context",
    "running_workers",
    "shutdown",
    "worker",
    "worker_binary_path",
]

Kind = Literal["native", "test"]

_GRPC_OPTIONS = [
    ("grpc.max_message_length", 2 * 1000 * 1000 * 1000),
    ("grpc.max_receive_message_length", 2 * 1000 * 1000 * 1000),
    ("grpc.max_send_message_length", 2 * 1000 * 1000 * 1000),
]
_PR_SET_PDEATHSIG = 1
_STARTED: "weakref.WeakSet[WorkerProcess]" = weakref.WeakSet()
_LOCK = threading.RLock()
_DEFAULT: "WorkerProcess | None" = None


def worker_binary_path() -> Path:
    """Where the installed tensorflow-federated keeps its C++ ``worker_binary``."""
    import importlib.util

    spec = importlib.util.find_spec("tensorflow_federated")
    if spec is None or not spec.origin:
        raise RuntimeError("tensorflow_federated is not installed; lepton_nb.federated needs "
                           "tensorflow-federated==0.87.0 (see requirements/lock.txt)")
    path = Path(spec.origin).parent / "data" / "worker_binary"
    if not path.is_file():
        raise RuntimeError(f"{path}: TFF's worker_binary is missing; reinstall tensorflow-federated==0.87.0")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load_prctl():
    try:  # resolved in the parent: the child must not load libraries between fork and exec
        return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


_SPAWNER: "ThreadPoolExecutor | None" = None


def _spawn(*args, **kwargs) -> subprocess.Popen:
    """``Popen`` from one long-lived thread of this process.

    Linux delivers ``PR_SET_PDEATHSIG`` when the *thread* that forked the child ends, so the
    worker must not be started from a short-lived thread such as the event-loop thread of a TFF
    execution context (which ends when the context is garbage-collected). The spawner thread lives
    until the interpreter exits.
    """
    global _SPAWNER
    with _LOCK:
        if _SPAWNER is None:
            _SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lepton-nb-tff-spawner")
    return _SPAWNER.submit(subprocess.Popen, *args, **kwargs).result()


class WorkerProcess:
    """One TFF ``worker_binary`` process serving gRPC on ``127.0.0.1:port``.

    Args:
        port: the port to serve on (default: a free one).
        log: a file receiving the worker's stdout/stderr (default: discarded). The worker never
            inherits the parent's stdin/stdout/stderr, so no pipe stays open after Python exits.
        max_concurrent_computation_calls: passed to the worker (non-positive: unlimited).
        ready_timeout: seconds to wait for the gRPC service before giving up.

    Use as a context manager, or call :meth:`stop`; it is also stopped at interpreter exit.
    """

    def __init__(self, *, port: int | None = None, log: str | os.PathLike | None = None,
                 max_concurrent_computation_calls: int = -1, ready_timeout: float = 120.0):
        import grpc

        from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub

        self.port = port or _free_port()
        self.address = f"127.0.0.1:{self.port}"
        args = [str(worker_binary_path()), f"--port={self.port}",
                f"--max_concurrent_computation_calls={max_concurrent_computation_calls}"]
        self._log = open(log, "ab") if log else None  # noqa: SIM115 - closed in stop()
        out = self._log if self._log else subprocess.DEVNULL
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        self.process = _spawn(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, close_fds=True,
            env=env, preexec_fn=_die_with_parent if _PRCTL is not None else None)
        self.pid = self.process.pid
        self._channel = grpc.insecure_channel(self.address, _GRPC_OPTIONS)
        self.stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(self._channel)
        _STARTED.add(self)
        self._finalizer = weakref.finalize(self, _kill, self.process, self._log)
        deadline = time.monotonic() + ready_timeout
        while not self.stub.is_ready:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"TFF worker_binary exited with code {self.process.returncode} before "
                                   f"serving on {self.address}" + (f"; see {log}" if log else
                                                                   "; pass log= a file to see why"))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"TFF worker_binary did not answer on {self.address} within "
                                   f"{ready_timeout:.0f} s; the machine may be overloaded")
            time.sleep(0.1)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker (SIGTERM, then SIGKILL after ``timeout`` s) and close its channel."""
        with contextlib.suppress(Exception):
            self._channel.close()
        _kill(self.process, self._log, timeout)
        self._finalizer.detach()

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"WorkerProcess(pid={self.pid}, {self.address}, {'alive' if self.alive else 'stopped'})"


def _kill(process: subprocess.Popen, log=None, timeout: float = 10.0) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout)
    if log is not None and not log.closed:
        log.close()


def _executor_factory(stub_fn):
    from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
    from tensorflow_federated.python.core.impl.executors import remote_executor
    from tensorflow_federated.python.core.impl.types import placements

    def stack_fn(cardinalities):  # called at the first computation: the worker starts only then
        cardinalities.setdefault(placements.CLIENTS, 0)
        ex = remote_executor.RemoteExecutor(stub_fn())
        ex.set_cardinalities(cardinalities)
        return ex

    return python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)


def _sync_context(stub_fn, kind: Kind):
    from tensorflow_federated.python.core.backends.native import compiler as native_compiler
    from tensorflow_federated.python.core.backends.test import compiler as test_compiler
    from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
    from tensorflow_federated.python.core.impl.execution_contexts import sync_execution_context

    if kind == "native":
        compile_fn = native_compiler.desugar_and_transform_to_native
    elif kind == "test":
        def compile_fn(comp):  # secure sums become plain sums: a simulation, no cryptography
            comp = test_compiler.replace_secure_intrinsics_with_bodies(comp)
            return native_compiler.desugar_and_transform_to_native(comp)
    else:
        raise ValueError(f"kind={kind!r}: choose 'native' or 'test' (secure aggregation, simulated)")
    return sync_execution_context.SyncExecutionContext(
        executor_fn=_executor_factory(stub_fn), compiler_fn=compile_fn,
        transform_args=tensorflow_computation.transform_args,
        transform_result=tensorflow_computation.transform_result)


def worker(*, log: str | os.PathLike | None = None) -> WorkerProcess:
    """The shared local worker of this Python process, started on first use."""
    global _DEFAULT
    with _LOCK:
        if _DEFAULT is None or not _DEFAULT.alive:
            _DEFAULT = WorkerProcess(log=log)
        return _DEFAULT


# TFF's context stack is thread-local (``ContextStackImpl(threading.local)``): a default context
# set in one thread is not seen by another, which starts with TFF's RuntimeErrorContext. So the
# installation is recorded per thread, with the generation of the shared worker it points at
# (shutdown() starts a new generation: the old contexts' executors hold the stopped worker's channel).
_THREAD = threading.local()
_GENERATION = 0


def _shared_stub():
    return worker().stub


def install_default(*, fresh: bool = False) -> None:
    """Replace TFF's own default context (unmanaged worker) by a native one on the shared worker.

    Per thread (TFF's context stack is thread-local), idempotent and cheap: the worker starts at
    the first computation, not here. Every builder in :mod:`lepton_nb.federated` calls it, so a
    TFF computation invoked outside :func:`context` (e.g. ``process.get_model_weights(state)``)
    also runs on the managed worker; the round loop calls it in its own thread. ``fresh=True``
    installs a new context even if one is installed.
    """
    if not fresh and getattr(_THREAD, "generation", None) == _GENERATION:
        return
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

    context_stack_impl.context_stack.set_default_context(_sync_context(_shared_stub, "native"))
    _THREAD.generation = _GENERATION


@contextlib.contextmanager
def context(kind: Kind = "native") -> Iterator[object]:
    """Run the TFF computations inside the ``with`` block on the shared, managed worker.

    Args:
        kind: "native" (TFF's normal compilation) or "test": TFF's test compilation, needed for
            ``SecureSumFactory`` / ``tff.learning.secure_aggregator``; it replaces the secure-sum
            intrinsics by ordinary sums, i.e. it simulates secure aggregation **without
            cryptography** (no masking, no key agreement, no dropout recovery).
    """
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

    install_default()
    ctx = _sync_context(_shared_stub, kind)
    with context_stack_impl.context_stack.install(ctx):
        yield ctx


@contextlib.contextmanager
def remote_context(address: str, kind: Kind = "native") -> Iterator[object]:
    """Run computations on a TFF worker at ``host:port`` (TFF's remote execution).

    Start a worker on another machine with ``<site-packages>/tensorflow_federated/data/worker_binary
    --port=8000`` (or :class:`WorkerProcess` locally) and pass ``"that-host:8000"``. The channel is
    plain gRPC without TLS: use it only inside a trusted network or an SSH tunnel.
    """
    import grpc

    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
    from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub

    if ":" not in address:
        raise ValueError(f"address={address!r}: give host:port, e.g. '127.0.0.1:8000'")
    channel = grpc.insecure_channel(address, _GRPC_OPTIONS)
    try:
        stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
        with context_stack_impl.context_stack.install(_sync_context(lambda: stub, kind)) as ctx:
            yield ctx
    finally:
        channel.close()


def running_workers() -> list[WorkerProcess]:
    """Workers started by this module that are still alive."""
    return [w for w in list(_STARTED) if w.alive]


def shutdown() -> int:
    """Stop every worker started here; returns how many were running. Safe to call twice."""
    global _DEFAULT
    global _GENERATION
    alive = running_workers()
    for w in alive:
        w.stop()
    _DEFAULT = None
    _GENERATION += 1  # every thread's installed context holds the stopped worker's channel
    if hasattr(_THREAD, "generation"):
        install_default()
    return len(alive)


def child_worker_pids(parent: int | None = None) -> list[int]:
    """PIDs of any ``worker_binary`` whose parent is ``parent`` (default: this process), from /proc.

    Catches workers started by TFF's own default context as well as ours (Linux only).
    """
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and cmd.endswith(b"worker_binary"):
            found.append(int(entry.name))
    return found


atexit.register(shutdown)
