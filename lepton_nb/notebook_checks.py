"""Checks on notebooks as files: what an executed notebook displays, and what a committed one holds.

Used by the main job (``python -m lepton_nb run`` fails a notebook whose figure cell shows only
text) and by the tests, on notebooks read with ``nbformat``.
"""

from __future__ import annotations

import re

__all__ = ["FIGURE_REPR", "figure_problems", "image_count"]

#: The text IPython falls back to for a matplotlib figure it cannot display as an image.
FIGURE_REPR = re.compile(r"^<(matplotlib\.figure\.)?Figure size \d+(\.\d+)?x\d+(\.\d+)? with \d+ Axes>")


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
