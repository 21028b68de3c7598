"""lepton_nb.execution: how a dead kernel is explained (the real kill is in tests/test_cli.py)."""

from __future__ import annotations

import signal

from lepton_nb.execution import KernelDeath, available_memory, oom_kill_count

GiB, MiB = 2**30, 2**20


def _death(returncode, peak, available, oom_kills):
    return KernelDeath("03_differential_privacy.ipynb", 9, "dp = story.train_dp(cfg)", returncode, available, peak,
                       oom_kills)


def test_sigkill_near_the_memory_limit_is_likely_memory_with_the_fix():
    msg = _death(-signal.SIGKILL, int(17.5 * GiB), 18 * GiB, 0).message()
    assert msg.startswith("03_differential_privacy.ipynb: the kernel died while running code cell 9 "
                          "('dp = story.train_dp(cfg)'), ended by signal SIGKILL; likely killed for lack of memory "
                          "(kernel memory peaked at 17.5 GiB or more, 18.0 GiB available when it started; ")
    assert "Fix: lower the batch size (TrainConfig.batch_size)" in msg and "DPSGDConfig.num_microbatches" in msg


def test_an_out_of_memory_kill_counted_makes_memory_likely_even_with_a_small_peak():
    msg = _death(-signal.SIGKILL, 900 * MiB, 18 * GiB, 1).message()
    assert "likely killed for lack of memory" in msg and "the system counted 1 out-of-memory kill(s) meanwhile" in msg


def test_sigkill_far_below_the_limit_is_not_blamed_on_memory():
    msg = _death(-signal.SIGKILL, 300 * MiB, 18 * GiB, 0).message()
    assert "not likely for lack of memory (kernel memory peaked at 300 MiB or more, 18.0 GiB available" in msg
    assert "Fix:" not in msg
    unknown = _death(-signal.SIGKILL, 300 * MiB, 18 * GiB, None).message()
    assert "not likely" in unknown and "the system's out-of-memory kill count could not be read" in unknown


def test_other_endings_are_named():
    assert "ended by signal SIGSEGV; likely a crash in native code" in _death(-signal.SIGSEGV, MiB, GiB, 0).message()
    assert "exited with status 3 (kernel memory peaked at 1 MiB or more" in _death(3, MiB, GiB, 0).message()
    unknown = _death(None, None, None, None).message()
    assert "ended for a reason not known" in unknown and "peak not measured, unknown available" in unknown
    before = KernelDeath("01_a.ipynb", 0, "", -signal.SIGKILL, GiB, MiB, 0).message()
    assert before.startswith("01_a.ipynb: the kernel died before its first cell, ended by signal SIGKILL")


def test_the_machine_figures_are_readable_here():
    available = available_memory()
    assert available is not None and 0 < available < 2**50
    count = oom_kill_count()
    assert count is None or count >= 0
