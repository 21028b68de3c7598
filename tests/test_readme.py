"""The README and docs/: what they state about the repository and the stack holds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lepton_nb.reports import RESULTS_BEGIN, RESULTS_END

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
STACK = REPO / "docs" / "stack.md"
DOCS = [README, STACK]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def _tracked_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True,
                               check=True).stdout.split()
        files = [REPO / n for n in names]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        files = [p for p in REPO.rglob("*") if p.is_file() and not {".git", ".venv", "reports"} & set(p.parts)]
    return [p for p in files if p.suffix in {".py", ".md", ".ipynb", ".toml", ".txt", ".in", ".sh", ".yml", ".cfg", ""}
            and p.exists()]


def test_nothing_names_a_file_outside_the_repository():
    outside = re.compile(r"STACK\.md|BENCHMARKS\.md|\.\./shared|/work/|shared/design")
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()[:100]}"
            for p in _tracked_text_files() if p != Path(__file__).resolve()
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if outside.search(line)]
    assert hits == []


def test_readme_has_one_generated_results_block():
    text = README.read_text()
    assert text.count(RESULTS_BEGIN) == 1 and text.count(RESULTS_END) == 1
    block = text.split(RESULTS_BEGIN)[1].split(RESULTS_END)[0]
    assert "python -m lepton_nb results --write README.md" in block
    assert text.index("## Results") < text.index(RESULTS_BEGIN)


def test_readme_starts_with_the_two_commands_then_the_notebooks_then_results():
    headings = [line for line in README.read_text().splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Two commands", "## The notebooks", "## Results"]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_point_at_files_and_headings_of_the_repository(doc):
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert file.is_relative_to(REPO) and file.exists(), target
        if anchor:
            slugs = {_slug(line.lstrip("#")) for line in file.read_text().splitlines() if line.startswith("#")}
            assert anchor in slugs, target


def _pip_check_block(doc: Path) -> list[str]:
    """The lines of the fenced block that lists what ``pip check`` prints."""
    lines = doc.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if "has requirement" in line or "which is not installed" in line)
    start = max(i for i in range(first) if lines[i].startswith("```")) + 1
    end = next(i for i in range(first, len(lines)) if lines[i].startswith("```"))
    return lines[start:end]


def test_the_documented_overrides_are_the_lock_and_what_pip_check_prints():
    documented = _pip_check_block(README)
    assert documented == _pip_check_block(STACK)
    lock = _lock()
    for line in documented:
        # "<pkg> <ver> has requirement <req>, but you have <dep> <ver>." or "<pkg> <ver> requires <dep>, which
        # is not installed."
        m = re.fullmatch(r"(\S+) (\S+) has requirement (\S+?)(==|~=)(\S+), but you have (\S+) (\S+)\.", line)
        if m:
            assert lock[m[1]] == m[2] and lock[m[6]] == m[7] and m[3] == m[6], line
            continue
        m = re.fullmatch(r"(\S+) (\S+) requires (\S+), which is not installed\.", line)
        assert m, line
        assert lock[m[1]] == m[2] and m[3] not in lock, line
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert sorted(proc.stdout.strip().splitlines()) == sorted(documented)


def test_versions_named_in_docs_stack_are_the_locked_ones():
    text = STACK.read_text()
    lock = _lock()
    named = {"tensorflow-federated": "0.87.0", "tensorflow-privacy": "0.9.0", "tensorflow": "2.14.1",
             "tf-explain": "0.3.1", "dp-accounting": "0.4.3", "keras": "2.14.0", "ipython": "8.20.0",
             "opencv-python-headless": "4.10.0.84", "numpy": "1.25.2", "scipy": "1.9.3", "jax": "0.4.13",
             "jaxlib": "0.4.13", "packaging": "26.4", "tensorflow-empirical-privacy": "0.1.0",
             "scikit-learn": "1.6.1", "statsmodels": "0.14.0", "patsy": "1.0.3", "immutabledict": "2.2.5",
             "xplique": "1.5.2", "scikit-image": "0.24.0", "einops": "0.8.1", "deprecated": "1.2.18", "lazy-loader": "0.4"}
    for package, version in named.items():
        assert lock[package] == version, package
        assert version in text, (package, version)
    assert "requires-python = \">=3.11,<3.12\"" in (REPO / "pyproject.toml").read_text()
