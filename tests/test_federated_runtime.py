"""The managed TFF worker: no process left behind, no pipeline hang, remote workers on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tensorflow_federated  # noqa: F401 - a locked dependency: missing, these tests must fail, not skip

from lepton_nb.federated import runtime  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# A script that runs TFF computations the way user code does: one outside any explicit context
# (TFF's default context, which lepton_nb replaces) and one inside runtime.context().
SCRIPT = textwrap.dedent("""
    import numpy as np
    import tensorflow_federated as tff
    from lepton_nb.federated import algorithms, runtime

    algorithms._tff()  # what every lepton_nb.federated builder does first

    @tff.tensorflow.computation(np.int32)
    def plus_one(x):
        return x + 1

    @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
    def total(values):
        return tff.federated_sum(tff.federated_map(plus_one, values))

    assert total([1, 2, 3]) == 9
    with runtime.context():
        assert total([10, 20]) == 32
    print("worker", runtime.worker().pid, flush=True)
    {tail}
""")

# A whole FedAvg run (one round, two clients, a tiny MLP) with progress bar and TensorBoard on.
RUN = textwrap.dedent("""
    import lepton_nb as ln
    from lepton_nb.federated import algorithms, client_data, loop, runtime
    from lepton_nb.federated.settings import FedAvgConfig

    ds = ln.data.stratified_subset(ln.data.load("fashion-mnist"), 100, 50)
    task = algorithms.task(lambda: ln.models.build_mlp(hidden=(8,)), ds.input_shape, 10)
    cfg = FedAvgConfig(num_clients=2, clients_per_round=2, rounds=1, test_clients=1)
    run = loop.run(algorithms.fedavg(task, cfg), client_data.federate(ds, 2), cfg, task=task,
                   evaluator=loop.Evaluator(task, ds.x_test, ds.y_test, test_clients=1))
    print("accuracy", run.test_accuracy, flush=True)
    print("worker", runtime.worker().pid, flush=True)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return False


def _python(tail: str = "", script: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script or SCRIPT.format(tail=tail)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO, start_new_session=True)


def _worker_pid(out: bytes) -> int:
    lines = [l for l in out.decode().splitlines() if l.startswith("worker ")]
    assert lines, f"the script printed no worker pid: {out.decode()[-500:]}"
    return int(lines[0].split()[1])


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", ["computations", "fedavg_run"])
def test_script_in_a_pipeline_ends_and_leaves_no_worker(script):
    proc = _python(script=SCRIPT.format(tail="") if script == "computations" else RUN)
    try:
        # Reading stdout/stderr to EOF: a worker that inherited the pipes would block this
        # until the timeout (TFF's default context does: docs/stack.md).
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the pipeline hung: a process kept the script's stdout/stderr open after it finished")
    assert proc.returncode == 0, err.decode()[-2000:]
    if script == "fedavg_run":
        assert b"accuracy " in out
    pid = _worker_pid(out)
    assert _wait_gone(pid), f"worker_binary {pid} still running after its Python process exited"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_worker_dies_with_a_killed_python():
    proc = _python(tail="import time; time.sleep(300)")
    try:
        line = b""
        deadline = time.monotonic() + 180
        while not line.startswith(b"worker ") and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"script failed: {proc.stderr.read().decode()[-2000:]}")
        pid = _worker_pid(line)
        assert _alive(pid)
        proc.kill()  # SIGKILL: no atexit, no finalizer runs in Python
        proc.wait(30)
        assert _wait_gone(pid), f"worker_binary {pid} survived the SIGKILL of its Python process"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_workers_on_localhost_serve_remote_contexts():
    import tensorflow_federated as tff

    from lepton_nb.federated import algorithms

    algorithms._tff()

    @tff.tensorflow.computation(np.float32)
    def square(x):
        return x * x

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def sum_of_squares(values):
        return tff.federated_sum(tff.federated_map(square, values))

    with runtime.WorkerProcess() as a, runtime.WorkerProcess() as b:
        assert a.pid != b.pid and a.port != b.port and a.alive and b.alive
        assert {a.pid, b.pid} <= {w.pid for w in runtime.running_workers()}
        with runtime.remote_context(a.address):
            on_a = sum_of_squares([1.0, 2.0, 3.0])
        with runtime.remote_context(b.address):
            on_b = sum_of_squares([4.0, 5.0])
        assert (on_a, on_b) == (14.0, 41.0)
    assert not a.alive and not b.alive
    assert a.pid not in runtime.child_worker_pids() and b.pid not in runtime.child_worker_pids()


def test_remote_context_rejects_an_address_without_port():
    with pytest.raises(ValueError, match="host:port"):
        with runtime.remote_context("localhost"):
            pass


@pytest.mark.slow
def test_shutdown_stops_the_shared_worker():
    w = runtime.worker()
    assert w.alive and w.pid in runtime.child_worker_pids()
    assert runtime.shutdown() >= 1
    assert not w.alive and runtime.child_worker_pids() == [] and runtime.running_workers() == []
    assert runtime.shutdown() == 0


@pytest.mark.slow
def test_worker_started_from_a_short_lived_thread_outlives_the_thread():
    # TFF calls executor factories from an event-loop thread that ends with its context; the
    # parent-death signal must not fire then (it is bound to the thread that forked the worker).
    import threading

    runtime.shutdown()
    started = []
    t = threading.Thread(target=lambda: started.append(runtime.worker()))
    t.start()
    t.join()
    time.sleep(1.0)
    assert started and started[0].alive and runtime.worker() is started[0]
    runtime.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_canary_tff_own_default_context_leaves_an_orphan_holding_the_pipes():
    """Why runtime exists: TFF 0.87's own context leaves worker_binary running after Python exits,
    holding the script's stdout open. If this starts failing, TFF fixed the trap upstream."""
    import select

    script = textwrap.dedent("""
        import numpy as np
        import tensorflow_federated as tff

        @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
        def total(values):
            return tff.federated_sum(values)

        assert total([1, 2]) == 3
        print("done", flush=True)
    """)
    proc = _python(script=script)  # its own session: the orphan stays in our process group
    try:
        proc.wait(180)  # the Python process itself ends...
        assert proc.returncode == 0, proc.stderr.read(4000).decode()
        assert proc.stdout.readline().startswith(b"done")
        ready, _, _ = select.select([proc.stdout], [], [], 5.0)
        still_open = not ready or proc.stdout.read1(1) != b""
        assert still_open, "stdout reached EOF: no process kept the pipe open (TFF fixed the trap?)"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned worker_binary, by our session id
        except ProcessLookupError:
            pass
        proc.stdout.close()
        proc.stderr.close()


def test_computations_run_again_after_shutdown():
    """shutdown() must not leave the default context pointing at the stopped worker's channel."""
    import tensorflow as tf
    import tensorflow_federated as tff

    runtime.install_default()

    @tff.tensorflow.computation(tf.int32)
    def plus_one(x):
        return x + 1

    assert plus_one(1) == 2
    runtime.shutdown()
    assert plus_one(2) == 3  # a new worker starts behind a fresh default context
    runtime.shutdown()
    assert runtime.child_worker_pids() == []
