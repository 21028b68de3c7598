"""figure_problems() catches a figure shown as text, and lepton_nb's figures display as images."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from lepton_nb.cli import execute_notebook
from lepton_nb.notebook_checks import figure_problems, image_count


def _execute(tmp_path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "src" / "01_figures.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    try:
        execute_notebook(path, tmp_path / "out", timeout=120)
        error = None
    except RuntimeError as err:
        error = str(err)
    return nbformat.read(tmp_path / "out" / path.name, as_version=4), error


def test_a_plain_matplotlib_figure_is_caught_as_text_only(tmp_path):
    """The control: a Figure built without pyplot, as lepton_nb's figures were, displays as text."""
    nb, error = _execute(tmp_path, "from matplotlib.figure import Figure\nfig = Figure()\nfig.subplots().plot([1, 2])\nfig")
    assert image_count(nb) == 0
    assert figure_problems(nb) == ["code cell 1 ('from matplotlib.figure import Figure') shows a figure as text, "
                                   "not as an image"]
    assert error is not None and "shows a figure as text" in error  # the main job fails such a notebook


def test_lepton_nb_figures_display_as_png_without_pyplot(tmp_path):
    nb, error = _execute(tmp_path, "import sys, lepton_nb as ln\n"
                                   "fig = ln.plotting.training_curves({'m': {'loss': [1.0, 0.5], 'accuracy': [0.5, 0.8]}})\n"
                                   "assert 'matplotlib.pyplot' not in sys.modules\nfig")
    assert error is None
    assert figure_problems(nb) == [] and image_count(nb) == 1
    png = nb.cells[0].outputs[0]["data"]["image/png"]
    assert len(png) > 1000  # base64 of a real image


def test_summaries_display_as_tables(tmp_path):
    nb, error = _execute(tmp_path, "import lepton_nb as ln\nln.reports.Summary({'epsilon': 2.994754151640405, 'delta': 1e-5})",
                         "ln.reports.table({'a': {'accuracy': 86.2}, 'b': {'accuracy': 79.5}}, first='model')")
    assert error is None
    assert nb.cells[0].outputs[0]["data"]["text/markdown"] == "| epsilon | delta |\n|---|---|\n| 2.99 | 1e-05 |"
    assert "| model | accuracy % |" in nb.cells[1].outputs[0]["data"]["text/markdown"]
