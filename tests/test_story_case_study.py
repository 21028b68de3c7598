"""Notebook 06's story (lepton_nb.stories.nb06_case_study): settings, federated hospitals, picks of
right and wrong predictions, and the final table beside the seed's claim."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import lepton_nb as ln
from lepton_nb.stories import nb06_case_study as cs
from lepton_nb.settings import CNNConfig
from lepton_nb.metrics import SEED_CLAIM

# ----------------------------------------------------------------------------------------- config


def test_modes_differ_and_scale():
    smoke, default, full = cs.get_config("smoke"), cs.get_config("default"), cs.get_config("full")
    assert (smoke.mode, default.mode, full.mode) == ("smoke", "default", "full")
    assert smoke.data.max_train and default.data.max_train is None and full.data.full
    assert smoke.fedavg.rounds < default.fedavg.rounds < full.fedavg.rounds
    assert smoke.dp_train.epochs < default.dp_train.epochs <= full.dp_train.epochs
    for cfg in (smoke, default, full):
        assert cfg.dp.target_epsilon is not None
        # DP-FedAvg needs more hospitals per round than plain FedAvg (noise on the mean ~ 1 / clients)
        assert cfg.dp_fedavg.clients_per_round >= cfg.fedavg.clients_per_round
        assert cfg.dp_fed.sampling == "poisson" and cfg.dp_fed.private  # McMahan et al.'s sampling, OS entropy


def test_mode_from_environment(monkeypatch):
    monkeypatch.setenv("LEPTON_NB_SMOKE", "1")
    assert cs.get_config().mode == "smoke"
    monkeypatch.delenv("LEPTON_NB_SMOKE")
    monkeypatch.setenv("LEPTON_NB_FULL", "1")
    assert cs.get_config().mode == "full"


def test_path_names_a_medmnist_file():
    cfg = cs.get_config("default", path="/data/bloodmnist.npz")
    assert cfg.data.path == "/data/bloodmnist.npz" and cfg.data.dataset == "bloodmnist" and not cfg.data.full
    assert cs.get_config("full", path="x/pathmnist_28.npz", dataset="pathmnist").data.dataset == "pathmnist"


@pytest.mark.parametrize("change, match", [
    (dict(cpu_replicas=0), "cpu_replicas"),
    (dict(alpha=0.0), "alpha"),
    (dict(min_hospital_size=0), "min_hospital_size"),
    (dict(explain_examples=0), "explain_examples"),
])
def test_bad_settings_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        replace(cs.get_config("smoke"), **change)


def test_dp_needs_a_stated_epsilon_and_paths_must_be_npz():
    cfg = cs.get_config("smoke")
    with pytest.raises(ValueError, match="target_epsilon"):
        replace(cfg, dp=replace(cfg.dp, target_epsilon=None, noise_multiplier=1.0))
    with pytest.raises(ValueError, match=r"\.npz"):
        replace(cfg, data=replace(cfg.data, path="images.csv"))
    with pytest.raises(ValueError, match="mode"):
        cs.get_config("medium")


def test_parameters_cell_does_not_start_tensorflow():
    """The notebook splits the CPU in the cell after the parameters: nothing before may import TF."""
    code = ("import sys, lepton_nb as ln; from lepton_nb.stories import nb06_case_study as cs; cs.get_config('default'); "
            "print(sorted(m for m in ('tensorflow', 'tensorflow_federated', 'tensorflow_privacy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------- right / wrong


def test_right_and_wrong_are_what_they_say_and_spread_over_classes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 20)
    pred = y.copy()
    flip = rng.choice(len(y), 30, replace=False)
    pred[flip] = (pred[flip] + 1) % 5
    right, wrong = ln.metrics.right_and_wrong(y, pred, 5, seed=3)
    assert len(right) == len(wrong) == 5
    assert (y[right] == pred[right]).all() and (y[wrong] != pred[wrong]).all()
    assert len(set(y[right].tolist())) == 5  # one per class before any class repeats
    assert len(set(np.concatenate([right, wrong]).tolist())) == 10


def test_right_and_wrong_with_few_errors_and_bad_input():
    y = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 1, 2, 0, 1, 0])
    right, wrong = ln.metrics.right_and_wrong(y, pred, 4)
    assert len(right) == 4 and wrong.tolist() == [5]
    with pytest.raises(ValueError, match="labels"):
        ln.metrics.right_and_wrong(y, pred[:3], 2)
    with pytest.raises(ValueError, match="k=0"):
        ln.metrics.right_and_wrong(y, pred, 0)
    assert ln.explain.plotting.right_wrong_titles([0, 5], y, pred, ["a", "b", "c"]) == ["right: a", "wrong: c\n(pred. a)"]


# -------------------------------------------------------------------------------------- the table


def _report(acc, rec, f1):
    return {"accuracy": acc, "recall_macro": rec, "f1_macro": f1}


def test_row_gives_percent_and_the_difference_from_the_claim():
    r = cs.row("centralized", _report(0.9, 0.8, 0.85), model="mlp")
    assert (r["accuracy"], r["recall_macro"], r["f1_macro"]) == (90.0, 80.0, 85.0)
    assert r["accuracy - claim"] == round(90.0 - SEED_CLAIM["accuracy"], 1)
    assert r["recall - claim"] == round(80.0 - SEED_CLAIM["recall_macro"], 1)
    assert r["F1 - claim"] == round(85.0 - SEED_CLAIM["f1_macro"], 1)
    assert "epsilon" not in r and r["model"] == "mlp"
    d = cs.row("DP", _report(0.7, 0.7, 0.7), epsilon=2.9987, delta=1e-5, privacy_unit="one image")
    assert d["epsilon"] == 3.0 and d["delta"] == 1e-5 and d["privacy unit"] == "one image"


@pytest.mark.parametrize("args, kwargs, match", [
    (("DP", _report(0.7, 0.7, 0.7)), {}, "epsilon"),
    (("DP-federated", _report(0.7, 0.7, 0.7)), {"epsilon": math.inf}, "epsilon"),
    (("federated", _report(0.7, 0.7, 0.7)), {"epsilon": 1.0}, "not private"),
    (("centralised", _report(0.7, 0.7, 0.7)), {}, "setting"),
    (("centralized", {"accuracy": 0.7}), {}, "recall_macro"),
])
def test_row_refuses_what_would_mislead(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cs.row(*args, **kwargs)


def _rows():
    return {
        "MLP": cs.row("centralized", _report(0.86, 0.85, 0.84)),
        "CNN": cs.row("centralized", _report(0.90, 0.89, 0.88)),
        "DP": cs.row("DP", _report(0.75, 0.74, 0.73), epsilon=3.0, delta=1e-5, privacy_unit="one image"),
        "FedAvg": cs.row("federated", _report(0.80, 0.78, 0.77)),
        "DP-FedAvg": cs.row("DP-federated", _report(0.55, 0.50, 0.45), epsilon=9.3, delta=1e-3,
                            privacy_unit="one hospital"),
    }


def test_comparison_table_puts_the_claim_first_and_blanks_epsilon_where_it_does_not_apply():
    df = cs.comparison_table(_rows())
    assert df.index[0] == "seed article (claimed)"
    assert df.loc["seed article (claimed)", "accuracy %"] == SEED_CLAIM["accuracy"]
    assert list(df.columns[:4]) == ["setting", "accuracy %", "macro recall %", "macro F1 %"]
    assert math.isnan(df.loc["CNN", "epsilon"]) and df.loc["DP-FedAvg", "epsilon"] == 9.3
    assert df.loc["FedAvg", "accuracy - claim"] == round(80 - SEED_CLAIM["accuracy"], 1)
    with pytest.raises(ValueError, match="no rows"):
        cs.comparison_table({})


def test_claim_markdown_quotes_the_rows():
    text = cs.claim_markdown(_rows(), "fashion-mnist-sample")
    assert "fashion-mnist-sample" in text and "**CNN**" in text and "**MLP**" not in text
    assert f"{abs(90 - SEED_CLAIM['accuracy']):.1f} points below" in text
    assert "epsilon 9.3" in text and "one hospital" in text
    assert "DP 15.0, federated 10.0, DP-federated 35.0 points" in text


def test_recorded_rows_fill_the_summary_table_with_epsilon(tmp_path):
    path = tmp_path / "summary.json"
    rows = cs.summary_rows(_rows())
    ln.reports.record(cs.SECTION, {"models": rows}, path=path)
    md = ln.reports.write_markdown(path).read_text()
    section = md.split(f"## {cs.SECTION}")[1]
    header = next(line for line in section.splitlines() if line.startswith("| model"))
    assert "epsilon" in header and "accuracy - claim" in header
    cols = [c.strip() for c in header.strip("|").split("|")]
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
             for line in section.splitlines() if line.startswith("| ") and not line.startswith("| model")}
    assert set(lines) == set(_rows())
    eps = cols.index("epsilon")
    assert lines["DP"][eps] == "3.00" and lines["DP-FedAvg"][eps] == "9.30" and lines["CNN"][eps] == ""
    assert lines["DP"][cols.index("delta")] == "1e-05"  # not the two-decimal "0.00"
    for name, cells in lines.items():  # every figure filled
        for col in ("accuracy %", "macro recall %", "macro F1 %"):
            assert cells[cols.index(col)] != ""
    assert ln.reports.section(cs.SECTION, path=path)["models"]["DP"]["privacy unit"] == "one image"


def test_quality_failures():
    rows = _rows()
    default = cs.get_config("default")
    assert cs.quality_failures(cs.get_config("smoke"), {"x": cs.row("DP", _report(0, 0, 0), epsilon=99)},
                               bundled=True, targets={"x": 1.0}) == []
    fails = cs.quality_failures(default, rows, bundled=True, targets={"DP": 3.0})
    assert fails == []  # 90 >= 85, 75 >= 60, 80 >= 70, 55 >= 35, epsilon 3.0 <= 3.0
    worse = {**rows, "CNN": cs.row("centralized", _report(0.80, 0.8, 0.8)),
             "MLP": cs.row("centralized", _report(0.84, 0.8, 0.8)),
             "DP": cs.row("DP", _report(0.75, 0.74, 0.73), epsilon=3.5, delta=1e-5)}
    fails = cs.quality_failures(default, worse, bundled=True, targets={"DP": 3.0})
    assert len(fails) == 2 and "centralized" in fails[0] and "exceeds its target" in fails[1]
    assert cs.quality_failures(default, worse, bundled=False, targets={"DP": 3.0}) == [fails[1]]


# ------------------------------------------------------------------------------ federated hospitals


def test_federated_hospitals_refuses_impossible_splits_before_any_round(tiny):
    cfg = cs.get_config("smoke")
    with pytest.raises(ValueError, match="200 clients of at least 5 examples need more than the 600"):
        cs.federated_hospitals(tiny, replace(cfg.fedavg, num_clients=200, clients_per_round=2), cfg.fed_model,
                               alpha=0.5, min_size=5)


@pytest.fixture(scope="module")
def hospitals_runs(tiny):
    """A real (tiny) FedAvg and DP-FedAvg run in TFF over non-IID hospitals, one round each."""
    from lepton_nb.federated import runtime

    cfg = cs.get_config("smoke")
    fed = replace(cfg.dp_fedavg, num_clients=4, clients_per_round=2, rounds=1, eval_every=1, test_clients=2)
    small = CNNConfig(filters=4, depth=1, dense_units=0, activation="tanh")
    try:
        plain = cs.federated_hospitals(tiny, fed, small, alpha=0.3, min_size=5, holdout=0.2, name="test_fed")
        dp = cs.federated_hospitals(tiny, fed, small, alpha=0.3, dp=cfg.dp_fed, min_size=5, name="test_dp_fed")
    finally:
        runtime.shutdown()
    return plain, dp, cfg


@pytest.mark.slow
def test_dp_fedavg_over_non_iid_hospitals_runs_and_is_scored_like_the_others(hospitals_runs, tiny):
    from lepton_nb.federated import accounting

    _, out, cfg = hospitals_runs
    h = out.hospitals
    assert h.num_clients == 4 and h.sizes.sum() == len(tiny.y_train) and h.sizes.min() >= 5
    assert h.split == "dirichlet(0.3)" and not h.has_heldout and out.per_hospital is None
    assert out.report["n"] == len(tiny.y_test)
    # the exported Keras model scores what TFF's federated evaluation measured
    assert out.report["accuracy"] == pytest.approx(out.run.test_accuracy, abs=1e-6)
    delta = 1 / (10 * 4)  # user-level delta well below 1 / hospitals
    expected = accounting.dp_fedavg_epsilon(cfg.dp_fed.noise_multiplier, 2, 4, 1, delta, sampling="poisson")
    assert out.epsilon == pytest.approx(expected) and out.delta == pytest.approx(delta)
    assert out.run.extra["neighbouring"] == "add/remove one client"
    s = out.summary()
    assert s["epsilon"] == round(expected, 2) and s["accuracy"] == round(100 * out.report["accuracy"], 2)
    assert {"recall_macro", "f1_macro", "rounds"} <= set(s)
    assert cs.row("DP-federated", out.report, epsilon=out.epsilon, delta=out.delta)["epsilon"] == round(expected, 2)
    with pytest.raises(ValueError, match="does not release"):
        out.hospital_distribution()


@pytest.mark.slow
def test_fedavg_hospitals_report_each_hospitals_accuracy_and_the_prose_quotes_it(hospitals_runs):
    plain, dp, _ = hospitals_runs
    t = plain.per_hospital
    assert len(t) == 4 and (t["heldout_n"] > 0).all() and plain.hospitals.has_heldout
    d = plain.hospital_distribution()
    assert d["heldout"]["min"] == round(100 * t["heldout_accuracy"].min(), 2)
    text = cs.federated_markdown(plain, dp)
    for piece in (f"worst hospital scored **{d['heldout']['min']:.1f} %**", f"epsilon **{dp.epsilon:.2f}**",
                  "add/remove one client", "not shown"):
        assert piece in text, piece


def test_distributed_markdown_quotes_the_runs():
    from types import SimpleNamespace

    dist = SimpleNamespace(epochs_run=7, report={"accuracy": 0.831}, distribution={
        "strategy": "cpu", "replicas": 2, "global_batch": 128, "per_replica_batch": 64.0, "learning_rate": 0.0014142,
        "lr_scaling": "sqrt", "precision": "float32"})
    single = SimpleNamespace(epochs_run=9, report={"accuracy": 0.8717})
    text = cs.distributed_markdown(dist, single)
    for piece in ("**cpu** over 2 replica(s)", "global batch 128 (64 per replica)", "0.0014 (sqrt scaling)",
                  "**83.1 %** after 7 epoch(s)", "87.2 %", "lower"):
        assert piece in text
    better = SimpleNamespace(**{**vars(dist), "report": {"accuracy": 0.9}})
    assert "lower" not in cs.distributed_markdown(better, single) and cs.distributed_markdown(better, single).endswith(".")


def test_headline_names_the_epsilon_and_unit_of_private_settings_only():
    rows = {"CNN": cs.row("centralized", _report(0.87, 0.86, 0.85)),
            "DP CNN": cs.row("DP", _report(0.78, 0.77, 0.76), epsilon=2.9987, delta=1e-5, privacy_unit="one image")}
    assert cs.headline(rows) == {"CNN: test accuracy %": 87.0,
                                 "DP CNN: test accuracy % (epsilon 3.00, delta 1e-05, unit: one image)": 78.0}
