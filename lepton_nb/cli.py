"""``python -m lepton_nb run|bench|results|sync-notebooks``: the main job, the benchmarks, the results table.

``run`` executes the numbered notebooks in order, headless, each in a fresh kernel, writing
``reports/notebooks/<name>.ipynb`` and ``.html``, the figures the notebooks save and
``reports/summary.json`` / ``summary.md``. A failing notebook stops the job with one plain line
naming the notebook and the cell (and, for a kernel that died, the signal and the memory; see
:mod:`lepton_nb.execution`); the reports already written stay. An unreadable summary.json is moved
aside with a warning when the job starts and before each notebook (:mod:`lepton_nb.summary_file`).
``--resume`` skips the notebooks whose last run in this mode finished with the same code
(:func:`code_identity`) and runs the others.

``results`` prints every headline figure of ``reports/summary.json`` (every section, every mode)
and every benchmark ratio of ``reports/bench/*.json`` as one Markdown table, each row with the
date and mode it was measured in and the command that reproduces it; ``--write README.md``
replaces the README's results block with it, keeping the block's rows of the notebook and benchmark
runs (in a mode) that the reports folder does not hold, e.g. full-mode figures on a new checkout.

``sync-notebooks`` puts the committed notebooks in their committed form: the ``colab-setup`` cell
equal to ``notebooks/colab_setup.py``, no outputs, no execution counts (``--check``: only report).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from lepton_nb.execution import execute_notebook

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(__file__).resolve().parent
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


def _package_digest() -> bytes:
    """SHA-256 over every ``lepton_nb/**/*.py`` (relative path and content), in path order."""
    h = hashlib.sha256()
    for p in sorted(PACKAGE.rglob("*.py")):
        h.update(p.relative_to(PACKAGE).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.digest()


def code_identity(notebook: Path, provenance: dict, package_digest: bytes) -> str:
    """What a notebook's run depends on, as a string that changes when that code changes.

    ``"commit <hash>"`` for a notebook inside a git checkout without uncommitted changes
    (``provenance`` from :func:`lepton_nb.reports.provenance`); otherwise ``"sha256 <16 hex> of
    <notebook> and lepton_nb/"`` over the notebook file and the package (``package_digest`` from
    :func:`_package_digest`).
    """
    inside = notebook.resolve().is_relative_to(REPO)
    if inside and provenance.get("commit") and not provenance.get("dirty"):
        return f"commit {provenance['commit']}"
    digest = hashlib.sha256(package_digest + notebook.read_bytes()).hexdigest()[:16]
    return f"sha256 {digest} of {notebook.name} and lepton_nb/"


def resume_plan(notebooks: list[Path], summary: dict, mode: str,
                identities: dict[str, str]) -> list[tuple[Path, bool, str]]:
    """For each notebook: ``(path, skip, why)``. A notebook is skipped when the main job's last record
    of it in ``mode`` (``summary["modes"][mode]["sections"]["main_job"]["notebooks"][stem]``) finished
    ok with the same code identity (``identities[stem]``, see :func:`code_identity`)."""
    done = summary["modes"].get(mode, {}).get("sections", {}).get("main_job", {}).get("notebooks", {})
    plan = []
    for nb in notebooks:
        last, now = done.get(nb.stem), identities[nb.stem]
        if not isinstance(last, dict):
            plan.append((nb, False, f"no run of it recorded in {mode} mode"))
        elif last.get("status") != "ok":
            plan.append((nb, False, f"its last run in {mode} mode {last.get('status', 'did not finish')}"))
        elif last.get("code") != now:
            plan.append((nb, False, f"the code changed since its last run ({last.get('code') or 'not recorded'}, "
                                    f"now {now})"))
        else:
            plan.append((nb, True, f"finished in {mode} mode at {last.get('finished') or 'an unrecorded time'} "
                                   f"with the same code ({now})"))
    return plan


def _check_summary(path: Path) -> None:
    """Move an unreadable summary aside, saying so on stderr."""
    from lepton_nb import summary_file

    message = summary_file.read_or_set_aside(path, warn=False)[1]
    if message:
        print(f"warning: {message}", file=sys.stderr, flush=True)


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
    summary_path = out_root / "summary.json"
    _check_summary(summary_path)
    prov, package = reports.provenance(), _package_digest()
    identities = {nb.stem: code_identity(nb, prov, package) for nb in notebooks}
    print(f"lepton_nb run: {len(notebooks)} notebook(s), {mode()} mode, reports in {out_root}", flush=True)
    if args.resume:
        plan = resume_plan(notebooks, reports.load_summary(summary_path), mode(), identities)
        for nb, skip, why in plan:
            print(f"resume: {'skipping' if skip else 'running'} {nb.name}: {why}", flush=True)
        notebooks = [nb for nb, skip, _ in plan if not skip]
        if not notebooks:
            print("resume: every selected notebook has finished with this code; nothing to run", flush=True)

    def record(stem: str, **entry) -> None:
        _check_summary(summary_path)
        finished = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        entry = {"status": "ok", "error": "", **entry, "code": identities[stem], "finished": finished}
        reports.record("main_job", {"notebooks": {stem: entry}}, command=job)

    total = time.perf_counter()
    status = 0
    for i, nb_path in enumerate(notebooks, 1):
        _check_summary(summary_path)
        aside = set(out_root.glob("summary.json.unreadable-*"))
        print(f"[{i}/{len(notebooks)}] {nb_path.name} ...", end=" ", flush=True)
        started = time.perf_counter()
        try:
            seconds = execute_notebook(nb_path, out_root / "notebooks", timeout=timeout)
        except RuntimeError as err:
            line = " ".join(reports.plain_text(str(err)).splitlines())
            print("FAILED", flush=True)
            print(f"error: {line}\n  partly executed copy: {out_root / 'notebooks' / nb_path.name}; "
                  "reports of the notebooks before it are kept", file=sys.stderr)
            record(nb_path.stem, status="failed", seconds=round(time.perf_counter() - started, 1), error=line)
            status = 1
            break
        finally:  # moved aside by the notebook's own record() in its kernel: say so here too
            for moved in sorted(set(out_root.glob("summary.json.unreadable-*")) - aside):
                print(f"\nwarning: {nb_path.name} found {summary_path} unreadable and moved it aside to {moved} "
                      "(its warning is in the executed notebook)", file=sys.stderr, flush=True)
        print(f"done in {seconds:.0f} s", flush=True)
        record(nb_path.stem, seconds=round(seconds, 1))
        reports.write_markdown(summary_path)
    _check_summary(summary_path)
    reports.record("main_job", {"total_seconds": round(time.perf_counter() - total, 1)}, command=job)
    md = reports.write_markdown(summary_path)
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
    try:
        rows = reports.results_rows(root)
    except ValueError as err:  # lepton_nb.summary_file.SummaryError: an unreadable summary.json
        print(f"error: {err}", file=sys.stderr)
        return 2
    kept = []
    if args.write:  # rows of runs that root does not hold stay as the file recorded them
        target = Path(args.write)
        try:
            text = target.read_text()
            rows, kept = reports.merge_results_rows(rows, reports.results_block(text))
        except (OSError, ValueError) as err:
            print(f"error: {target}: {err}", file=sys.stderr)
            return 2
    body = reports.results_table(rows)
    print(body)
    if not rows:
        print(f"(no headline figures or benchmark ratios in {root})", file=sys.stderr)
    if args.write:
        note = ("Generated by `python -m lepton_nb results --write README.md` from `reports/`, keeping the rows of "
                "runs that `reports/` does not hold; do not edit by hand.")
        try:
            target.write_text(reports.replace_results_block(text, f"{note}\n\n{body}"))
        except OSError as err:
            print(f"error: {target}: {err}", file=sys.stderr)
            return 2
        print(f"wrote {len(rows)} rows into {target}", file=sys.stderr)
        if kept:
            print(f"kept from {target} the rows of {len(kept)} notebook/benchmark runs that {root} does not hold: "
                  + ", ".join(f"{name} ({mode})" for name, mode in kept), file=sys.stderr)
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
    p_run.add_argument("--resume", action="store_true",
                       help="skip the notebooks whose last run in this mode finished with the same code "
                            "(commit, or a hash of the notebook and lepton_nb/); run the others")
    p_run.set_defaults(func=run)
    p_bench = sub.add_parser("bench", help="run the benchmarks into reports/bench/")
    p_bench.add_argument("--full", action="store_true")
    p_bench.add_argument("--only", help="comma-separated parts of benchmark names")
    p_bench.set_defaults(func=bench)
    p_res = sub.add_parser("results", help="print the results table (headline figures and benchmark ratios)")
    p_res.add_argument("--reports", help="reports folder to read (default: reports/ or $LEPTON_NB_REPORTS)")
    p_res.add_argument("--write", metavar="FILE", help="replace the results block of FILE (e.g. README.md), keeping "
                       "its rows of runs the reports folder does not hold")
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
