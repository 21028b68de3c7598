"""Shared pieces of the benchmark scripts: timing with warm-up, machine facts, the JSON format.

Every benchmark writes ``reports/bench/<name>.json`` with ``name``, ``config``, ``machine``,
``results`` (raw figures, with min/median/max over repeats) and ``ratios`` (flat ``<a>_vs_<b>`` =
time of a / time of b, measured in the same run), then prints one summary line.
``python -m lepton_nb results`` lists every ratio with the script (and ``--full``) that reproduces it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def machine() -> dict:
    """Cores, platform and the versions that matter for the figures."""
    info = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    for mod in ("numpy", "tensorflow", "tensorflow_federated", "tensorflow_privacy", "tf_explain"):
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", "?")
    return info


def timed(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; seconds min/median/max."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return {"min": min(runs), "median": statistics.median(runs), "max": max(runs), "runs": runs}


def write(name: str, *, config: dict, results: dict, ratios: dict, summary: str) -> Path:
    """Write ``reports/bench/<name>.json`` and print the one-line summary."""
    out_dir = Path(os.environ.get("LEPTON_NB_REPORTS", REPO / "reports")) / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"name": name, "config": config, "machine": machine(), "results": results, "ratios": ratios}
    path.write_text(json.dumps(payload, indent=2))
    print(f"{name}: {summary}  -> {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return path
