"""The main job: notebooks run in order into reports/, a failure names notebook and cell."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import lepton_nb as ln


def _notebook(path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def notebooks(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    _notebook(d / "01_first.ipynb", "import lepton_nb as ln",
              "ln.reports.record('01_first', {'models': {'m': {'accuracy': 90.0}}, 'mode': ln.config.mode()})")
    _notebook(d / "02_second.ipynb", "x = 1", "open('missing-data-file.npz')  # fails", "y = 2")
    _notebook(d / "03_third.ipynb", "import lepton_nb as ln", "ln.reports.record('03_third', {'ran': True})")
    return d


def _run(notebooks, reports, *args):
    return subprocess.run([sys.executable, "-m", "lepton_nb", "run", "--notebook-dir", str(notebooks),
                           "--reports", str(reports), *args], capture_output=True, text=True, timeout=300)


def test_failing_notebook_stops_the_job_and_keeps_earlier_reports(notebooks, tmp_path):
    reports = tmp_path / "reports"
    proc = _run(notebooks, reports, "--smoke")
    assert proc.returncode == 1
    assert "02_second.ipynb failed in code cell 2" in proc.stderr and "missing-data-file.npz" in proc.stderr
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["sections"]["01_first"]["mode"] == "smoke"
    assert "03_third" not in summary["sections"]  # the job stopped
    assert (reports / "notebooks" / "01_first.ipynb").exists() and (reports / "notebooks" / "01_first.html").exists()
    assert (reports / "notebooks" / "02_second.ipynb").exists()  # partly executed copy kept
    assert "| m | 90.00 |" in (reports / "summary.md").read_text()


def test_notebook_selection(notebooks, tmp_path):
    proc = _run(notebooks, tmp_path / "r", "--notebooks", "1,03")
    assert proc.returncode == 0, proc.stderr
    assert "[1/2] 01_first.ipynb" in proc.stdout and "[2/2] 03_third.ipynb" in proc.stdout
    with pytest.raises(SystemExit, match="no notebook numbered 07"):
        ln.cli.find_notebooks("07", notebooks)
