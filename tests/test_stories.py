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
                                "delta": 1e-5, "neighbouring_relation": "add/remove one example",
                                "randomness": "reproducible, not private (noise and batches follow seed 0)"},
                         report={"accuracy": 0.795}, history={"clipped": [0.4, 0.31]})
    base = SimpleNamespace(report={"accuracy": 0.862})
    text = nb03_privacy.dp_markdown(dp, base)
    assert "**79.5 %** test accuracy at epsilon **2.99** (delta 1e-05, add/remove one example)" in text
    assert "86.2 %" in text and "31 % of per-example gradients" in text
    assert "Noise and batches: **reproducible, not private" in text
    recipe = SimpleNamespace(extra={"l2_norm_clip": 0.1, "noise_multiplier": 4.3066, "epsilon": 2.9765, "delta": 1e-5},
                             report={"accuracy": 0.9003}, train_examples=60_000, epochs_run=60)
    cfg = nb03_privacy.get_config("full")
    text = nb03_privacy.recipe_markdown(recipe, dp, cfg)
    assert "**90.03 %** test accuracy at epsilon **2.98**" in text and "10.5 points above" in text
    assert f"among {nb03_privacy.RECIPE_TUNING_CONFIGURATIONS} training configurations" in text
    assert nb03_privacy.RECIPE_READOUTS in text and "60,000 examples" in text
    gn, no_norm = ln.settings.DP_CNN, ln.settings.DP_CNN_NO_NORM
    speed = nb03_privacy.speed_markdown({"fast_vs_nonprivate": 1.42, "stock_vs_nonprivate": 37.2, "stock_vs_fast": 26.2},
                                        gn)
    assert "**1.42x**" in speed and "**37.2x**" in speed and "26.2x faster" in speed
    assert "beat the plain one" not in speed
    assert f"noise came from: {ln.privacy.native_noise.status()}." in speed
    assert "noise came from: off (why)." in nb03_privacy.speed_markdown(
        {"fast_vs_nonprivate": 1.42, "stock_vs_nonprivate": 37.2, "stock_vs_fast": 26.2}, gn, "off (why)")
    faster = {"fast_vs_nonprivate": 0.61, "stock_vs_nonprivate": 18.7, "stock_vs_fast": 30.7}
    assert "beat the plain one" in nb03_privacy.speed_markdown(faster, gn)
    assert "GroupNormalization" not in nb03_privacy.speed_markdown(faster, no_norm)  # its explanation needs GroupNorm


def _canary_runs(correct_bound=0.2, noise_bound=5.06, clip_bound=5.06):
    from lepton_nb.privacy.audit import bound, canary

    def run(name, eps):
        return canary.CanaryRun(name, 2.95, 2.95, bound.AuditBound(eps, 2000, 500, 300, 500, 0, 1e-5, 0.05), 0.74, 1.0,
                                20.0, "fresh OS entropy (private)")

    return {canary.CORRECT: run(canary.CORRECT, correct_bound), canary.BROKEN_NOISE: run(canary.BROKEN_NOISE, noise_bound),
            canary.BROKEN_CLIP: run(canary.BROKEN_CLIP, clip_bound)}


def test_privacy_canary_audit_prose_and_checks_fail_when_a_control_is_missed():
    cfg = nb03_privacy.get_config("smoke")  # the canary checks apply in every mode
    ok = nb03_privacy.quality_failures(cfg, dp=None, budget=None, budget_epsilon=0, sched=None, audit={},
                                       canary_runs=_canary_runs())
    assert ok == []
    missed = nb03_privacy.quality_failures(cfg, dp=None, budget=None, budget_epsilon=0, sched=None, audit={},
                                           canary_runs=_canary_runs(noise_bound=2.9))
    assert missed == ["canary audit missed BROKEN CONTROL: noise / 10: lower bound 2.900 <= claimed 2.950"]
    refuted = nb03_privacy.quality_failures(cfg, dp=None, budget=None, budget_epsilon=0, sched=None, audit={},
                                            canary_runs=_canary_runs(correct_bound=3.1))
    assert "the correct run's lower bound 3.100 exceeds its epsilon 2.950" in refuted[0]
    text = nb03_privacy.canary_markdown(_canary_runs(), cfg)
    assert "**BROKEN CONTROL: noise / 10**: claims epsilon 2.95; the audit's 95 % lower bound is **5.06**" in text
    assert "below the claim, as it must be for a correct run" in text and "RDP accountant gives 2.95" in text
    table = nb03_privacy.canary_table(_canary_runs())
    assert list(table["verdict"]) == ["consistent with the claim", "CLAIM REFUTED", "CLAIM REFUTED"]
    headline = nb03_privacy.audit_headline({"lira": {"non-private": SimpleNamespace(
        tpr_at_fpr={0.001: {"tpr": 0.047}})}}, _canary_runs())
    assert headline["canary audit, BROKEN CONTROL: no clipping: 95 % lower bound on epsilon (claims 2.95)"] == 5.06
    assert headline["LiRA TPR % at 0.1 % FPR, non-private models"] == 4.7


def test_privacy_recipe_checks_fail_a_recipe_below_its_floor_or_over_its_budget():
    cfg = nb03_privacy.get_config("full")
    dp = SimpleNamespace(extra={"epsilon": 2.99}, report={"accuracy": 0.87})
    lira = SimpleNamespace(tpr_at_fpr={0.001: {"tpr": 0.05, "tpr_ci": (0.03, 0.07), "fpr": 0.001}})
    checks = dict(dp=dp, budget=SimpleNamespace(extra={"epsilon": 1.0, "stopped_by_budget": True}), budget_epsilon=1.0,
                  sched=dp, audit={"single": {}, "lira": {"non-private": lira}, "epsilon": 2.99},
                  canary_runs=_canary_runs())
    recipe = SimpleNamespace(extra={"epsilon": 2.98}, report={"accuracy": 0.9003})
    assert nb03_privacy.quality_failures(cfg, **checks, recipe=recipe) == []
    worse = SimpleNamespace(extra={"epsilon": 3.01}, report={"accuracy": 0.885})
    assert nb03_privacy.quality_failures(cfg, **checks, recipe=worse) == [
        "ScatterNet recipe spent epsilon 3.010 > target 3.0", "ScatterNet recipe accuracy 88.50 % < 89.0 %"]


def test_federated_quality_floors():
    cfg = nb04_federated.get_config("default")
    ok = {"centralized": 87.0, "fedavg_iid": 82.0, "fedavg_non_iid": 78.0}
    assert nb04_federated.quality_failures(cfg, ok) == []
    low = cfg.min_iid_accuracy - 2
    assert nb04_federated.quality_failures(cfg, {**ok, "fedavg_iid": low, "fedavg_non_iid": low + 4}) == [
        f"FedAvg IID reached {low} % (< {cfg.min_iid_accuracy} %)", "non-IID beat IID by more than noise"]
    full = nb04_federated.get_config("full")
    assert "points below centralized" in nb04_federated.quality_failures(full, {**ok, "centralized": 91.0})[0]


def _fed_run(test_acc, val=(0.5, 0.6, 0.7), rounds=6, resumed=0, **extra):
    import pandas as pd

    from lepton_nb.federated.loop import FederatedRun
    from lepton_nb.federated.settings import FedAvgConfig

    h = pd.DataFrame({"round": range(1, rounds + 1), "seconds": 1.0,
                      "test_accuracy": [None] * (rounds - 1) + [test_acc],
                      "val_accuracy": [None] * (rounds - len(val)) + list(val)})
    return FederatedRun("r", h.astype(float).assign(round=range(1, rounds + 1)), None, None, None,
                        FedAvgConfig(num_clients=20, clients_per_round=5, rounds=rounds), "s", dict(extra),
                        resumed_from=resumed)


def test_federated_prose_quotes_the_runs_and_names_the_choice_on_held_out_data():
    results = {"iid": {"FedAvg": _fed_run(0.80)},
               "dirichlet(0.5)": {"FedAvg": _fed_run(0.74, val=(0.7, 0.7, 0.7)),
                                  "FedAdam": _fed_run(0.77, val=(0.72, 0.74, 0.76))}}
    assert nb04_federated.Experiment.best(results["dirichlet(0.5)"]) == "FedAdam"
    text = nb04_federated.comparison_markdown(results, 0.85, 0.75)
    for piece in ("**85.0 %**", "**80.0 %** on the IID split after 6 rounds", "5.0 points below centralized",
                  "**FedAdam** (74.0 % held out", "**77.0 %** on the test set, 3.0 points below IID FedAvg",
                  "FedAvg reached 74.0 % there", "75.0 % first at round 6"):
        assert piece in text, piece
    assert "stopped after round 3" in nb04_federated.resume_markdown(_fed_run(0.8, resumed=3))
    assert "rounds 4-6" in nb04_federated.resume_markdown(_fed_run(0.8, resumed=3))


def test_dp_fedavg_prose_states_epsilon_relation_sampling_and_coverage():
    dp = _fed_run(0.42, rounds=15, epsilon=20.81, epsilon_rdp=24.41, epsilon_pld=20.81, delta=1 / 600,
                  neighbouring="add/remove one client", sampling="Poisson, q = 0.25", noise_multiplier=0.5,
                  params=9098, randomness="private (OS entropy)", epsilon_covers="the global models")
    text = nb04_federated.dp_markdown(dp, _fed_run(0.61))
    for piece in ("**user-level epsilon = 20.81** at delta = 0.0017", "**add/remove one client**",
                  "RDP bound 24.41", "PLD bound 20.81", "Poisson, q = 0.25", "**42.0 %**", "61.0 %",
                  "covers the global models", "private (OS entropy)", "need thousands of clients per round"):
        assert piece in text, piece
    small = _fed_run(0.78, rounds=50, **{**dp.extra, "epsilon": 4.26, "epsilon_pld": 4.26, "epsilon_rdp": 4.98})
    text = nb04_federated.dp_markdown(small, None)
    assert "for an epsilon below 10" in text and "need thousands" not in text
    secure = _fed_run(0.5, rounds=3, execution="simulated", client_to_server_calls=36, only_secure_sums=True,
                      client_to_server_intrinsics=["federated_secure_sum_bitwidth"])
    assert "36 intrinsic calls" in nb04_federated.secure_markdown(secure)
    assert "every one of them is a secure sum" in nb04_federated.secure_markdown(secure)
    leaky = _fed_run(0.5, rounds=3, **{**secure.extra, "only_secure_sums": False})
    assert "**not** all of them" in nb04_federated.secure_markdown(leaky)


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
