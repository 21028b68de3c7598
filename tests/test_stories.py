"""The story modules of notebooks 01 to 05: prose built from the run's numbers, and quality checks
that fail when a figure misses its floor. (Notebook 06 has tests/test_story_case_study.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import lepton_nb as ln
from lepton_nb.stories import nb01_baselines, nb02_distributed, nb03_privacy, nb04_federated, nb05_interpretability


def test_claim_and_confusion_prose_quote_the_measured_numbers():
    rep = ln.metrics.report([0, 1, 1, 0], [0, 1, 0, 0], class_names=["a", "b"])
    text = nb01_baselines.claim_markdown({"cnn": rep})
    assert "96.5" in text and "75.0" in text and "21.5 points below" in text
    rep3 = ln.metrics.report([0, 0, 0, 1, 1, 2], [1, 1, 0, 2, 1, 2], class_names=["a", "b", "c"])
    sentence = nb01_baselines.confusions_markdown(rep3, "m")
    assert "m got 3 of 6 test images wrong" in sentence and "a taken for b 2 times; b taken for c 1 times" in sentence


def test_baselines_quality_floors():
    cfg = nb01_baselines.get_config("default")
    assert nb01_baselines.quality_failures(cfg, {"seed_cnn": 87.2}) == []
    assert nb01_baselines.quality_failures(cfg, {"seed_cnn": 80.0}) == ["seed CNN reached 80.0 % (< 85.0 %)"]
    full = nb01_baselines.get_config("full")
    recipe = nb01_baselines.recipe_name(full)
    family = {c.label: 91.0 for c in full.family} | {recipe: 93.2}
    assert nb01_baselines.quality_failures(full, family, {recipe: 420.0}) == []
    fails = nb01_baselines.quality_failures(full, family | {recipe: 92.9}, {recipe: 601.0})
    assert fails == [f"{recipe} reached 92.9 % (< 93.0 %)", f"{recipe} trained for 601.0 s (> 600 s, or not recorded)"]
    assert "not recorded" in nb01_baselines.quality_failures(full, family)[0]
    assert "best CNN-family accuracy 91.0 %" in nb01_baselines.quality_failures(
        full, {c.label: 91.0 for c in full.family} | {recipe: 91.0}, {recipe: 1.0})[-1]


def _run(acc, ips=100.0, loss=0.5):
    return SimpleNamespace(report={"accuracy": acc}, images_per_second=lambda: ips, history={"loss": [loss]},
                           epochs_run=2)


def test_distributed_prose_and_checks_follow_the_measured_gap():
    close = {"1 replica": _run(0.86), "2 CPU replicas": _run(0.8605, ips=90.0)}
    text = nb02_distributed.comparison_markdown(close)
    assert "**2 CPU replicas** trained at 90 images/s (0.90x 1 replica)" in text
    assert "differ by at most 0.1 points" in text
    cfg = nb02_distributed.get_config("default")
    assert nb02_distributed.quality_failures(cfg, {"main": 0.86, **{k: r.report["accuracy"] for k, r in close.items()}},
                                             list(close)) == []
    far = {"main": 0.80, "1 replica": 0.86, "2 CPU replicas": 0.82}
    fails = nb02_distributed.quality_failures(cfg, far, ["1 replica", "2 CPU replicas"])
    assert len(fails) == 2 and "80.00 %" in fails[0] and "4.00 points" in fails[1]
    assert nb02_distributed.quality_failures(nb02_distributed.get_config("smoke"), far, ["1 replica"]) == []


def test_privacy_prose_quotes_the_runs():
    dp = SimpleNamespace(extra={"sampling": "poisson", "l2_norm_clip": 1.0, "noise_multiplier": 1.234, "epsilon": 2.987,
                                "delta": 1e-5}, report={"accuracy": 0.795}, history={"clipped": [0.4, 0.31]})
    base = SimpleNamespace(report={"accuracy": 0.862})
    text = nb03_privacy.dp_markdown(dp, base)
    assert "**79.5 %** test accuracy at epsilon **2.99** (delta 1e-05)" in text and "86.2 %" in text
    assert "31 % of per-example gradients" in text
    recipe = SimpleNamespace(extra={"l2_norm_clip": 0.1, "noise_multiplier": 4.3066, "epsilon": 2.9765, "delta": 1e-5},
                             report={"accuracy": 0.9003}, train_examples=60_000, epochs_run=60)
    cfg = nb03_privacy.get_config("full")
    text = nb03_privacy.recipe_markdown(recipe, dp, cfg)
    assert "**90.03 %** test accuracy at epsilon **2.98**" in text and "10.5 points above" in text
    assert f"among {nb03_privacy.RECIPE_TUNING_CONFIGURATIONS} configurations" in text and "60,000 examples" in text
    attack = lambda adv: {"attacks": {"loss": SimpleNamespace(advantage=adv)}}  # noqa: E731
    checks = dict(dp=dp, budget=SimpleNamespace(extra={"epsilon": 1.0, "stopped_by_budget": True}), budget_epsilon=1.0,
                  sched=dp, audit={"nonprivate": attack(0.3), "dp": attack(0.1)})
    assert nb03_privacy.quality_failures(cfg, **checks, recipe=recipe) == ["DP accuracy 79.50 % < 85.0 %"]
    worse = SimpleNamespace(**{**vars(recipe), "report": {"accuracy": 0.885}, "extra": {**recipe.extra, "epsilon": 3.01}})
    assert nb03_privacy.quality_failures(cfg, **checks, recipe=worse)[1:] == [
        "ScatterNet recipe spent epsilon 3.010 > target 3.0", "ScatterNet recipe accuracy 88.50 % < 89.0 %"]
    speed = nb03_privacy.speed_markdown({"fast_vs_nonprivate": 1.42, "stock_vs_nonprivate": 37.2, "stock_vs_fast": 26.2})
    assert "**1.42x**" in speed and "**37.2x**" in speed and "26.2x faster" in speed


def test_federated_quality_floors():
    cfg = nb04_federated.get_config("default")
    ok = {"centralized": 87.0, "fedavg_iid": 82.0, "fedavg_non_iid": 78.0}
    assert nb04_federated.quality_failures(cfg, ok) == []
    assert nb04_federated.quality_failures(cfg, {**ok, "fedavg_iid": 70.0, "fedavg_non_iid": 74.0}) == [
        "FedAvg IID reached 70.0 % (< 75.0 %)", "non-IID beat IID by more than noise"]
    full = nb04_federated.get_config("full")
    assert "points below centralized" in nb04_federated.quality_failures(full, {**ok, "centralized": 91.0})[0]


def test_interpretability_prose_states_the_floor_it_checks():
    cfg = nb05_interpretability.get_config("default")
    sur = SimpleNamespace(depth=9, leaves=64, fidelity=0.8015, fidelity_train=0.83, accuracy=0.78, model_accuracy=0.87)
    text = nb05_interpretability.surrogate_markdown(sur, cfg, 4000)
    assert f"meets the notebook's {cfg.min_fidelity:g} % fidelity floor" in text and "**80.2 %** of 4,000" in text
    low = SimpleNamespace(**{**vars(sur), "fidelity": 0.70})
    assert f"misses the notebook's {cfg.min_fidelity:g} % fidelity floor by 8.0 points" in \
        nb05_interpretability.surrogate_markdown(low, cfg, 4000)
    checks = {"gradcam_hit_rate": 1.0, "surrogate_fidelity": 70.0, "deletion_auc_above_random": [],
              "gradcam_spearman_all_random": 0.1}
    assert nb05_interpretability.quality_failures(cfg, checks) == [f"surrogate fidelity 70.0 % (< {cfg.min_fidelity} %)"]


@pytest.mark.parametrize("story", [nb01_baselines, nb02_distributed, nb03_privacy, nb04_federated,
                                   nb05_interpretability])
def test_each_story_names_its_notebooks_section(story):
    from lepton_nb.cli import find_notebooks

    assert story.SECTION in {p.stem for p in find_notebooks()}
