"""lepton_nb.settings: one pattern for every notebook's settings, modes from the environment, validation."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import lepton_nb as ln
from lepton_nb.settings import DistributionOptions, SettingsError, TrainConfig, by_mode

STORIES = ("nb01_baselines", "nb02_distributed", "nb03_privacy", "nb04_federated", "nb05_interpretability",
           "nb06_case_study")


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "default"), ({"LEPTON_NB_SMOKE": "1"}, "smoke"), ({"LEPTON_NB_FULL": "1"}, "full"),
    ({"LEPTON_NB_SMOKE": "1", "LEPTON_NB_FULL": "1"}, "smoke"), ({"LEPTON_NB_SMOKE": "0"}, "default"),
])
def test_every_story_follows_the_mode_of_the_environment(monkeypatch, env, expected):
    monkeypatch.delenv("LEPTON_NB_SMOKE", raising=False)
    monkeypatch.delenv("LEPTON_NB_FULL", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert ln.settings.mode() == expected
    for name in STORIES:
        assert importlib.import_module(f"lepton_nb.stories.{name}").get_config().mode == expected, name


@pytest.mark.parametrize("name", STORIES)
def test_smoke_is_smaller_than_default_and_full_uses_the_full_data(name):
    story = importlib.import_module(f"lepton_nb.stories.{name}")
    smoke, default, full = (story.get_config(m) for m in ("smoke", "default", "full"))
    assert smoke.data.max_train is not None and smoke.data.max_train <= 1000, name
    assert default.data.max_train is None and not default.data.full, name
    assert full.data.full and full.data.max_train is None, name
    with pytest.raises(SettingsError, match="mode 'huge': choose 'smoke', 'default' or 'full'"):
        story.get_config("huge")


def test_by_mode_builds_only_the_chosen_settings_and_stamps_the_mode():
    built = []

    def make(label):
        def build():
            built.append(label)
            return TrainConfig(epochs={"smoke": 1, "default": 5, "full": 9}[label])
        return build

    cfg = by_mode("full", smoke=make("smoke"), default=make("default"), full=make("full"))
    assert cfg.epochs == 9 and built == ["full"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epochs": 0}, "at least one epoch"), ({"batch_size": 0}, "positive batch"),
    ({"learning_rate": 0.0}, "must be positive"), ({"optimizer": "rmsprop"}, "'adam' or 'sgd'"),
])
def test_bad_train_configs_are_refused(kwargs, message):
    with pytest.raises(SettingsError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"per_replica_batch": 0}, "per_replica_batch"), ({"lr_scaling": "cubic"}, "lr_scaling='cubic'"),
    ({"steps_per_execution": 0}, "steps_per_execution=0"), ({"mixed_precision": "float8"}, "mixed_precision"),
])
def test_bad_distribution_options_are_refused(kwargs, message):
    with pytest.raises(SettingsError, match=message):
        DistributionOptions(**kwargs)


def test_import_is_light():
    code = ("import sys, lepton_nb, lepton_nb.settings, lepton_nb.privacy, lepton_nb.stories.nb06_case_study; "
            "print(any(m.startswith('tensorflow') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
