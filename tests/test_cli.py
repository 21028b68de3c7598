"""The main job: notebooks run in order into reports/, a failure names notebook and cell."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import lepton_nb as ln
from lepton_nb.notebook_checks import colab_setup_source


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


def _run(notebooks, reports, *args):
    return subprocess.run([sys.executable, "-m", "lepton_nb", "run", "--notebook-dir", str(notebooks),
                           "--reports", str(reports), *args], capture_output=True, text=True, timeout=300)


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
