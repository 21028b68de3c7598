"""Real processes: a two-worker MultiWorkerMirroredStrategy cluster on 127.0.0.1, and a training
process killed with SIGKILL mid-run and restarted from its BackupAndRestore backup.

Both compare against a single-process run of the same worker code (tests/workers/train_worker.py)
made inside this test process. Tolerances: the all-reduced gradient of two 30-image halves equals
the 60-image gradient up to float32 summation order, so losses agree to 1e-4 (relative) and
weights to 1e-4 (absolute) after 3 epochs; measured differences are about 2e-7. Every process is
started in its own session and SIGKILLed (whole group) in a ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "workers" / "train_worker.py"
sys.path.insert(0, str(WORKER.parent))

import train_worker  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "LEPTON_NB_WORKER": "0"}


def test_two_workers_match_each_other_and_a_single_process(tmp_path):
    from lepton_nb.distributed import run_workers

    argv = [sys.executable, str(WORKER), "--out", str(tmp_path / "cluster"), "--epochs", "3",
            "--n-train", "600", "--batch", "60"]
    results = run_workers(argv, 2, timeout=150, cwd=REPO, env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    for r in results:
        assert r.returncode == 0, f"worker {r.index} failed:\n{r.stderr[-3000:]}"
        with pytest.raises(ProcessLookupError):  # reaped: nothing left behind
            os.kill(r.pid, 0)
    w0, w1 = (json.loads((tmp_path / "cluster" / f"result-{i}.json").read_text()) for i in (0, 1))
    assert w0["distribution"]["strategy"] == "multi_worker" and w0["distribution"]["replicas"] == 2
    assert w0["distribution"]["per_replica_batch"] == 30
    weights0, weights1 = (_weights(tmp_path / "cluster" / f"weights-{i}.npz") for i in (0, 1))
    assert _max_diff(weights0, weights1) == 0.0, "the two workers ended with different weights"

    single = train_worker.run(train_worker.parse(["--out", str(tmp_path / "single"), "--kind", "default",
                                                  "--epochs", "3", "--n-train", "600", "--batch", "60"]))
    print(f"multi-worker vs single process: max |loss diff| "
          f"{np.abs(np.subtract(w0['history']['loss'], single['history']['loss'])).max():.2e}, "
          f"max |weight diff| {_max_diff(weights0, single['weights']):.2e}")
    np.testing.assert_allclose(w0["history"]["loss"], single["history"]["loss"], rtol=LOSS_RTOL)
    assert _max_diff(weights0, single["weights"]) < WEIGHT_ATOL
    assert single["history"]["loss"][-1] < single["history"]["loss"][0], "training did not reduce the loss"


def test_sigkilled_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    out, backup = tmp_path / "run", tmp_path / "backup"
    argv = [sys.executable, str(WORKER), "--out", str(out), "--epochs", "3", "--n-train", "600", "--batch", "60",
            "--backup-dir", str(backup), "--sleep-after-epoch", "30"]
    progress = out / "progress-0.txt"
    proc = subprocess.Popen(argv, cwd=REPO, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (progress.exists() and progress.read_text().strip()):
            assert proc.poll() is None, f"worker exited early:\n{proc.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "the first epoch did not finish within 120 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # as a preempted VM would: no chance to clean up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    assert progress.read_text().split() == ["0"], "killed after exactly one completed epoch"
    assert not (out / "result-0.json").exists(), "the killed run must not have finished"
    assert (backup / "chief").is_dir(), "no BackupAndRestore checkpoint was written"

    resumed = subprocess.run([a for a in argv if a not in ("--sleep-after-epoch", "30")], cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=150, start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    r = json.loads((out / "result-0.json").read_text())
    assert r["distribution"]["resumed_at_epoch"] == 1
    assert r["epochs_run"] == 2 and progress.read_text().split() == ["0", "1", "2"], "3 epochs in total"
    assert not (backup / "chief").exists(), "the backup is deleted once training completes"

    reference = train_worker.run(train_worker.parse(["--out", str(tmp_path / "ref"), "--epochs", "3",
                                                     "--n-train", "600", "--batch", "60",
                                                     "--backup-dir", str(tmp_path / "ref_backup")]))
    print(f"resumed vs uninterrupted: max |weight diff| "
          f"{_max_diff(_weights(out / 'weights-0.npz'), reference['weights']):.2e}")
    np.testing.assert_allclose(r["history"]["loss"], reference["history"]["loss"][1:], rtol=LOSS_RTOL)
    assert _max_diff(_weights(out / "weights-0.npz"), reference["weights"]) < WEIGHT_ATOL
