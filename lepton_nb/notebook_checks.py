"""Checks on notebooks as files: what an executed notebook displays, and what a committed one holds.

Used by the main job (``python -m lepton_nb run`` fails a notebook whose figure cell shows only
text), by ``python -m lepton_nb sync-notebooks`` and by the tests, on notebooks read with
``nbformat``.

A committed notebook has no outputs and no execution counts, and its one code cell tagged
``colab-setup`` holds exactly the canonical set-up cell, ``notebooks/colab_setup.py``
(:func:`committed_problems`); :func:`sync_notebooks` rewrites the notebooks into that form.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["COLAB_SETUP", "COLAB_TAG", "FIGURE_REPR", "colab_setup_source", "committed_problems", "figure_problems",
           "image_count", "sync_notebook", "sync_notebooks"]

#: The canonical Colab set-up cell, plain Python, and the tag of the cell that carries it.
COLAB_SETUP = Path(__file__).resolve().parent.parent / "notebooks" / "colab_setup.py"
COLAB_TAG = "colab-setup"

#: The text of a figure's output: matplotlib's repr (what IPython falls back to for a figure it cannot
#: display as an image) or :class:`lepton_nb.plotting.Figure`'s (stored beside its PNG).
FIGURE_REPR = re.compile(r"^<((matplotlib\.figure\.)?Figure size \d+(\.\d+)?x\d+(\.\d+)? with \d+ Axes|figure: [^>]*)>")


def _code_cells(nb):
    return [c for c in nb["cells"] if c.get("cell_type") == "code"]


def _text(output: dict) -> str:
    data = output.get("data", {})
    text = data.get("text/plain", output.get("text", ""))
    return "".join(text) if isinstance(text, list) else str(text)


def figure_problems(nb) -> list[str]:
    """Cells that show a figure only as its text repr (``<Figure size 1000x360 with 2 Axes>``).

    An output whose text is a figure's repr must carry an ``image/png`` (or ``image/svg+xml``) in
    the same output, as IPython's display protocol gives it when the figure can draw itself.

    Returns:
        One line per offending output, naming the code cell (1-based) and its first source line;
        empty when every figure displays as an image.
    """
    problems = []
    for index, cell in enumerate(_code_cells(nb), 1):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if FIGURE_REPR.match(_text(output).strip()) and not ({"image/png", "image/svg+xml"} & set(data)):
                first = ("".join(cell.get("source", "")).splitlines() or [""])[0]
                problems.append(f"code cell {index} ({first!r}) shows a figure as text, not as an image")
    return problems


def image_count(nb) -> int:
    """Outputs of the notebook that carry an image (PNG or SVG)."""
    return sum(bool({"image/png", "image/svg+xml"} & set(o.get("data", {})))
               for c in _code_cells(nb) for o in c.get("outputs", []))


def colab_setup_source(path: Path = COLAB_SETUP) -> str:
    """The canonical set-up cell's source (the file without its final newline)."""
    return Path(path).read_text().rstrip("\n")


def _colab_cells(nb) -> list:
    return [c for c in _code_cells(nb) if COLAB_TAG in c.get("metadata", {}).get("tags", [])]


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def committed_problems(nb, canonical: str) -> list[str]:
    """What keeps ``nb`` from its committed form: a missing, repeated or changed ``colab-setup``
    cell, outputs, execution counts. Empty when there is nothing to fix."""
    problems = []
    colab = _colab_cells(nb)
    if len(colab) != 1:
        problems.append(f"{len(colab)} code cells tagged {COLAB_TAG!r} (want exactly one)")
    elif _source(colab[0]) != canonical:
        problems.append(f"the {COLAB_TAG!r} cell differs from notebooks/colab_setup.py")
    for index, cell in enumerate(_code_cells(nb), 1):
        if cell.get("outputs"):
            problems.append(f"code cell {index} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"code cell {index} has an execution count")
    return problems


def sync_notebook(nb, canonical: str) -> bool:
    """Put ``nb`` in its committed form in place: the ``colab-setup`` cell set to ``canonical``,
    outputs and execution counts cleared. Returns whether anything changed.

    Raises:
        ValueError: when the notebook has no cell tagged ``colab-setup`` or more than one (tag the
            set-up cell by hand first: which cell it is is not guessed).
    """
    colab = _colab_cells(nb)
    if len(colab) != 1:
        raise ValueError(f"{len(colab)} code cells tagged {COLAB_TAG!r}: tag exactly one (the set-up cell)")
    changed = _source(colab[0]) != canonical
    colab[0]["source"] = canonical
    for cell in _code_cells(nb):
        changed |= bool(cell.get("outputs")) or cell.get("execution_count") is not None
        cell["outputs"] = []
        cell["execution_count"] = None
    return changed


def sync_notebooks(folder: Path, *, check: bool = False, source: Path = COLAB_SETUP) -> dict[Path, list[str]]:
    """Every numbered notebook in ``folder`` with what kept it from its committed form.

    With ``check=False`` the notebooks that differ are rewritten (:func:`sync_notebook`); with
    ``check=True`` nothing is written. Returns ``{path: problems}`` for the notebooks that differed.
    """
    import nbformat

    canonical = colab_setup_source(source)
    found = {}
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        problems = committed_problems(nb, canonical)
        if problems:
            found[path] = problems
            if not check:
                try:
                    sync_notebook(nb, canonical)
                except ValueError as err:
                    raise ValueError(f"{path.name}: {err}") from None
                nbformat.write(nb, path)
    return found
