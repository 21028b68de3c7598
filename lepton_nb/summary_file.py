"""``reports/summary.json`` as a file: strict reading, an unreadable file set aside, atomic writes.

A damaged summary must never cost a run: :func:`read_or_set_aside` (used by the main job when it
starts and before each notebook, and by :func:`lepton_nb.reports.record` in the notebook's own
kernel) moves an unreadable file to ``summary.json.unreadable-<UTC time>`` with a warning naming
it, and the run goes on with a fresh summary. Nothing is deleted: the damaged file keeps whatever
it held. :func:`read` is the strict reader, for commands that only read
(``python -m lepton_nb results``): it raises :class:`SummaryError` naming the problem and the fix.

Unreadable means: the file cannot be read, is not UTF-8, is not JSON, or does not have the
structure :mod:`lepton_nb.reports` writes (an object; ``modes`` an object of modes, each an object
whose ``sections`` and ``runs`` are objects of objects; or the earlier flat format, ``sections``
an object of objects). What a section holds is the notebooks' business and is not checked.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

__all__ = ["SummaryError", "SummaryWarning", "problem", "read", "read_or_set_aside", "set_aside", "write_atomic"]


class SummaryError(ValueError):
    """``summary.json`` exists but is unreadable; the message names the file, the problem and the fix."""


class SummaryWarning(UserWarning):
    """An unreadable ``summary.json`` was moved aside and a fresh summary started."""


def _kind(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _objects_of_objects(value, where: str) -> str | None:
    if not isinstance(value, dict):
        return f"{where} is {_kind(value)}, not an object"
    for key, item in value.items():
        if not isinstance(item, dict):
            return f"{where}[{key!r}] is {_kind(item)}, not an object"
    return None


def _structure_problem(summary) -> str | None:
    """What is wrong with the parsed JSON's structure, or ``None`` when it is a summary."""
    if not isinstance(summary, dict):
        return f"the top level is {_kind(summary)}, not an object"
    if "sections" in summary:  # the earlier flat format, converted on read by lepton_nb.reports
        return _objects_of_objects(summary["sections"], "sections")
    modes = summary.get("modes", {})
    if not isinstance(modes, dict):
        return f"modes is {_kind(modes)}, not an object"
    for mode, part in modes.items():
        if not isinstance(part, dict):
            return f"modes[{mode!r}] is {_kind(part)}, not an object"
        for key in ("sections", "runs"):
            found = _objects_of_objects(part.get(key, {}), f"modes[{mode!r}][{key!r}]")
            if found:
                return found
    return None


def _parse(path: Path) -> tuple[dict | None, str | None]:
    """``(summary, None)``, or ``(None, problem)`` when ``path`` is unreadable."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        return None, f"cannot be read ({type(err).__name__}: {err.strerror or err})"
    except UnicodeDecodeError as err:
        return None, f"is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})"
    try:
        summary = json.loads(text)
    except ValueError as err:
        return None, f"is not valid JSON ({err})" if text.strip() else "is empty"
    found = _structure_problem(summary)
    return (None, f"is not a lepton_nb summary ({found})") if found else (summary, None)


def problem(path: Path) -> str | None:
    """Why ``path`` is unreadable (e.g. ``"is not valid JSON (Expecting value: line 1 column 12 ...)"``);
    ``None`` when it reads as a summary or does not exist."""
    return _parse(path)[1] if path.exists() or path.is_symlink() else None


def read(path: Path) -> dict | None:
    """The parsed summary at ``path`` (``None`` when there is none), in whichever format it was written.

    Raises:
        SummaryError: the file is unreadable; the message names it, the problem and the fix.
    """
    if not (path.exists() or path.is_symlink()):
        return None
    summary, found = _parse(path)
    if found:
        raise SummaryError(f"{path} {found}; move it aside (the next 'make run' does so by itself, "
                           f"to {path.name}.unreadable-<time>) or delete it")
    return summary


def set_aside(path: Path) -> Path:
    """Move ``path`` to ``<name>.unreadable-<UTC time>`` in its folder (never over an existing file)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target, n = path.with_name(f"{path.name}.unreadable-{stamp}"), 1
    while target.exists() or target.is_symlink():
        n += 1
        target = path.with_name(f"{path.name}.unreadable-{stamp}-{n}")
    os.replace(path, target)
    return target


def read_or_set_aside(path: Path, *, warn: bool = True) -> tuple[dict | None, str | None]:
    """The summary at ``path``, or ``None`` with a message once an unreadable file was moved aside.

    Args:
        path: the summary file.
        warn: also issue the message as a :class:`SummaryWarning` (what a notebook's kernel shows);
            the main job passes ``False`` and prints it itself.

    Returns:
        ``(summary or None, message or None)``: the message names the problem and where the file went,
        e.g. ``"reports/summary.json is not valid JSON (...); moved it aside to
        reports/summary.json.unreadable-20261202T124121Z and started a fresh summary ..."``.
    """
    if not (path.exists() or path.is_symlink()):
        return None, None
    summary, found = _parse(path)
    if found is None:
        return summary, None
    target = set_aside(path)
    message = (f"{path} {found}; moved it aside to {target} and started a fresh summary "
               "(what the old file held is still in it; the figures of this run are recorded anew)")
    if warn:
        warnings.warn(message, SummaryWarning, stacklevel=_outside_level())
    return None, message


def _outside_level() -> int:
    """The ``stacklevel`` of the first caller outside lepton_nb (e.g. the notebook cell calling ``record``)."""
    package, frame, level = str(Path(__file__).resolve().parent), sys._getframe(1), 1
    while frame.f_back is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic rename,
    so that a reader or a crash never sees a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
