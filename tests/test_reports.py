"""lepton_nb.reports: summary files."""

from __future__ import annotations

import json

import numpy as np

import lepton_nb as ln


def test_record_merges_sections_and_renders_markdown(tmp_path):
    path = tmp_path / "summary.json"
    ln.reports.record("01_x", {"models": {"mlp": {"accuracy": 88.1, "f1_macro": 87.0, "params": 1000}}}, path=path)
    ln.reports.record("01_x", {"models": {"cnn": {"accuracy": 90.5}}, "note": "ok"}, path=path)
    ln.reports.record("03_y", {"epsilon": np.float64(2.5), "curve": np.arange(3)}, path=path)
    ln.reports.record("04_z", {"faithfulness": {"gradcam": {"deletion_auc": 0.43, "delta": 1e-5}}}, path=path)
    data = json.loads(path.read_text())
    assert set(data["sections"]["01_x"]["models"]) == {"mlp", "cnn"}
    assert data["sections"]["03_y"] == {"epsilon": 2.5, "curve": [0, 1, 2]}
    md = ln.reports.write_markdown(path).read_text()
    assert "| mlp | 88.10 | 87.00 | 1,000 |" in md
    assert "## 03_y" in md and "- epsilon: 2.50" in md
    assert "| faithfulness | deletion_auc | delta |" in md and "| gradcam | 0.43 | 1e-05 |" in md
    assert not list(tmp_path.glob("*.tmp"))


def test_a_section_recorded_in_another_mode_starts_afresh(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    monkeypatch.delenv("LEPTON_NB_SMOKE", raising=False)
    monkeypatch.delenv("LEPTON_NB_FULL", raising=False)
    ln.reports.record("04_z", {"models": {"sweep_small": {"accuracy": 75.0}}}, path=path)
    ln.reports.record("01_x", {"models": {"mlp": {"accuracy": 84.1}}}, path=path)
    monkeypatch.setenv("LEPTON_NB_FULL", "1")
    ln.reports.record("04_z", {"models": {"fedavg": {"accuracy": 90.6}}}, path=path)
    data = json.loads(path.read_text())
    assert data["sections"]["04_z"]["models"] == {"fedavg": {"accuracy": 90.6}}  # no default-mode row left
    assert data["modes"] == {"04_z": "full", "01_x": "default"}
    assert data["sections"]["01_x"]["models"] == {"mlp": {"accuracy": 84.1}}  # other sections untouched
