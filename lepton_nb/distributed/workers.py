"""A ``MultiWorkerMirroredStrategy`` cluster of worker processes on one host, and its ``TF_CONFIG``.

:func:`run_workers` starts N copies of a command, each with its own ``TF_CONFIG`` (free ports on
``host``), and kills the whole cluster when one fails, on a timeout, or on any error: no process is
left behind. The tests and ``benchmarks/bench_distributed.py`` train a real two-worker cluster this way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["WorkerResult", "run_workers", "tf_config"]


def tf_config(workers: Sequence[str], index: int) -> str:
    """The ``TF_CONFIG`` JSON of worker ``index`` in a cluster of ``workers`` ("host:port")."""
    if not 0 <= index < len(workers):
        raise ValueError(f"worker index {index} outside 0..{len(workers) - 1}")
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})


@dataclass
class WorkerResult:
    """One worker process of :func:`run_workers`."""

    index: int
    pid: int
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


def run_workers(
    argv: Sequence[str],
    num_workers: int = 2,
    *,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
) -> list[WorkerResult]:
    """Run ``num_workers`` copies of ``argv`` as a ``MultiWorkerMirroredStrategy`` cluster on ``host``.

    Each process gets free ports (portpicker) in its ``TF_CONFIG`` and ``LEPTON_NB_WORKER=<index>``;
    all are killed (their whole process group, SIGKILL) when the first one fails, when
    ``timeout`` seconds pass, or on any error: none is left behind.

    Returns:
        One :class:`WorkerResult` per worker, in index order.

    Raises:
        TimeoutError: when the cluster did not finish within ``timeout`` (stderr tails included;
            ``err.pids`` lists the killed processes).
    """
    import portpicker

    if num_workers < 1:
        raise ValueError(f"num_workers={num_workers}: need at least one worker")
    ports = [portpicker.pick_unused_port() for _ in range(num_workers)]
    addresses = [f"{host}:{p}" for p in ports]
    procs: list[subprocess.Popen] = []
    outs: list[tuple[Any, Any]] = []
    t0 = time.perf_counter()
    try:
        for i in range(num_workers):
            worker_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config(addresses, i),
                          "LEPTON_NB_WORKER": str(i)}
            out, err = _tempfile(), _tempfile()
            outs.append((out, err))
            procs.append(subprocess.Popen(list(argv), env=worker_env, cwd=cwd, stdout=out, stderr=err,
                                          start_new_session=True))
        done: dict[int, float] = {}
        while len(done) < num_workers:
            if time.perf_counter() - t0 > timeout:
                tails = "\n".join(f"--- worker {i} stderr ---\n{_tail(outs[i][1])}" for i in range(num_workers))
                err = TimeoutError(f"multi-worker run did not finish within {timeout:.0f} s\n{tails}")
                err.pids = [p.pid for p in procs]
                raise err
            for i, p in enumerate(procs):
                if i not in done and p.poll() is not None:
                    done[i] = time.perf_counter() - t0
                    if p.returncode != 0:  # the others would wait for it forever
                        for q in procs:
                            _kill(q)
            time.sleep(0.05)
        return [WorkerResult(i, procs[i].pid, procs[i].returncode, _read(outs[i][0]), _read(outs[i][1]), done[i])
                for i in range(num_workers)]
    finally:
        for p in procs:
            _kill(p)
        for out, err in outs:
            out.close()
            err.close()
        for p in ports:
            with contextlib.suppress(Exception):
                portpicker.return_port(p)


def _tempfile():
    import tempfile

    return tempfile.TemporaryFile(mode="w+")


def _read(f) -> str:
    f.flush()
    f.seek(0)
    return f.read()


def _tail(f, lines: int = 15) -> str:
    return "\n".join(_read(f).splitlines()[-lines:])


def _kill(p: subprocess.Popen) -> None:
    """SIGKILL ``p``'s process group (it was started in its own session) and reap it."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.wait(timeout=10)
