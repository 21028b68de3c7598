"""figure_problems() catches a figure shown as text, lepton_nb's figures display as images, and every
committed notebook holds the one canonical Colab set-up cell and no outputs."""

from __future__ import annotations

import builtins
import types

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lepton_nb.cli import execute_notebook
from lepton_nb.notebook_checks import (COLAB_SETUP, colab_setup_source, committed_problems, figure_problems,
                                       image_count, sync_notebook)


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
    # the text stored beside the image names the figure (viewers without images show it)
    assert nb.cells[0].outputs[0]["data"]["text/plain"] == "<figure: loss | accuracy>"


def test_summaries_display_as_tables(tmp_path):
    nb, error = _execute(tmp_path, "import lepton_nb as ln\nln.reports.Summary({'epsilon': 2.994754151640405, 'delta': 1e-5})",
                         "ln.reports.table({'a': {'accuracy': 86.2}, 'b': {'accuracy': 79.5}}, first='model')")
    assert error is None
    assert nb.cells[0].outputs[0]["data"]["text/markdown"] == "| epsilon | delta |\n|---|---|\n| 2.99 | 1e-05 |"
    assert "| model | accuracy % |" in nb.cells[1].outputs[0]["data"]["text/markdown"]


# --- committed notebooks and the one Colab set-up cell ---------------------------------------------

NOTEBOOK_DIR = COLAB_SETUP.parent
COMMITTED = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_there_are_six_numbered_notebooks():
    assert [p.name[:2] for p in COMMITTED] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_notebook_has_the_canonical_colab_cell_and_no_outputs(path):
    """Fix with `python -m lepton_nb sync-notebooks` (which rewrites exactly what this lists)."""
    nb = nbformat.read(path, as_version=4)
    assert committed_problems(nb, colab_setup_source()) == []


def test_committed_problems_lists_every_defect():
    good = new_notebook(cells=[new_code_cell(colab_setup_source(), metadata={"tags": ["colab-setup"]}),
                               new_code_cell("x = 1")])
    assert committed_problems(good, colab_setup_source()) == []
    bad = new_notebook(cells=[new_code_cell("import sys", metadata={"tags": ["colab-setup"]}),
                              new_code_cell("x = 1", execution_count=1,
                                            outputs=[nbformat.v4.new_output("stream", text="1")])])
    assert committed_problems(bad, colab_setup_source()) == [
        "the 'colab-setup' cell differs from notebooks/colab_setup.py", "code cell 2 has outputs",
        "code cell 2 has an execution count"]
    untagged = new_notebook(cells=[new_code_cell(colab_setup_source())])
    assert committed_problems(untagged, colab_setup_source()) == ["0 code cells tagged 'colab-setup' (want exactly one)"]
    with pytest.raises(ValueError, match="tag exactly one"):
        sync_notebook(untagged, colab_setup_source())


class _Recorder:
    """Stand-ins for ``os`` and ``subprocess`` that record what the set-up cell asks of them."""

    def __init__(self, existing=()):
        self.calls, self.existing = [], set(existing)
        self.path = types.SimpleNamespace(isdir=lambda p: p in self.existing)

    def run(self, cmd, **kwargs):
        self.calls.append(("run", cmd, kwargs))

    def chdir(self, path):
        self.calls.append(("chdir", path))


def _run_cell(version, *, on_colab=True, existing=()):
    """Execute the canonical cell with a fake ``sys`` (Python ``version``, Colab or not), ``os`` and
    ``subprocess``; returns the recorder and the fake sys."""
    rec = _Recorder(existing)
    fake_sys = types.SimpleNamespace(modules={"google.colab": object()} if on_colab else {},
                                     version_info=_Version(*version),
                                     executable="/usr/bin/python3", path=[])
    fakes = {"sys": fake_sys, "os": rec, "subprocess": rec}
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        return fakes[name] if name in fakes else real_import(name, *args, **kwargs)

    exec(compile(colab_setup_source(), "colab_setup.py", "exec"),
         {"__builtins__": {**vars(builtins), "__import__": fake_import}})
    return rec, fake_sys


class _Version(tuple):
    def __new__(cls, major, minor):
        self = super().__new__(cls, (major, minor, 0, "final", 0))
        self.major, self.minor = major, minor
        return self


def test_colab_cell_does_nothing_outside_colab():
    rec, fake_sys = _run_cell((3, 12), on_colab=False)
    assert rec.calls == [] and fake_sys.path == []


@pytest.mark.parametrize("version", [(3, 12), (3, 13), (3, 10)])
def test_colab_cell_stops_at_once_on_another_python_and_says_how_to_pin_3_11(version):
    with pytest.raises(RuntimeError) as err:
        _run_cell(version)
    text = str(err.value)
    assert f"Python {version[0]}.{version[1]}" in text
    for needed in ("command palette", "Change runtime version", "2025.07", "Python 3.11", "new session", "make lab"):
        assert needed in text, needed


def test_colab_cell_on_python_3_11_clones_installs_the_lock_without_deps_and_enters_notebooks():
    rec, fake_sys = _run_cell((3, 11))
    runs = [c[1] for c in rec.calls if c[0] == "run"]
    assert runs[0][:2] == ["git", "clone"] and "https://github.com/lepton-nb/lepton_nb.git" in runs[0]
    assert runs[1] == ["/usr/bin/python3", "-m", "pip", "install", "-q", "--no-deps", "-r",
                       "/content/lepton_nb/requirements/lock.txt"]
    assert runs[2] == ["/usr/bin/python3", "-m", "pip", "install", "-q", "--no-deps", "-e", "/content/lepton_nb"]
    assert all(c[2].get("check") for c in rec.calls if c[0] == "run")  # a failed step stops the cell
    assert rec.calls[-1] == ("chdir", "/content/lepton_nb/notebooks") and fake_sys.path == ["/content/lepton_nb"]
    rec, _ = _run_cell((3, 11), existing={"/content/lepton_nb"})  # already cloned: no second clone
    assert [c[1][:2] for c in rec.calls if c[0] == "run"][0] != ["git", "clone"]


def test_a_lepton_nb_figure_shown_only_as_text_is_caught_too():
    nb = {"cells": [{"cell_type": "code", "source": "fig", "outputs": [
        {"output_type": "execute_result", "data": {"text/plain": "<figure: loss | accuracy>"}}]}]}
    assert figure_problems(nb) == ["code cell 1 ('fig') shows a figure as text, not as an image"]
