"""lepton_nb.plotting: figures that draw themselves in notebooks, saved as PNGs under reports/figures."""

from __future__ import annotations

import numpy as np

import lepton_nb as ln


def test_figures_draw_and_are_saved(tmp_path, monkeypatch, assert_drawn):
    monkeypatch.setenv("LEPTON_NB_REPORTS", str(tmp_path))
    names = [f"c{i}" for i in range(3)]
    rng = np.random.default_rng(0)
    x, y = rng.random((30, 28, 28, 1)), np.arange(30) % 3
    figs = [
        ln.plotting.training_curves({"a": {"loss": [2, 1], "accuracy": [0.3, 0.6], "val_loss": [2, 1.5],
                                           "val_accuracy": [0.3, 0.5]}}),
        ln.plotting.confusion_matrix(np.eye(3) * 5 + 1, names),
        ln.plotting.sample_grid(x, y, names, y_pred=(y + 1) % 3, per_class=4),
        ln.plotting.class_counts({"train": np.array([3, 4, 5])}, names),
    ]
    for i, fig in enumerate(figs):
        assert_drawn(fig)
        path = ln.plotting.save_figure(fig, f"fig{i}")
        assert path.exists() and path.stat().st_size > 1000 and path.parent == tmp_path / "figures"
