"""The main job: notebooks run in order into reports/, a failure names notebook and cell.

The fault tests run the real job (``python -m lepton_nb run``) on small throwaway notebooks and
inject each fault for real: a corrupted copy of the bundled data, an unreadable summary.json
(before the job and from inside a notebook's kernel), a kernel killed with SIGKILL mid-cell.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import lepton_nb as ln
from lepton_nb.notebook_checks import colab_setup_source

REPO = Path(__file__).resolve().parent.parent


def _notebook(path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def notebooks(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    _notebook(d / "01_first.ipynb", "import lepton_nb as ln",
              "ln.reports.record('01_first', {'models': {'m': {'accuracy': 90.0}}, 'mode': ln.settings.mode()})")
    _notebook(d / "02_second.ipynb", "x = 1", "open('missing-data-file.npz')  # fails", "y = 2")
    _notebook(d / "03_third.ipynb", "import lepton_nb as ln", "ln.reports.record('03_third', {'ran': True})")
    return d


def _job(notebooks, reports, *args):
    return [sys.executable, "-m", "lepton_nb", "run", "--notebook-dir", str(notebooks), "--reports", str(reports), *args]


def _run(notebooks, reports, *args):
    return subprocess.run(_job(notebooks, reports, *args), capture_output=True, text=True, timeout=300)


def _assert_plain(stdout: str, stderr: str, reports: Path) -> None:
    """No terminal escape code in what the job printed or in summary.md."""
    for where, text in (("stdout", stdout), ("stderr", stderr), ("summary.md", (reports / "summary.md").read_text())):
        assert "\x1b" not in text, f"escape code in {where}: {text[max(0, text.find(chr(27)) - 80):][:200]!r}"


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_failing_notebook_stops_the_job_and_keeps_earlier_reports(notebooks, tmp_path):
    reports = tmp_path / "reports"
    proc = _run(notebooks, reports, "--smoke")
    assert proc.returncode == 1
    assert "02_second.ipynb failed in code cell 2" in proc.stderr and "missing-data-file.npz" in proc.stderr
    smoke = json.loads((reports / "summary.json").read_text())["modes"]["smoke"]
    assert smoke["sections"]["01_first"]["mode"] == "smoke"
    assert "03_third" not in smoke["sections"]  # the job stopped
    assert smoke["runs"]["01_first"]["command"] == "make run NOTEBOOKS=01 SMOKE=1"
    assert smoke["runs"]["main_job"]["command"] == "make run SMOKE=1"
    assert smoke["sections"]["main_job"]["notebooks"]["02_second"]["status"] == "failed"
    assert (reports / "notebooks" / "01_first.ipynb").exists() and (reports / "notebooks" / "01_first.html").exists()
    assert (reports / "notebooks" / "02_second.ipynb").exists()  # partly executed copy kept
    assert "| m | 90.00 |" in (reports / "summary.md").read_text()


def test_notebook_selection(notebooks, tmp_path, monkeypatch):
    monkeypatch.delenv("LEPTON_NB_SMOKE", raising=False)  # the job runs in default mode
    monkeypatch.delenv("LEPTON_NB_FULL", raising=False)
    proc = _run(notebooks, tmp_path / "r", "--notebooks", "1,03")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads((tmp_path / "r" / "summary.json").read_text())["modes"]["default"]["runs"]
    assert runs["main_job"]["command"] == "make run NOTEBOOKS=1,03"
    assert "[1/2] 01_first.ipynb" in proc.stdout and "[2/2] 03_third.ipynb" in proc.stdout
    with pytest.raises(SystemExit, match="no notebook numbered 07"):
        ln.cli.find_notebooks("07", notebooks)


def test_results_prints_the_table_and_writes_the_readme_block(tmp_path, capsys):
    reports = tmp_path / "reports"
    (reports / "bench").mkdir(parents=True)
    (reports / "summary.json").write_text(json.dumps({"modes": {"full": {
        "sections": {"03_dp": {"headline": {"DP-SGD test accuracy % (epsilon 2.99, delta 1e-5)": 87.39}}},
        "runs": {"03_dp": {"recorded": "2026-11-29T18:00:00+00:00", "command": "make run NOTEBOOKS=03 FULL=1",
                           "commit": "abc1234", "dirty": False}}}}}))
    (reports / "bench" / "pipeline.json").write_text(json.dumps(
        {"name": "pipeline", "config": {"full": False}, "recorded": "2026-11-28T08:00:00+00:00",
         "ratios": {"pipeline_vs_epoch": 0.017}}))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Results\n\n<!-- results:begin -->\nstale\n<!-- results:end -->\n\n## Next\n")
    assert ln.cli.main(["results", "--reports", str(reports), "--write", str(readme)]) == 0
    printed = capsys.readouterr().out
    row = ("| 03_dp | DP-SGD test accuracy % (epsilon 2.99, delta 1e-5) | 87.39 | full | 2026-11-29 | "
           "`make run NOTEBOOKS=03 FULL=1` |")
    bench = "| bench_pipeline | pipeline_vs_epoch (time ratio) | 0.017 | default | 2026-11-28 | " \
            "`python benchmarks/bench_pipeline.py` |"
    assert row in printed and bench in printed
    text = readme.read_text()
    block = text.split("<!-- results:begin -->")[1].split("<!-- results:end -->")[0]
    assert "stale" not in text and row in block and "python -m lepton_nb results --write README.md" in block
    assert text.startswith("# x\n\n## Results\n\n<!-- results:begin -->\n") and text.endswith("<!-- results:end -->\n\n## Next\n")
    readme.write_text("# no block\n")
    assert ln.cli.main(["results", "--reports", str(reports), "--write", str(readme)]) == 2
    assert readme.read_text() == "# no block\n"


def test_results_write_keeps_the_rows_of_runs_the_reports_do_not_hold(tmp_path, capsys):
    """A new checkout's reports/ holds only what ran there: the README keeps the other runs' rows (a
    full-mode notebook, a benchmark) as written, and every run that reports/ holds replaces its rows."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "summary.json").write_text(json.dumps({"modes": {"default": {
        "sections": {"03_dp": {"headline": {"DP accuracy %": 77.48}}},
        "runs": {"03_dp": {"recorded": "2026-12-03T13:25:00+00:00", "command": "make run NOTEBOOKS=03"}}}}}))
    old = ["| notebook | figure | value | mode | measured | command to reproduce |", "|---|---|---|---|---|---|",
           "| 01_base | accuracy % | 93.11 | full | 2026-12-02 | `make run NOTEBOOKS=01 FULL=1` |",
           "| 03_dp | DP accuracy % | 78.83 | default | 2026-12-01 | `make run NOTEBOOKS=03` |",
           "| 01_base | a \\| piped figure | 1.00 | full | 2026-12-02 | `make run NOTEBOOKS=01 FULL=1` |",
           "| 03_dp | DP accuracy % | 89.60 | full | 2026-12-02 | `make run NOTEBOOKS=03 FULL=1` |",
           "| bench_dp | fast_vs_nonprivate (time ratio) | 0.81 | default | 2026-12-02 | `python benchmarks/bench_dp.py` |"]
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:begin -->\nnote\n\n" + "\n".join(old) + "\n<!-- results:end -->\n")
    assert ln.cli.main(["results", "--reports", str(reports), "--write", str(readme)]) == 0
    err = capsys.readouterr().err
    block = readme.read_text().split("<!-- results:begin -->")[1].split("<!-- results:end -->")[0]
    rows = [line for line in block.splitlines() if line.startswith("| 0") or line.startswith("| bench")]
    assert rows == ["| 03_dp | DP accuracy % | 77.48 | default | 2026-12-03 | `make run NOTEBOOKS=03` |",
                    old[2], old[4], old[5], old[6]]  # by mode (default, full) and notebook, then benchmarks
    assert "78.83" not in block  # the run reports/ holds replaced its old rows
    assert "01_base (full), 03_dp (full), bench_dp (default)" in err


def test_sync_notebooks_checks_then_fixes(tmp_path, capsys):
    d = tmp_path / "nbs"
    d.mkdir()
    nb = new_notebook(cells=[new_code_cell("print('old set-up')", metadata={"tags": ["colab-setup"]}),
                             new_code_cell("x = 1", execution_count=3, outputs=[nbformat.v4.new_output("stream", text="1")])])
    nbformat.write(nb, d / "01_a.ipynb")
    assert ln.cli.main(["sync-notebooks", "--check", "--notebook-dir", str(d)]) == 1
    assert "01_a.ipynb: the 'colab-setup' cell differs" in capsys.readouterr().out
    assert ln.cli.main(["sync-notebooks", "--notebook-dir", str(d)]) == 0
    assert ln.cli.main(["sync-notebooks", "--check", "--notebook-dir", str(d)]) == 0
    fixed = nbformat.read(d / "01_a.ipynb", as_version=4)
    assert fixed.cells[0].source == colab_setup_source()
    assert fixed.cells[1].outputs == [] and fixed.cells[1].execution_count is None and fixed.cells[1].source == "x = 1"


def test_corrupted_bundled_data_fails_with_a_plain_checksum_error(notebooks, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sample = data / "fashion_mnist_sample.npz"
    shutil.copy(REPO / "data" / "fashion_mnist_sample.npz", sample)
    shutil.copy(REPO / "data" / "SHA256SUMS", data / "SHA256SUMS")
    assert len(ln.data.load("fashion-mnist", path=sample).x_train) == 6000  # control: the intact copy loads
    raw = bytearray(sample.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte flipped
    sample.write_bytes(bytes(raw))
    _notebook(notebooks / "02_second.ipynb", "import lepton_nb as ln",
              f"ds = ln.data.load('fashion-mnist', path={str(sample)!r})", "print('not reached')")
    reports = tmp_path / "reports"
    proc = _run(notebooks, reports, "--smoke")
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert line.startswith("error: 02_second.ipynb failed in code cell 2 (\"ds = ln.data.load('fashion-mnist'")
    assert "): DataError: " in line and "checksum mismatch" in line and "git checkout -- data/" in line
    _assert_plain(proc.stdout, proc.stderr, reports)
    executed = nbformat.read(reports / "notebooks" / "02_second.ipynb", as_version=4)
    traceback = "\n".join(executed.cells[1].outputs[-1]["traceback"])
    assert "\x1b[" in traceback  # control: the kernel's own traceback is coloured; the job's line is not
    smoke = json.loads((reports / "summary.json").read_text())["modes"]["smoke"]
    assert smoke["sections"]["01_first"]["models"]["m"]["accuracy"] == 90.0  # the earlier report survives
    failed = smoke["sections"]["main_job"]["notebooks"]["02_second"]
    assert failed["status"] == "failed" and failed["error"] == line.removeprefix("error: ")
    assert "DataError: " in (reports / "summary.md").read_text()


def test_an_unreadable_summary_is_moved_aside_and_costs_no_run(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    reports = tmp_path / "reports"
    reports.mkdir()
    summary = reports / "summary.json"
    summary.write_text('{"broken": ')  # truncated before the job starts
    _notebook(d / "01_damages.ipynb", "import os\nimport lepton_nb as ln",
              "p = os.path.join(os.environ['LEPTON_NB_REPORTS'], 'summary.json')\n"
              "open(p, 'wb').write(b'\\xff\\xfe not UTF-8')  # damaged while the notebook runs",
              "ln.reports.record_models('01_damages', {'m': {'accuracy': 91.0}}, headline={'m accuracy %': 91.0})")
    _notebook(d / "02_after.ipynb", "import lepton_nb as ln", "ln.reports.record('02_after', {'ran': True})")
    proc = _run(d, reports, "--smoke")
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 2 and warning[0].startswith(f"warning: {summary} is not valid JSON (")
    aside = sorted(reports.glob("summary.json.unreadable-*"))
    assert len(aside) == 2  # one moved by the job at its start, one by the notebook's record_models
    assert f"moved it aside to {aside[0]} and started a fresh summary" in warning[0]
    assert warning[1] == (f"warning: 01_damages.ipynb found {summary} unreadable and moved it aside to {aside[1]} "
                          "(its warning is in the executed notebook)")
    assert {p.read_bytes() for p in aside} == {b'{"broken": ', b"\xff\xfe not UTF-8"}  # nothing deleted
    outputs = nbformat.read(reports / "notebooks" / "01_damages.ipynb", as_version=4).cells[2].outputs
    shown = "".join(o.get("text", "") for o in outputs)
    assert "SummaryWarning" in shown and "is not UTF-8 text" in shown and "moved it aside to" in shown
    smoke = json.loads(summary.read_text())["modes"]["smoke"]
    assert smoke["sections"]["01_damages"]["headline"] == {"m accuracy %": 91.0}  # the run's figures are kept
    assert smoke["sections"]["02_after"] == {"ran": True}
    assert [s["status"] for s in smoke["sections"]["main_job"]["notebooks"].values()] == ["ok", "ok"]
    _assert_plain(proc.stdout, proc.stderr, reports)


def test_a_killed_kernel_is_named_with_its_cell_signal_and_memory(notebooks, tmp_path):
    pidfile = tmp_path / "kernel.pid"
    _notebook(notebooks / "02_second.ipynb", "import os, time\nimport numpy as np",
              "block = np.ones(200 * 2**20 // 8)  # 200 MiB, written\n"
              f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)", "print('not reached')")
    reports = tmp_path / "reports"
    job = subprocess.Popen(_job(notebooks, reports, "--smoke"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.monotonic() + 240
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert job.poll() is None and time.monotonic() < deadline, "the kernel never reached the cell"
            time.sleep(0.1)
        time.sleep(1.0)  # the cell sleeps: the kill lands mid-cell
        os.kill(int(pidfile.read_text()), signal.SIGKILL)  # what the out-of-memory killer sends
        stdout, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 1
    line = _error_line(stderr)
    assert line.startswith("error: 02_second.ipynb: the kernel died while running code cell 2 "
                           "('block = np.ones(200 * 2**20 // 8)  # 200 MiB, written'), ended by signal SIGKILL; ")
    peak = re.search(r"kernel memory peaked at ([\d.]+) (MiB|GiB) or more, ([\d.]+) (MiB|GiB) available when it "
                     r"started", line)
    assert peak, line
    assert float(peak[1]) * (1024 if peak[2] == "GiB" else 1) >= 200  # the 200 MiB block was seen
    assert "likely killed for lack of memory" in line or "not likely for lack of memory" in line
    _assert_plain(stdout, stderr, reports)
    executed = nbformat.read(reports / "notebooks" / "02_second.ipynb", as_version=4)  # the partly executed copy
    assert "lepton_nb: 02_second.ipynb: the kernel died" in executed.cells[1].outputs[-1]["text"]
    smoke = json.loads((reports / "summary.json").read_text())["modes"]["smoke"]
    assert smoke["sections"]["01_first"]["models"]["m"]["accuracy"] == 90.0  # the earlier report survives
    assert smoke["sections"]["main_job"]["notebooks"]["02_second"]["error"] == line.removeprefix("error: ")


def test_resume_skips_a_finished_notebook_and_reruns_a_failed_one(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    marker = tmp_path / "input-ready"
    _notebook(d / "01_first.ipynb", "import lepton_nb as ln", "ln.reports.record('01_first', {'ran': True})")
    _notebook(d / "02_second.ipynb", "import lepton_nb as ln",
              f"open({str(marker)!r}).close()  # fails until it exists",
              "ln.reports.record('02_second', {'ran': True})")
    _notebook(d / "03_third.ipynb", "import lepton_nb as ln", "ln.reports.record('03_third', {'ran': True})")
    reports = tmp_path / "reports"
    first = _run(d, reports, "--smoke")
    assert first.returncode == 1 and "02_second.ipynb failed in code cell 2" in first.stderr
    runs = json.loads((reports / "summary.json").read_text())["modes"]["smoke"]["runs"]
    copy_01 = (reports / "notebooks" / "01_first.ipynb").stat().st_mtime_ns

    marker.touch()  # the cause of the failure fixed
    second = _run(d, reports, "--smoke", "--resume")
    assert second.returncode == 0, second.stderr
    out = second.stdout
    assert re.search(r"resume: skipping 01_first\.ipynb: finished in smoke mode at \S+ with the same code "
                     r"\((commit \w+|sha256 \w{16} of 01_first\.ipynb and lepton_nb/)\)", out), out
    assert "resume: running 02_second.ipynb: its last run in smoke mode failed" in out
    assert "resume: running 03_third.ipynb: no run of it recorded in smoke mode" in out
    assert "[1/2] 02_second.ipynb ... done" in out and "[2/2] 03_third.ipynb ... done" in out
    assert "01_first.ipynb ..." not in out
    smoke = json.loads((reports / "summary.json").read_text())["modes"]["smoke"]
    assert smoke["runs"]["01_first"] == runs["01_first"]  # not run again
    assert (reports / "notebooks" / "01_first.ipynb").stat().st_mtime_ns == copy_01
    assert {k: v["status"] for k, v in smoke["sections"]["main_job"]["notebooks"].items()} == \
        {"01_first": "ok", "02_second": "ok", "03_third": "ok"}
    assert smoke["sections"]["main_job"]["notebooks"]["02_second"]["error"] == ""  # the failure's text is gone

    _notebook(d / "03_third.ipynb", "import lepton_nb as ln", "ln.reports.record('03_third', {'ran': 'again'})")
    third = _run(d, reports, "--smoke", "--resume")
    assert third.returncode == 0, third.stderr
    assert "resume: running 03_third.ipynb: the code changed since its last run" in third.stdout
    assert "[1/1] 03_third.ipynb ... done" in third.stdout
    sections = json.loads((reports / "summary.json").read_text())["modes"]["smoke"]["sections"]
    assert sections["03_third"]["ran"] == "again"


def test_resume_plan_is_per_mode_and_per_code(tmp_path):
    nbs = [tmp_path / "01_a.ipynb", tmp_path / "02_b.ipynb", tmp_path / "03_c.ipynb"]
    done = {"01_a": {"status": "ok", "code": "commit abc1234", "finished": "2026-12-02T10:00:00+00:00"},
            "02_b": {"status": "ok", "code": "commit 0000000", "finished": "2026-12-01T10:00:00+00:00"},
            "03_c": {"status": "failed", "code": "commit abc1234"}}
    summary = {"modes": {"full": {"sections": {"main_job": {"notebooks": done}}}}}
    same = dict.fromkeys(["01_a", "02_b", "03_c"], "commit abc1234")
    plan = [(p.name, skip, why) for p, skip, why in ln.cli.resume_plan(nbs, summary, "full", same)]
    assert plan == [
        ("01_a.ipynb", True, "finished in full mode at 2026-12-02T10:00:00+00:00 with the same code (commit abc1234)"),
        ("02_b.ipynb", False, "the code changed since its last run (commit 0000000, now commit abc1234)"),
        ("03_c.ipynb", False, "its last run in full mode failed")]
    assert [skip for _, skip, _ in ln.cli.resume_plan(nbs, summary, "default", same)] == [False] * 3
    assert ln.cli.resume_plan(nbs, summary, "default", same)[0][2] == "no run of it recorded in default mode"


def test_code_identity_follows_the_notebook_and_the_package(tmp_path):
    nb = tmp_path / "01_a.ipynb"
    nb.write_text("{}")
    package = ln.cli._package_digest()
    clean = {"commit": "abc1234", "dirty": False}
    outside = ln.cli.code_identity(nb, clean, package)  # a notebook outside the checkout: the commit does not cover it
    assert re.fullmatch(r"sha256 [0-9a-f]{16} of 01_a\.ipynb and lepton_nb/", outside)
    assert ln.cli.code_identity(nb, clean, package) == outside
    assert ln.cli.code_identity(nb, clean, package + b"x") != outside  # the package changed
    nb.write_text('{"changed": 1}')
    assert ln.cli.code_identity(nb, clean, package) != outside  # the notebook changed
    inside = ln.cli.NOTEBOOKS / "01_data_and_baselines.ipynb"
    assert ln.cli.code_identity(inside, clean, package) == "commit abc1234"
    assert ln.cli.code_identity(inside, {"commit": "abc1234", "dirty": True}, package).startswith("sha256 ")


def test_make_run_passes_resume():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stamp = ".venv/.lepton_nb-installed"  # -o: do not (re)create the venv for a dry run
    dry = subprocess.run(["make", "-n", "-o", stamp, "run", "RESUME=1", "NOTEBOOKS=05", "FULL=1"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "-m lepton_nb run --full --notebooks 05 --resume" in dry
    plain = subprocess.run(["make", "-n", "-o", stamp, "run"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout
    assert "-m lepton_nb run" in plain and "--resume" not in plain
