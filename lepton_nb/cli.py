"""``python -m lepton_nb run|bench|results|sync-notebooks``: the main job, the benchmarks, the results table.

``run`` executes the numbered notebooks in order, headless, each in a fresh kernel, writing
``reports/notebooks/<name>.ipynb`` and ``.html``, the figures the notebooks save and
``reports/summary.json`` / ``summary.md``. A failing notebook stops the job with the notebook and
cell named; the reports already written stay.

``results`` prints every headline figure of ``reports/summary.json`` (every section, every mode)
and every benchmark ratio of ``reports/bench/*.json`` as one Markdown table, each row with the
date and mode it was measured in and the command that reproduces it; ``--write README.md``
replaces the README's results block with it.

``sync-notebooks`` puts the committed notebooks in their committed form: the ``colab-setup`` cell
equal to ``notebooks/colab_setup.py``, no outputs, no execution counts (``--check``: only report).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
BENCHMARKS = REPO / "benchmarks"


def find_notebooks(selection: str | None = None, folder: Path = NOTEBOOKS) -> list[Path]:
    """Notebooks ``NN_*.ipynb`` in order; ``selection`` like ``"01,03"`` keeps those numbers."""
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return found
    wanted = {s.strip().zfill(2) for s in selection.split(",") if s.strip()}
    chosen = [p for p in found if p.name[:2] in wanted]
    missing = wanted - {p.name[:2] for p in chosen}
    if missing:
        raise SystemExit(f"error: no notebook numbered {', '.join(sorted(missing))} in {folder} "
                         f"(have {', '.join(p.name[:2] for p in found)})")
    return chosen


def _failed_cell(nb) -> tuple[int, str]:
    """Index and first source line of the first code cell with an error output."""
    code_index = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code_index += 1
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return code_index, (cell.source.splitlines() or [""])[0]
    return -1, ""


def execute_notebook(path: Path, out_dir: Path, *, timeout: int | None) -> float:
    """Execute ``path`` in a fresh kernel, write the executed copy and its HTML; returns seconds.

    Raises:
        RuntimeError: naming the notebook and the failing cell, or the cells that show a figure
            only as text (:func:`lepton_nb.notebook_checks.figure_problems`); the executed copy
            is still written.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    from nbconvert import HTMLExporter

    from lepton_nb.notebook_checks import figure_problems

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    error = None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as err:
        error = err
    finally:
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / path.name)
        try:
            html, _ = HTMLExporter().from_notebook_node(nb)
            (out_dir / path.with_suffix(".html").name).write_text(html)
        except Exception as err:  # noqa: BLE001 - a rendering problem must not hide the result
            print(f"   (HTML export of {path.name} failed: {err})", file=sys.stderr)
    if error is not None:
        idx, first = _failed_cell(nb)
        where = f"code cell {idx} ({first!r})" if idx > 0 else "a cell"
        last = str(error).strip().splitlines()[-1][:300] if str(error).strip() else type(error).__name__
        raise RuntimeError(f"{path.name} failed in {where}: {last}")
    problems = figure_problems(nb)
    if problems:
        raise RuntimeError(f"{path.name}: " + "; ".join(problems))
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> int:
    """The main job."""
    if args.smoke:
        os.environ["LEPTON_NB_SMOKE"] = "1"
        os.environ.pop("LEPTON_NB_FULL", None)
    elif args.full:
        os.environ["LEPTON_NB_FULL"] = "1"
        os.environ.pop("LEPTON_NB_SMOKE", None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hide TF's C++ start-up noise in the kernels
    from lepton_nb import reports
    from lepton_nb.settings import mode

    if args.reports:
        os.environ["LEPTON_NB_REPORTS"] = str(Path(args.reports).resolve())
    out_root = reports.reports_dir()
    os.environ["LEPTON_NB_REPORTS"] = str(out_root.resolve())
    notebooks = find_notebooks(args.notebooks, Path(args.notebook_dir))
    if not notebooks:
        print(f"error: no notebooks in {args.notebook_dir}", file=sys.stderr)
        return 2
    timeout = args.timeout if args.timeout > 0 else None
    job = reports.run_command(mode(), args.notebooks)
    print(f"lepton_nb run: {len(notebooks)} notebook(s), {mode()} mode, reports in {out_root}", flush=True)
    total = time.perf_counter()
    status = 0
    for i, nb_path in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {nb_path.name} ...", end=" ", flush=True)
        try:
            seconds = execute_notebook(nb_path, out_root / "notebooks", timeout=timeout)
        except RuntimeError as err:
            print("FAILED", flush=True)
            print(f"error: {err}\n  partly executed copy: {out_root / 'notebooks' / nb_path.name}; "
                  "reports of the notebooks before it are kept", file=sys.stderr)
            reports.record("main_job", {"notebooks": {nb_path.stem: {"status": "failed", "error": str(err)}}},
                           command=job)
            status = 1
            break
        print(f"done in {seconds:.0f} s", flush=True)
        reports.record("main_job", {"notebooks": {nb_path.stem: {"status": "ok", "seconds": round(seconds, 1)}}},
                       command=job)
        reports.write_markdown()
    reports.record("main_job", {"total_seconds": round(time.perf_counter() - total, 1)}, command=job)
    md = reports.write_markdown()
    print(f"{'stopped' if status else 'finished'} after {time.perf_counter() - total:.0f} s; summary: {md}")
    return status


def bench(args: argparse.Namespace) -> int:
    """Run every ``benchmarks/bench_*.py`` (or those named), each writing reports/bench/<name>.json."""
    scripts = sorted(BENCHMARKS.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if any(o in s.stem for o in args.only.split(","))]
    status = 0
    for s in scripts:
        print(f">> {s.name}", flush=True)
        cmd = [sys.executable, str(s)] + (["--full"] if args.full else [])
        status |= subprocess.call(cmd, cwd=REPO)
    return status


def results(args: argparse.Namespace) -> int:
    """Print the results table; with ``--write FILE`` also replace FILE's results block."""
    from lepton_nb import reports

    root = Path(args.reports) if args.reports else reports.reports_dir()
    rows = reports.results_rows(root)
    body = reports.results_table(rows)
    print(body)
    if not rows:
        print(f"(no headline figures or benchmark ratios in {root})", file=sys.stderr)
    if args.write:
        target = Path(args.write)
        note = "Generated by `python -m lepton_nb results --write README.md` from `reports/`; do not edit by hand."
        try:
            target.write_text(reports.replace_results_block(target.read_text(), f"{note}\n\n{body}"))
        except (OSError, ValueError) as err:
            print(f"error: {target}: {err}", file=sys.stderr)
            return 2
        print(f"wrote {len(rows)} rows into {target}", file=sys.stderr)
    return 0


def sync_notebooks(args: argparse.Namespace) -> int:
    """Rewrite (or with ``--check`` only list) the notebooks that are not in their committed form."""
    from lepton_nb.notebook_checks import sync_notebooks as sync

    try:
        found = sync(Path(args.notebook_dir), check=args.check)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, problems in found.items():
        print(f"{path.name}: {'; '.join(problems)}" + ("" if args.check else " (fixed)"))
    if not found:
        print("every notebook is in its committed form")
    return 1 if args.check and found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lepton_nb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the notebooks headless into reports/")
    g = p_run.add_mutually_exclusive_group()
    g.add_argument("--smoke", action="store_true", help="seconds-long smoke settings (LEPTON_NB_SMOKE=1)")
    g.add_argument("--full", action="store_true", help="full data and training (LEPTON_NB_FULL=1)")
    p_run.add_argument("--notebooks", help="comma-separated numbers to run, e.g. 01,03")
    p_run.add_argument("--notebook-dir", default=str(NOTEBOOKS), help="folder of the numbered notebooks")
    p_run.add_argument("--reports", help="output folder (default: reports/ or $LEPTON_NB_REPORTS)")
    p_run.add_argument("--timeout", type=int, default=3600, help="seconds per cell, 0 for none")
    p_run.set_defaults(func=run)
    p_bench = sub.add_parser("bench", help="run the benchmarks into reports/bench/")
    p_bench.add_argument("--full", action="store_true")
    p_bench.add_argument("--only", help="comma-separated parts of benchmark names")
    p_bench.set_defaults(func=bench)
    p_res = sub.add_parser("results", help="print the results table (headline figures and benchmark ratios)")
    p_res.add_argument("--reports", help="reports folder to read (default: reports/ or $LEPTON_NB_REPORTS)")
    p_res.add_argument("--write", metavar="FILE", help="replace the results block of FILE (e.g. README.md)")
    p_res.set_defaults(func=results)
    p_sync = sub.add_parser("sync-notebooks", help="set every notebook's colab-setup cell from notebooks/colab_setup.py "
                                                  "and clear outputs and execution counts")
    p_sync.add_argument("--check", action="store_true", help="only list the notebooks that differ (exit 1 if any)")
    p_sync.add_argument("--notebook-dir", default=str(NOTEBOOKS), help="folder of the numbered notebooks")
    p_sync.set_defaults(func=sync_notebooks)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
