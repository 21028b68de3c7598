"""lepton_nb.reports: summary files."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess

import numpy as np
import pytest

import lepton_nb as ln


@pytest.fixture()
def default_mode(monkeypatch):
    monkeypatch.delenv("LEPTON_NB_SMOKE", raising=False)
    monkeypatch.delenv("LEPTON_NB_FULL", raising=False)
    return monkeypatch


def test_record_merges_sections_and_renders_markdown(tmp_path, default_mode):
    path = tmp_path / "summary.json"
    ln.reports.record("01_x", {"models": {"mlp": {"accuracy": 88.1, "f1_macro": 87.0, "params": 1000}}}, path=path)
    ln.reports.record("01_x", {"models": {"cnn": {"accuracy": 90.5}}, "note": "ok"}, path=path)
    ln.reports.record("03_y", {"epsilon": np.float64(2.5), "curve": np.arange(3)}, path=path)
    ln.reports.record("04_z", {"faithfulness": {"gradcam": {"deletion_auc": 0.43, "delta": 1e-5}}}, path=path)
    sections = json.loads(path.read_text())["modes"]["default"]["sections"]
    assert set(sections["01_x"]["models"]) == {"mlp", "cnn"}
    assert sections["03_y"] == {"epsilon": 2.5, "curve": [0, 1, 2]}
    assert ln.reports.section("03_y", path=path) == sections["03_y"]
    md = ln.reports.write_markdown(path).read_text()
    assert "| mlp | 88.10 | 87.00 | 1,000 |" in md
    assert "### 03_y" in md and "- epsilon: 2.50" in md and "- curve: 0, 1, 2" in md
    assert "| faithfulness | deletion_auc | delta |" in md and "| gradcam | 0.43 | 1e-05 |" in md
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_modes_accumulate_side_by_side(tmp_path, default_mode):
    path = tmp_path / "summary.json"
    ln.reports.record("04_z", {"models": {"sweep_small": {"accuracy": 75.0}}}, path=path)
    ln.reports.record("01_x", {"models": {"mlp": {"accuracy": 84.1}}}, path=path)
    default_mode.setenv("LEPTON_NB_FULL", "1")
    ln.reports.record("04_z", {"models": {"fedavg": {"accuracy": 90.6}}}, path=path)
    modes = json.loads(path.read_text())["modes"]
    assert modes["full"]["sections"] == {"04_z": {"models": {"fedavg": {"accuracy": 90.6}}}}  # no default-mode row
    assert modes["default"]["sections"]["04_z"]["models"] == {"sweep_small": {"accuracy": 75.0}}  # kept
    assert modes["default"]["runs"]["04_z"]["command"] == "make run NOTEBOOKS=04"
    assert modes["full"]["runs"]["04_z"]["command"] == "make run NOTEBOOKS=04 FULL=1"
    assert ln.reports.section("04_z", path=path) == modes["full"]["sections"]["04_z"]  # the current (full) mode
    assert ln.reports.section("04_z", mode="default", path=path)["models"]["sweep_small"]["accuracy"] == 75.0
    md = ln.reports.write_markdown(path).read_text()
    assert md.index("## default mode") < md.index("### 04_z (default mode)") < md.index("## full mode") \
        < md.index("### 04_z (full mode)")
    assert "| sweep_small | 75.00 |" in md and "| fedavg | 90.60 |" in md
    assert "by `make run NOTEBOOKS=04 FULL=1`" in md


def test_each_run_records_date_command_and_commit(tmp_path, default_mode):
    path = tmp_path / "summary.json"
    default_mode.setenv("LEPTON_NB_SMOKE", "1")
    before = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    ln.reports.record("03_y", {"ran": True}, path=path)
    ln.reports.record("main_job", {"total_seconds": 3.0}, command="make run NOTEBOOKS=01,03 SMOKE=1", path=path)
    runs = json.loads(path.read_text())["modes"]["smoke"]["runs"]
    recorded = _dt.datetime.fromisoformat(runs["03_y"]["recorded"])
    assert before <= recorded <= _dt.datetime.now(_dt.timezone.utc)
    assert runs["03_y"]["command"] == "make run NOTEBOOKS=03 SMOKE=1"
    assert runs["main_job"]["command"] == "make run NOTEBOOKS=01,03 SMOKE=1"
    assert {k: runs["03_y"][k] for k in ("commit", "dirty")} == ln.reports.provenance()


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_provenance_names_the_commit_and_sees_changes(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "lepton_nb").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\n")
    _git(tmp_path, "init", "-q", str(repo))
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    monkeypatch.setattr(ln.reports, "_REPO", repo)
    assert ln.reports.provenance() == {"commit": _git(repo, "rev-parse", "--short", "HEAD"), "dirty": False}
    (repo / "pyproject.toml").write_text("[project]\nname = 'changed'\n")
    assert ln.reports.provenance()["dirty"] is True
    monkeypatch.setattr(ln.reports, "_REPO", tmp_path / "not-a-checkout")
    assert ln.reports.provenance() == {"commit": None, "dirty": False}


def test_headline_is_replaced_per_run_and_must_be_numbers(tmp_path, default_mode):
    path = tmp_path / "summary.json"
    default_mode.setenv("LEPTON_NB_REPORTS", str(tmp_path))  # record_models writes to reports_dir()
    ln.reports.record_models("03_y", {"dp": {"accuracy": 79.5}}, headline={"DP % (epsilon 2.99)": np.float64(79.5)})
    ln.reports.record_models("03_y", {"dp": {"accuracy": 80.1}}, headline={"DP % (epsilon 3.00)": 80.1})
    body = json.loads(path.read_text())["modes"]["default"]["sections"]["03_y"]
    assert body["headline"] == {"DP % (epsilon 3.00)": 80.1}  # the earlier run's label is gone
    with pytest.raises(TypeError, match="not numbers"):
        ln.reports.record("03_y", {}, headline={"strategy": "mirrored"})
    md = ln.reports.write_markdown().read_text()
    assert "| figure | value |\n|---|---|\n| DP % (epsilon 3.00) | 80.10 |" in md


def test_the_flat_format_is_converted_on_read(tmp_path, default_mode):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"sections": {"01_x": {"models": {"mlp": {"accuracy": 84.1}}},
                                             "04_z": {"models": {"fedavg": {"accuracy": 90.6}}}},
                                "updated": "2026-11-29T10:00:00+00:00", "modes": {"01_x": "default", "04_z": "full"}}))
    summary = ln.reports.load_summary(path)
    assert summary["modes"]["full"]["sections"] == {"04_z": {"models": {"fedavg": {"accuracy": 90.6}}}}
    assert summary["modes"]["full"]["runs"]["04_z"] == {"recorded": None, "command": "make run NOTEBOOKS=04 FULL=1",
                                                        "commit": None, "dirty": None}
    ln.reports.record("01_x", {"models": {"cnn": {"accuracy": 87.2}}}, path=path)
    data = json.loads(path.read_text())
    assert "sections" not in data  # written back in the per-mode format
    assert set(data["modes"]["default"]["sections"]["01_x"]["models"]) == {"mlp", "cnn"}
    assert data["modes"]["full"]["sections"]["04_z"]["models"]["fedavg"]["accuracy"] == 90.6


def test_markdown_renders_nested_results_as_tables_never_json(tmp_path, default_mode):
    path = tmp_path / "summary.json"
    ln.reports.record("05_w", {
        "randomization": [{"method": "gradcam", "layers": 1, "spearman": 0.9},
                          {"method": "integrated_gradients", "layers": 3, "spearman": 0.54}],
        "strategy": {"kind": "mirrored", "num_replicas": 2, "devices": ["/cpu:0", "/cpu:1"]},
        "audit": {"dp": {"threshold": {"auc": 0.48}, "trained": {"auc": 0.47}}},
        "top_features": ["worst smoothness", "mean texture"],
        "note": "a | b",
    }, path=path)
    md = ln.reports.write_markdown(path).read_text()
    assert "| method | layers | spearman |\n|---|---|---|\n| gradcam | 1 | 0.90 |\n" \
           "| integrated_gradients | 3 | 0.54 |" in md  # a list of dicts
    assert "| strategy | value |\n|---|---|\n| kind | mirrored |\n| num_replicas | 2 |\n| devices | /cpu:0, /cpu:1 |" in md
    assert "| audit | threshold auc | trained auc |\n|---|---|---|\n| dp | 0.48 | 0.47 |" in md
    assert "- top_features: worst smoothness, mean texture" in md and "- note: a | b" in md
    assert "{" not in md and "[" not in md  # no raw JSON anywhere


def _summary_fixture(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps({"updated": "2026-12-02T12:00:00+00:00", "modes": {
        "full": {"sections": {"03_differential_privacy": {"headline": {"DP-SGD test accuracy % (epsilon 2.99)": 87.39},
                                                          "models": {}}},
                 "runs": {"03_differential_privacy": {"recorded": "2026-11-29T18:00:00+00:00",
                                                      "command": "make run NOTEBOOKS=03 FULL=1",
                                                      "commit": "abc1234", "dirty": False}}},
        "default": {"sections": {"01_data_and_baselines": {"headline": {"seed CNN test accuracy %": 87.17,
                                                                        "MLP 2x128 test accuracy %": 84.1}},
                                 "main_job": {"total_seconds": 10.0}},
                    "runs": {"01_data_and_baselines": {"recorded": "2026-12-01T09:30:00+00:00",
                                                       "command": "make run NOTEBOOKS=01", "commit": "abc1234",
                                                       "dirty": True}}}}}))
    (root / "bench").mkdir(exist_ok=True)
    (root / "bench" / "dp.json").write_text(json.dumps({"name": "dp", "config": {"full": True},
                                                        "ratios": {"fast_vs_nonprivate": 1.4}}))
    (root / "bench" / "federated_overhead.json").write_text(json.dumps(
        {"name": "federated_overhead", "config": {"full": False}, "ratios": {"tff_vs_keras": 1.5}}))
    return root


def test_results_rows_carry_mode_date_and_command(tmp_path):
    rows = ln.reports.results_rows(_summary_fixture(tmp_path / "reports"))
    by_figure = {r["figure"]: r for r in rows}
    assert [r["notebook"] for r in rows] == ["01_data_and_baselines"] * 2 + ["03_differential_privacy",
                                                                             "bench_dp", "bench_federated_overhead"]
    assert by_figure["seed CNN test accuracy %"] == {
        "notebook": "01_data_and_baselines", "figure": "seed CNN test accuracy %", "value": 87.17, "mode": "default",
        "measured": "2026-12-01", "command": "make run NOTEBOOKS=01"}
    assert by_figure["DP-SGD test accuracy % (epsilon 2.99)"]["mode"] == "full"
    assert by_figure["DP-SGD test accuracy % (epsilon 2.99)"]["command"] == "make run NOTEBOOKS=03 FULL=1"
    assert by_figure["fast_vs_nonprivate (time ratio)"]["command"] == "python benchmarks/bench_dp.py --full"
    assert by_figure["fast_vs_nonprivate (time ratio)"]["mode"] == "full"
    assert by_figure["tff_vs_keras (time ratio)"]["command"] == "python benchmarks/bench_federated.py --overhead-only"
    today = _dt.datetime.now(_dt.timezone.utc).date().isoformat()  # no date in the JSON: the file's
    assert by_figure["tff_vs_keras (time ratio)"]["measured"] == today
    table = ln.reports.results_table(rows)
    assert "| 03_differential_privacy | DP-SGD test accuracy % (epsilon 2.99) | 87.39 | full | 2026-11-29 | " \
           "`make run NOTEBOOKS=03 FULL=1` |" in table


def test_the_results_block_is_replaced_and_nothing_else():
    text = "# t\n\nbefore\n<!-- results:begin -->\nold table\n<!-- results:end -->\nafter\n"
    out = ln.reports.replace_results_block(text, "new table\n")
    assert out == "# t\n\nbefore\n<!-- results:begin -->\nnew table\n<!-- results:end -->\nafter\n"
    for broken in ("no markers", "<!-- results:end -->\n<!-- results:begin -->", text + text):
        with pytest.raises(ValueError, match="results:begin"):
            ln.reports.replace_results_block(broken, "x")


def test_plain_text_drops_terminal_escapes_and_summary_md_never_shows_them(tmp_path, default_mode):
    coloured = "\x1b[0;31mDataError\x1b[0m: bad \x1b]8;;file:///x\x07link\x1b]8;;\x07 \x1b[1;32mok\x1b[39;49m\ttab\nline"
    assert ln.reports.plain_text(coloured) == "DataError: bad link ok\ttab\nline"
    assert ln.reports.plain_text("plain: 1 | 2") == "plain: 1 | 2"  # control: nothing else changes
    path = tmp_path / "summary.json"  # an error recorded by an older version, colours and all
    ln.reports.record("main_job", {"notebooks": {"01_x": {"status": "failed", "error": coloured}}}, path=path)
    kept = json.loads(path.read_text())["modes"]["default"]["sections"]["main_job"]["notebooks"]["01_x"]["error"]
    assert kept == coloured  # the JSON keeps the record as it was; only the rendering is plain
    md = ln.reports.write_markdown(path).read_text()
    assert "\x1b" not in md and "| 01_x | failed | DataError: bad link ok\ttab line |" in md
