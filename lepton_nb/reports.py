"""reports/summary.json and reports/summary.md: the figures every notebook adds to the main job.

Notebooks call :func:`record` with their key figures (one section each, e.g.
``"01_data_and_baselines"``); the main job renders :func:`write_markdown` after each notebook. The
JSON is updated by read-merge-write through a temporary file and an atomic rename, so a crash
never leaves it half-written and earlier sections are never lost.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Summary", "Table", "figure_path", "jsonable", "load_summary", "record", "record_models", "reports_dir",
           "table", "write_markdown"]

_REPO = Path(__file__).resolve().parent.parent
MODEL_COLUMNS = (("accuracy", "accuracy %"), ("recall_macro", "macro recall %"), ("f1_macro", "macro F1 %"),
                 ("epsilon", "epsilon"), ("params", "params"), ("epochs", "epochs"),
                 ("train_seconds", "train s"))


def reports_dir() -> Path:
    """``$LEPTON_NB_REPORTS``, else ``reports/`` at the repository root (else in the working dir)."""
    env = os.environ.get("LEPTON_NB_REPORTS")
    root = Path(env) if env else (_REPO / "reports" if (_REPO / "pyproject.toml").exists() else Path("reports"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def figure_path(name: str) -> Path:
    """Where a figure named ``name`` is saved: ``reports/figures/<name>.png``."""
    d = reports_dir() / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}.png"


def jsonable(value: Any) -> Any:
    """JSON-safe copy: dataclasses to dicts, arrays to lists, numpy scalars to Python, paths to str."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def load_summary(path: Path | None = None) -> dict:
    """The current summary (empty structure when none was written yet)."""
    path = path or reports_dir() / "summary.json"
    if path.exists():
        return json.loads(path.read_text())
    return {"sections": {}}


def record(section: str, values: dict, *, path: Path | None = None) -> Path:
    """Merge ``values`` into ``summary.json`` under ``section`` (nested dicts merge; others replace).

    A section last recorded in another mode (smoke, default, full) starts afresh: its figures
    never mix with those of another mode.
    """
    from lepton_nb.settings import mode

    path = path or reports_dir() / "summary.json"
    summary = load_summary(path)
    current = mode()
    if summary.get("modes", {}).get(section, current) != current:
        summary.get("sections", {}).pop(section, None)

    def merge(dst: dict, src: dict) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                merge(dst[k], v)
            else:
                dst[k] = v

    merge(summary.setdefault("sections", {}).setdefault(section, {}), jsonable(values))
    summary["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    summary.setdefault("modes", {})[section] = current
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=False))
    os.replace(tmp, path)
    return path


def record_models(section: str, results: dict[str, dict], **more) -> Path:
    """Record ``{model name: figures}`` (e.g. :meth:`TrainResult.summary`) under ``section/models``."""
    return record(section, {"models": results, **more})


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float):
        if v != 0 and abs(v) < 0.01:  # e.g. a DP delta of 1e-05
            return f"{v:.2g}"
        return f"{v:,.2f}" if abs(v) < 1e6 else f"{v:.3g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _models_table(models: dict[str, dict], first: str | None = "model") -> list[str]:
    """Markdown lines of a table, one row per model; ``first=None`` leaves out the name column."""
    known = dict(MODEL_COLUMNS)
    keys = list(dict.fromkeys(k for m in models.values() for k in m))
    cols = [(k, t) for k, t in MODEL_COLUMNS if k in keys] + [(k, k) for k in keys if k not in known]
    named = first is not None
    lines = ["| " + " | ".join(([first] if named else []) + [t for _, t in cols]) + " |",
             "|---" * (len(cols) + named) + "|"]
    for name, figures in models.items():
        lines.append("| " + " | ".join(([name] if named else []) + [_fmt(figures.get(k, "")) for k, _ in cols]) + " |")
    return lines


class Summary(dict):
    """The figures of one run (a plain dict) that a notebook shows as a one-row table.

    What :meth:`TrainResult.summary` and the other ``summary()`` methods return: still a dict for
    code and for :func:`record`, rendered like the tables of ``summary.md`` (two decimals, small
    values such as a delta in scientific form) when it is the last expression of a cell.
    """

    def _repr_markdown_(self) -> str:
        return "\n".join(_models_table({"": self}, first=None))


class Table(dict):
    """``{row name: {column: value}}`` shown as a table in notebooks (see :func:`table`)."""

    first = ""

    def _repr_markdown_(self) -> str:
        return "\n".join(_models_table(self, first=self.first))


def table(rows: dict[str, dict], *, first: str = "") -> Table:
    """``rows`` (e.g. ``{name: result.summary()}``) as a :class:`Table`; ``first`` heads the name column."""
    out = Table({str(k): dict(v) for k, v in rows.items()})
    out.first = first
    return out


def write_markdown(path: Path | None = None) -> Path:
    """Render summary.json as summary.md: one section per notebook, a table of its models."""
    summary = load_summary(path)
    out = (path or reports_dir() / "summary.json").with_suffix(".md")
    lines = ["# lepton_nb summary", "", f"Updated {summary.get('updated', 'never')}.", ""]
    for section, body in summary.get("sections", {}).items():
        lines += [f"## {section} ({summary.get('modes', {}).get(section, '?')} mode)", ""]
        if "models" in body:
            lines += _models_table(body["models"]) + [""]
        for key, value in body.items():
            if key == "models":
                continue
            if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                lines += [f"**{key}**", ""] + _models_table(value, first=key) + [""]
            elif isinstance(value, (dict, list)):
                lines.append(f"- {key}: `{json.dumps(value)}`")
            else:
                lines.append(f"- {key}: {_fmt(value)}")
        lines.append("")
    out.write_text("\n".join(lines))
    return out
