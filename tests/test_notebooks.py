"""Every numbered notebook, executed in smoke mode as the main job executes it, shows its figures.

The notebooks run through :func:`lepton_nb.cli.execute_notebook` (the executor of ``make run``),
each in a fresh kernel with ``LEPTON_NB_SMOKE=1``; the executed copy is then read back and every
output that is a figure must carry an image, not only the text ``<Figure size ...>``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from lepton_nb.cli import execute_notebook, find_notebooks
from lepton_nb.notebook_checks import FIGURE_REPR, figure_problems, image_count

NOTEBOOKS = find_notebooks()


def _figure_outputs(nb) -> int:
    return sum(bool(FIGURE_REPR.match("".join(o.get("data", {}).get("text/plain", "")).strip()))
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode_and_displays_its_figures(path: Path, tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_NB_SMOKE", "1")
    monkeypatch.delenv("LEPTON_NB_FULL", raising=False)
    execute_notebook(path, tmp_path, timeout=900)  # raises naming the cell on an error or a text-only figure
    nb = nbformat.read(tmp_path / path.name, as_version=4)
    assert figure_problems(nb) == []
    figures = _figure_outputs(nb)
    assert figures >= 1, f"{path.name} returned no figure at all"
    assert image_count(nb) >= figures
    assert (tmp_path / path.with_suffix(".html").name).read_text().count("data:image/png;base64") >= figures
