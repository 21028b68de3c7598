"""lepton_nb.config: frozen settings, modes from the environment, validation."""

from __future__ import annotations

import dataclasses

import pytest

import lepton_nb as ln
from lepton_nb.config import TrainConfig


def test_configs_are_frozen():
    cfg = ln.config.baselines("default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 1  # type: ignore[misc]
    assert ln.config.replace(cfg.train, epochs=1).epochs == 1


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "default"), ({"LEPTON_NB_SMOKE": "1"}, "smoke"), ({"LEPTON_NB_FULL": "1"}, "full"),
    ({"LEPTON_NB_SMOKE": "1", "LEPTON_NB_FULL": "1"}, "smoke"), ({"LEPTON_NB_SMOKE": "0"}, "default"),
])
def test_mode_comes_from_the_environment(monkeypatch, env, expected):
    monkeypatch.delenv("LEPTON_NB_SMOKE", raising=False)
    monkeypatch.delenv("LEPTON_NB_FULL", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert ln.config.mode() == expected
    assert ln.config.baselines().mode == expected


def test_smoke_is_small_and_full_uses_the_full_data():
    smoke, full = ln.config.baselines("smoke"), ln.config.baselines("full")
    assert smoke.train.epochs == 1 and smoke.data.max_train <= 1000
    assert full.data.full and full.data.max_train is None
    with pytest.raises(ValueError, match="choose 'smoke', 'default' or 'full'"):
        ln.config.baselines("huge")  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epochs": 0}, "at least one epoch"), ({"batch_size": 0}, "positive batch"),
    ({"learning_rate": 0.0}, "must be positive"), ({"optimizer": "rmsprop"}, "'adam' or 'sgd'"),
])
def test_bad_train_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, lepton_nb; print(any(m.startswith('tensorflow') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
