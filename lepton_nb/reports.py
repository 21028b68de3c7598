"""reports/summary.json and reports/summary.md: the figures every notebook adds to the main job.

Notebooks call :func:`record` with their figures (one section each, e.g.
``"01_data_and_baselines"``), and may name their key figures in a flat ``headline``; the main job
renders :func:`write_markdown` after each notebook, and ``python -m lepton_nb results`` turns the
headlines (and the benchmarks' ratios) into the README's results table (:func:`results_table`).

summary.json keeps one part per mode, so that a default-mode and a full-mode run accumulate in one
file instead of overwriting each other::

    {"updated": "2026-12-02T12:41:21+00:00",
     "modes": {"default": {"sections": {"03_differential_privacy": {"headline": {...}, "models": {...}}},
                           "runs": {"03_differential_privacy": {"recorded": "2026-12-02T12:41:21+00:00",
                                                                "command": "make run NOTEBOOKS=03",
                                                                "commit": "3d471e8", "dirty": false}}},
               "full": {...}}}

The JSON is updated by read-merge-write through a temporary file and an atomic rename, so a crash
never leaves it half-written and earlier sections are never lost. An unreadable summary.json (not
JSON, not UTF-8, another structure) never costs a run: :func:`record` moves it aside with a warning
and starts a fresh one (:mod:`lepton_nb.summary_file`). A summary.json in the earlier flat format
(top-level ``"sections"`` and ``"modes": {section: mode}``) is converted on read.

(A little over 400 lines: recording, summary.md and the results table share the format and the
number formatting; the file handling itself lives in :mod:`lepton_nb.summary_file`.)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from lepton_nb import summary_file

__all__ = ["RESULTS_BEGIN", "RESULTS_END", "Summary", "Table", "figure_path", "jsonable", "load_summary",
           "merge_results_rows", "plain_text", "provenance", "record", "record_models", "replace_results_block",
           "reports_dir", "results_block", "results_rows", "results_table", "run_command", "section", "table",
           "write_markdown"]

_REPO = Path(__file__).resolve().parent.parent
MODEL_COLUMNS = (("accuracy", "accuracy %"), ("recall_macro", "macro recall %"), ("f1_macro", "macro F1 %"),
                 ("epsilon", "epsilon"), ("params", "params"), ("epochs", "epochs"),
                 ("train_seconds", "train s"))
#: Order in which modes are listed; any other mode follows in alphabetical order.
MODE_ORDER = ("default", "full", "smoke")
_MAKE_FLAG = {"full": " FULL=1", "smoke": " SMOKE=1"}
#: The README block that ``python -m lepton_nb results --write README.md`` replaces.
RESULTS_BEGIN, RESULTS_END = "<!-- results:begin -->", "<!-- results:end -->"


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


def _ordered_modes(modes) -> list[str]:
    return [m for m in MODE_ORDER if m in modes] + sorted(m for m in modes if m not in MODE_ORDER)


def run_command(mode: str, notebooks: str | None = None) -> str:
    """The ``make`` command that runs ``notebooks`` (e.g. ``"03"`` or ``"01,03"``; all when ``None``)
    in ``mode``: ``make run NOTEBOOKS=03 FULL=1``."""
    return "make run" + (f" NOTEBOOKS={notebooks}" if notebooks else "") + _MAKE_FLAG.get(mode, "")


def _section_command(section: str, mode: str) -> str:
    """:func:`run_command` of a numbered section (``"03_..."`` -> ``NOTEBOOKS=03``); all notebooks otherwise."""
    return run_command(mode, section[:2] if section[:2].isdigit() else None)


def provenance() -> dict:
    """``{"commit": short hash or None, "dirty": bool}`` of the repository this package runs from.

    ``dirty`` is true when tracked files differ from the commit or untracked files exist (outside
    ``.gitignore``). Outside a git checkout (an installed wheel) or without git: ``None`` / false.
    """
    if not ((_REPO / ".git").exists() and (_REPO / "pyproject.toml").exists()):
        return {"commit": None, "dirty": False}
    try:
        git = ["git", "-C", str(_REPO)]
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        status = subprocess.run(git + ["status", "--porcelain"], capture_output=True, text=True,
                                timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": False}
    return {"commit": commit or None, "dirty": bool(status.strip())}


def _converted(old: dict) -> dict:
    """The flat format (``sections`` + ``modes: {section: mode}``) as one part per mode.

    Runs are not known for converted sections: their ``recorded`` and ``commit`` are ``None``.
    """
    new: dict = {"updated": old.get("updated"), "modes": {}}
    for name, body in old.get("sections", {}).items():
        mode = old.get("modes", {}).get(name, "unknown")
        part = new["modes"].setdefault(mode, {"sections": {}, "runs": {}})
        part["sections"][name] = body
        part["runs"][name] = {"recorded": None, "command": _section_command(name, mode), "commit": None, "dirty": None}
    return new


def load_summary(path: Path | None = None, *, set_aside_unreadable: bool = False) -> dict:
    """The current summary, ``{"updated": ..., "modes": {mode: {"sections": ..., "runs": ...}}}``
    (``{"modes": {}}`` when none was written yet; the earlier flat format converted).

    Args:
        path: the summary file (default: ``reports/summary.json``).
        set_aside_unreadable: move an unreadable file aside with a ``SummaryWarning`` and return an
            empty summary, as :func:`record` does so that no run is lost to a damaged file.

    Raises:
        lepton_nb.summary_file.SummaryError: the file is unreadable (named, with the fix).
    """
    path = path or reports_dir() / "summary.json"
    summary = summary_file.read_or_set_aside(path)[0] if set_aside_unreadable else summary_file.read(path)
    if summary is None:
        return {"modes": {}}
    if "sections" in summary:
        return _converted(summary)
    summary.setdefault("modes", {})
    return summary


def section(name: str, *, mode: str | None = None, path: Path | None = None) -> dict:
    """The figures recorded under section ``name`` in ``mode`` (default: the current mode); ``{}`` if none."""
    from lepton_nb.settings import mode as current_mode

    part = load_summary(path, set_aside_unreadable=True)["modes"].get(mode or current_mode(), {})
    return part.get("sections", {}).get(name, {})


def record(section: str, values: dict, *, headline: dict[str, float] | None = None, command: str | None = None,
           path: Path | None = None) -> Path:
    """Merge ``values`` into ``summary.json`` under the current mode's ``section``.

    Nested dicts merge and other values replace, so a notebook may record in several calls. The
    section's run (date-time, command, commit and whether the checkout had changes) is replaced
    on every call; so is its headline. An unreadable summary file is moved aside with a
    :class:`~lepton_nb.summary_file.SummaryWarning` naming it, and the figures go into a fresh one.

    Args:
        section: e.g. ``"03_differential_privacy"``.
        values: the figures (dataclasses, arrays and numpy scalars are converted).
        headline: the notebook's key figures as a flat ``{label: number}``, e.g.
            ``{"DP-SGD test accuracy % (epsilon 2.99, delta 1e-5)": 79.5}``; each becomes a row of
            the README's results table. A label says what the number is and under which settings.
        command: the command that reproduces the section (default: ``make run NOTEBOOKS=<its number>``
            with the mode's flag, see :func:`run_command`).
        path: the summary file (default: ``reports/summary.json``).
    """
    from lepton_nb.settings import mode

    path = path or reports_dir() / "summary.json"
    summary = load_summary(path, set_aside_unreadable=True)
    current = mode()
    if headline is not None:
        bad = {k: v for k, v in headline.items()
               if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))}
        if bad:
            raise TypeError(f"headline of {section!r} must map labels to numbers; not numbers: {bad}")

    def merge(dst: dict, src: dict) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                merge(dst[k], v)
            else:
                dst[k] = v

    part = summary["modes"].setdefault(current, {})
    body = part.setdefault("sections", {}).setdefault(section, {})
    merge(body, jsonable(values))
    if headline is not None:
        body["headline"] = jsonable(dict(headline))
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    part.setdefault("runs", {})[section] = {"recorded": now, "command": command or _section_command(section, current),
                                            **provenance()}
    summary["updated"] = now
    return summary_file.write_atomic(path, json.dumps(summary, indent=2))


def record_models(section: str, results: dict[str, dict], *, headline: dict[str, float] | None = None,
                  **more) -> Path:
    """Record ``{model name: figures}`` (e.g. :meth:`TrainResult.summary`) under ``section/models``."""
    return record(section, {"models": results, **more}, headline=headline)


_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])|[\x00-\x08\x0b-\x1f\x7f]")


def plain_text(text: str) -> str:
    """``text`` without terminal escape sequences (ANSI colours, OSC links) or other control
    characters (newlines and tabs kept): what IPython's coloured tracebacks become in a log line."""
    return _ESCAPES.sub("", text)


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float):
        if v != 0 and abs(v) < 0.1:  # two significant digits: a DP delta of 1e-05, a time ratio of 0.017
            return f"{v:.2g}"
        return f"{v:,.2f}" if abs(v) < 1e6 else f"{v:.3g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return plain_text(str(v))


def _cell(v: Any) -> str:
    """``_fmt`` made safe inside a Markdown table cell."""
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def _models_table(models: dict[str, dict], first: str | None = "model") -> list[str]:
    """Markdown lines of a table, one row per model; ``first=None`` leaves out the name column."""
    known = dict(MODEL_COLUMNS)
    keys = list(dict.fromkeys(k for m in models.values() for k in m))
    cols = [(k, t) for k, t in MODEL_COLUMNS if k in keys] + [(k, k) for k in keys if k not in known]
    named = first is not None
    lines = ["| " + " | ".join(([first] if named else []) + [t for _, t in cols]) + " |",
             "|---" * (len(cols) + named) + "|"]
    for name, figures in models.items():
        lines.append("| " + " | ".join(([_cell(name)] if named else []) + [_cell(figures.get(k, "")) for k, _ in cols])
                     + " |")
    return lines


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested dicts as one level, keys joined by a space (``{"threshold": {"auc": x}}`` -> ``"threshold auc"``)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k} "))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _pairs_table(pairs: dict, first: str, second: str = "value") -> list[str]:
    return [f"| {first} | {second} |", "|---|---|"] + [f"| {_cell(k)} | {_cell(v)} |" for k, v in pairs.items()]


def _render(key: str, value: Any, first: str | None = None) -> list[str]:
    """One recorded value as Markdown: a table for a dict of dicts, a dict of scalars or a list of
    dicts (nested dicts flattened into columns), inline for a scalar or a list of scalars."""
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        table_lines = _models_table({k: _flat(v) for k, v in value.items()}, first=first or key)
    elif isinstance(value, dict) and value:
        table_lines = _pairs_table(_flat(value), key)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        table_lines = _models_table({str(i): _flat(v) for i, v in enumerate(value, 1)}, first=None)
    else:
        return [f"- {key}: {_fmt(value)}"]
    return ["", f"**{key}**", ""] + table_lines + [""]


def _run_line(run: dict) -> str:
    if not run:
        return "Run not recorded."
    when = run.get("recorded") or "at an unrecorded time"
    commit = run.get("commit")
    at = f"commit `{commit}`" + (" with uncommitted changes" if run.get("dirty") else "") if commit else "no commit recorded"
    return f"Recorded {when} by `{run.get('command', '?')}`, {at}."


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
    """Render summary.json as summary.md: every mode, a section per notebook with its run (date,
    command, commit), its headline, its models and every other value as a table or inline."""
    path = path or reports_dir() / "summary.json"
    summary = load_summary(path, set_aside_unreadable=True)
    out = path.with_suffix(".md")
    lines = ["# lepton_nb summary", "", f"Updated {summary.get('updated') or 'never'}. Each section holds the "
             "figures of the last run of that notebook in that mode.", ""]
    for mode in _ordered_modes(summary["modes"]):
        part = summary["modes"][mode]
        lines += [f"## {mode} mode", ""]
        for name, body in part.get("sections", {}).items():
            lines += [f"### {name} ({mode} mode)", "", _run_line(part.get("runs", {}).get(name, {})), ""]
            if body.get("headline"):
                lines += ["**headline**", ""] + _pairs_table(body["headline"], "figure") + [""]
            if "models" in body:
                lines += _render("models", body["models"], first="model")
            for key, value in body.items():
                if key not in ("headline", "models"):
                    lines += _render(key, value)
            lines.append("")
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip("\n") + "\n"
    return summary_file.write_atomic(out, text)


def _bench_rows(root: Path) -> list[dict]:
    """One row per ratio of every ``bench/*.json``, with the script that reproduces it."""
    rows = []
    for p in sorted((root / "bench").glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        name = data.get("name", p.stem)
        full = bool(data.get("config", {}).get("full"))
        script, flags = _BENCH_SCRIPTS.get(name, (f"bench_{name}.py", ""))
        command = data.get("command") or f"python benchmarks/{script}{flags}" + (" --full" if full else "")
        when = data.get("recorded") or _dt.datetime.fromtimestamp(p.stat().st_mtime, _dt.timezone.utc).isoformat()
        for key, value in data.get("ratios", {}).items():
            rows.append({"notebook": f"bench_{name}", "figure": f"{key} (time ratio)", "value": value,
                         "mode": "full" if full else "default", "measured": when[:10], "command": command})
    return rows


#: Benchmark outputs not named after their script: name -> (script, flags).
_BENCH_SCRIPTS = {"federated_overhead": ("bench_federated.py", " --overhead-only")}


def results_rows(root: Path | None = None) -> list[dict]:
    """Every headline figure of every section and mode in ``root/summary.json``, then every ratio of
    ``root/bench/*.json``: dicts with notebook, figure, value, mode, measured (date) and command."""
    root = Path(root) if root is not None else reports_dir()
    summary = load_summary(root / "summary.json")
    rows = []
    for mode in _ordered_modes(summary["modes"]):
        part = summary["modes"][mode]
        for name in sorted(part.get("sections", {})):
            run = part.get("runs", {}).get(name, {})
            for label, value in (part["sections"][name].get("headline") or {}).items():
                rows.append({"notebook": name, "figure": label, "value": value, "mode": mode,
                             "measured": (run.get("recorded") or "unknown")[:10],
                             "command": run.get("command") or _section_command(name, mode)})
    return rows + _bench_rows(root)


def results_table(rows: list[dict]) -> str:
    """``rows`` of :func:`results_rows` as a Markdown table (a header alone when there are none)."""
    lines = ["| notebook | figure | value | mode | measured | command to reproduce |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_cell(r['notebook'])} | {_cell(r['figure'])} | {_cell(r['value'])} | {r['mode']} | "
                     f"{r['measured']} | `{r['command']}` |")
    return "\n".join(lines)


def _block_rows(block: str) -> list[dict]:
    """The rows of a results table written by :func:`results_table` (values kept as written)."""
    rows = []
    for line in block.splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) != 6 or cells[0] == "notebook" or set(cells[0]) <= {"-"}:
            continue
        rows.append(dict(zip(("notebook", "figure", "value", "mode", "measured"), cells),
                         command=cells[5].strip("`")))
    return rows


def merge_results_rows(rows: list[dict], old_block: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """``rows`` (from :func:`results_rows`) and the rows of ``old_block``'s table for every notebook or
    benchmark and mode that ``rows`` lacks: a checkout whose ``reports/`` holds only some runs (a new
    machine, one notebook re-run) keeps the other recorded figures with their dates and commands.

    Returns:
        the merged rows (summary rows by mode and notebook, then benchmark rows) and the
        (notebook, mode) pairs kept from ``old_block``.
    """
    have = {(r["notebook"], r["mode"]) for r in rows}
    kept = [r for r in _block_rows(old_block) if (r["notebook"], r["mode"]) not in have]
    rank = {m: i for i, m in enumerate(MODE_ORDER)}

    def key(r: dict) -> tuple:
        bench = r["notebook"].startswith("bench_")
        return (bench, 0 if bench else rank.get(r["mode"], len(rank)), r["notebook"])

    return sorted(rows + kept, key=key), list(dict.fromkeys((r["notebook"], r["mode"]) for r in kept))


def _split_at_results_block(text: str) -> tuple[str, str, str]:
    """``(before, block, after)`` around the :data:`RESULTS_BEGIN` / :data:`RESULTS_END` markers.

    Raises:
        ValueError: when the markers are missing, repeated or out of order.
    """
    begin, end = text.count(RESULTS_BEGIN), text.count(RESULTS_END)
    if begin != 1 or end != 1 or text.index(RESULTS_BEGIN) > text.index(RESULTS_END):
        raise ValueError(f"expected one {RESULTS_BEGIN} followed by one {RESULTS_END} "
                         f"(found {begin} and {end})")
    head, rest = text.split(RESULTS_BEGIN)
    block, tail = rest.split(RESULTS_END)
    return head, block, tail


def results_block(text: str) -> str:
    """What lies between :data:`RESULTS_BEGIN` and :data:`RESULTS_END` in ``text`` (ValueError as
    :func:`replace_results_block` when the markers are not one pair in order)."""
    return _split_at_results_block(text)[1]


def replace_results_block(text: str, block: str) -> str:
    """``text`` with what lies between :data:`RESULTS_BEGIN` and :data:`RESULTS_END` replaced by ``block``.

    Raises:
        ValueError: when the markers are missing, repeated or out of order.
    """
    head, _, tail = _split_at_results_block(text)
    return f"{head}{RESULTS_BEGIN}\n{block.strip()}\n{RESULTS_END}{tail}"

