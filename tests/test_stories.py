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
    family = {c.label: 91.0 for c in full.family}
    assert "best CNN-family accuracy 91.0 %" in nb01_baselines.quality_failures(full, family)[0]


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


def _verdict(**passes):
    return {m: {"pass": p, "judged_on": "spearman_abs", "reproducible": 0.5, "after_logits": 0.1, "gap": 0.4,
                "needed_gap": 0.15} for m, p in passes.items()}


def test_interpretability_checks_fail_where_their_controls_say():
    import pandas as pd

    cfg = nb05_interpretability.get_config("default")
    loc = pd.DataFrame({"pointing": [1.0, 0.33, 0.08], "pointing_se": [0.0, 0.06, 0.03]}, index=["gradcam", "input", "random"])
    mis = pd.DataFrame({"auc": [0.97, 0.98, 0.5]}, index=["TracIn self-influence", "training loss (control)", "random"])
    ok = {"verdict": _verdict(gradcam=True, input=False, constant=False, random=False), "localization": loc,
          "shapes_accuracy": 1.0, "ig_median_error": 0.004, "mislabel": mis, "faithful_anywhere": True}
    assert nb05_interpretability.quality_failures(cfg, ok) == []
    bad = {**ok, "verdict": _verdict(gradcam=False, input=True, constant=False, random=False),
           "localization": loc.assign(pointing=[0.7, 0.9, 0.08]), "ig_median_error": 0.02, "faithful_anywhere": False}
    fails = nb05_interpretability.quality_failures(cfg, bad)
    assert any("Grad-CAM fails" in f for f in fails) and any("input control passes" in f for f in fails)
    assert any("not at chance" in f for f in fails) and any("(< 90 %)" in f for f in fails)
    assert any("completeness" in f for f in fails) and any("controls at any fill" in f for f in fails)
    assert nb05_interpretability.quality_failures(nb05_interpretability.get_config("smoke"), bad) == []


def test_interpretability_prose_quotes_the_run():
    import pandas as pd

    choice = {"verdicts": {"explained": {**_verdict(g=True)["g"], "layer": "act_1_0", "draws": 4},
                           "seed": {**_verdict(g=False)["g"], "layer": "act_0_0", "draws": 4}},
              "specificity": {"explained": 0.31, "seed": 0.87}, "test_accuracy": {"explained": 0.88, "seed": 0.87}}
    text = nb05_interpretability.choice_markdown(choice)
    assert "**passes**" in text and "**fails**" in text and "explains the first" in text
    assert "(4 draws)" in text and "agree at 0.31" in text and "agree at 0.87" in text
    mis = pd.DataFrame({"auc": [0.97, 0.975, 0.984, 0.49]},
                       index=["TracIn self-influence", "IF self-influence", "training loss (control)", "random"])
    refit = {"single_spearman": [0.99, 0.98], "set_spearman": 0.97, "mean_actual": {"IF top-k": 1.2, "40 random": 0.001}}
    text = nb05_interpretability.influence_markdown(refit, None, {"table": mis, "flipped": 300, "images": 6000,
                                                                  "fitted_flipped": 0.06})
    assert "0.99, 0.98" in text and "300 of 6000 flipped" in text and "training loss finds the flipped labels" in text
    assert "AUC TracIn self-influence 0.970" in text


@pytest.mark.parametrize("story", [nb01_baselines, nb02_distributed, nb03_privacy, nb04_federated,
                                   nb05_interpretability])
def test_each_story_names_its_notebooks_section(story):
    from lepton_nb.cli import find_notebooks

    assert story.SECTION in {p.stem for p in find_notebooks()}
