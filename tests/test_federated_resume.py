"""A real federated run killed with SIGKILL resumes from its last saved round and ends with the same
model as an uninterrupted run; no worker_binary is left behind. Three child Python processes run
lepton_nb.federated.loop.run (TFF's run_training_process with its FileProgramStateManager)."""

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

from lepton_nb.federated import loop, runtime

REPO = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import numpy as np
    import lepton_nb as ln
    from lepton_nb.federated import algorithms, client_data, loop, runtime
    from lepton_nb.federated.settings import ClientConfig, FedAvgConfig

    ds = ln.data.stratified_subset(ln.data.load("fashion-mnist"), 600, 200, seed=0)
    task = algorithms.task(lambda: ln.models.build_mlp((28, 28, 1), 10, hidden=(16,)), (28, 28, 1), 10)
    cfg = FedAvgConfig(num_clients=6, clients_per_round=3, rounds=5, eval_every=2, test_clients=2,
                       client=ClientConfig(learning_rate=0.1))
    data = client_data.federate(ds, 6, seed=0, holdout=0.2)
    run = loop.run(algorithms.fedavg(task, cfg), data, cfg, task=task, progress=False, tensorboard=False,
                   evaluator=loop.Evaluator(task, ds.x_test, ds.y_test, test_clients=2), state_dir={state_dir!r})
    np.savez({state_dir!r} + "/final.npz", *[np.asarray(v) for v in run.model_weights().trainable])
    runtime.shutdown()
    print("RESUMED_FROM", run.resumed_from, flush=True)
""")


def _child(state_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD.format(state_dir=str(state_dir))], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(p: subprocess.Popen, timeout: float = 300) -> str:
    try:
        out = p.communicate(timeout=timeout)[0].decode()
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(f"child run did not finish in {timeout:.0f} s: {p.communicate()[0].decode()[-2000:]}")
    assert p.returncode == 0, out[-3000:]
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _weights(folder: Path) -> list[np.ndarray]:
    f = np.load(folder / "final.npz")
    return [f[k] for k in sorted(f.files, key=lambda s: int(s.split("_")[1]))]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sigkilled_run_resumes_to_the_same_model_as_an_uninterrupted_one(tmp_path):
    ref, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    assert "RESUMED_FROM 0" in _finish(_child(ref))

    p = _child(killed)
    try:
        deadline = time.monotonic() + 300
        while not (killed / "program_state_2").exists():  # round 2 saved (renamed from its temporary folder)
            assert p.poll() is None, p.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "the run saved no state for round 2 within 300 s"
            time.sleep(0.05)
        workers = runtime.child_worker_pids(p.pid)
        assert workers, "the child runs no worker_binary of its own"
        os.kill(p.pid, signal.SIGKILL)  # no atexit, no finalizer: as a crashed kernel
        p.communicate()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [w for w in workers if _alive(w)], "worker_binary survived the SIGKILL of its Python process"
    assert not (killed / "final.npz").exists()  # the kill came before the end

    out = _finish(_child(killed))  # the same command again: it resumes
    resumed_from = int(out.split("RESUMED_FROM")[1].split()[0])
    assert 2 <= resumed_from < 5
    for a, b in zip(_weights(ref), _weights(killed)):
        np.testing.assert_array_equal(a, b)  # the same datasets in the same order: bit for bit here

    h_ref, h_killed = loop.history(ref / "metrics.csv"), loop.history(killed / "metrics.csv")
    assert h_killed["round"].tolist() == [1, 2, 3, 4, 5]  # every round once, from before and after the kill
    for col in ("train_loss", "clients", "examples", "test_accuracy", "val_accuracy"):
        np.testing.assert_array_equal(h_ref[col].to_numpy(), h_killed[col].to_numpy())
    assert h_killed["test_accuracy"].notna().tolist() == [False, True, False, True, True]  # rounds 2, 4 and the last
    # control: a run with other settings may not resume from this folder
    from types import SimpleNamespace

    from lepton_nb.federated.settings import FedAvgConfig

    other = SimpleNamespace(split="iid", sizes=np.full(6, 80))
    with pytest.raises(ValueError, match="different run"):
        loop._check_same_run(killed, FedAvgConfig(num_clients=6, clients_per_round=2), other, False)
