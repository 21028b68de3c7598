"""lepton_nb.distributed and the strategy options of lepton_nb.training.train.

The CPU split runs in a fresh process (tests/workers/cpu_replicas_check.py): it is only possible
before TensorFlow's runtime starts, which has long happened in a pytest process. The TPU path is
driven by an injected fake backend: it is untested on a real TPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import lepton_nb as ln
from lepton_nb.distributed import StrategyError, TPUBackend
from lepton_nb.settings import DataConfig, DistributionOptions, SettingsError, TrainConfig
from lepton_nb.stories import nb02_distributed as story

REPO = Path(__file__).resolve().parent.parent
QUICK = TrainConfig(epochs=1, batch_size=32, early_stopping_patience=None, verbose=0, tensorboard=False)
NO_VAL = DataConfig(validation_fraction=0.0)


@pytest.fixture()
def clean_env(monkeypatch):
    """No TPU, cluster or accelerator hints from the environment."""
    for var in ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE", "TF_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(ln.distributed.strategies.glob, "glob", lambda pattern: [])


def _tiny():
    return ln.models.build_cnn(filters=4, dense_units=16, name="tiny")


# ------------------------------------------------------------------------------ choosing


def test_auto_without_accelerators_is_the_default_strategy_and_says_why(clean_env, capsys):
    s = ln.distributed.strategy()
    choice = ln.distributed.choice_of(s)
    assert s is tf.distribute.get_strategy()
    assert (choice.kind, choice.num_replicas, choice.precision) == ("default", 1, "float32")
    assert "because no TPU, GPU, TF_CONFIG cluster or cpu_replicas" in capsys.readouterr().out
    assert s.lepton_choice is choice and "\n" not in choice.line


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "cuda"}, "kind='cuda': choose one of"),
    ({"cpu_replicas": 0}, "cpu_replicas=0: use a positive integer"),
    ({"cpu_replicas": 2, "kind": "tpu"}, "cpu_replicas=2 goes with kind='cpu' or 'auto'"),
])
def test_bad_arguments_raise_before_anything_is_built(kwargs, message):
    with pytest.raises(StrategyError, match=message):
        ln.distributed.strategy(**kwargs)


def test_explicit_kinds_that_are_not_available_raise(clean_env, monkeypatch):
    with pytest.raises(StrategyError, match="kind='tpu' but no TPU"):
        ln.distributed.strategy("tpu")
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(StrategyError, match="kind='gpu' but TensorFlow sees no GPU"):
            ln.distributed.strategy("gpu")
    with pytest.raises(StrategyError, match="kind='multi_worker' but TF_CONFIG is unset"):
        ln.distributed.strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", ln.distributed.tf_config(["127.0.0.1:1"], 0))
    with pytest.raises(StrategyError, match="naming only 1 task"):
        ln.distributed.strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(StrategyError, match="TF_CONFIG is not valid JSON"):
        ln.distributed.strategy()


def test_cpu_split_after_the_runtime_started_raises_a_clear_error():
    cpu = tf.config.list_physical_devices("CPU")[0]
    if tf.config.get_logical_device_configuration(cpu):
        pytest.skip("the CPU was split earlier in this process")
    tf.constant(1.0) + 1.0  # make sure the runtime is up
    with pytest.raises(StrategyError, match=r"runtime is already initialised.*restart the kernel"):
        ln.distributed.strategy(cpu_replicas=2)
    one = ln.distributed.strategy(cpu_replicas=1, verbose=False)  # needs no split
    assert isinstance(one, tf.distribute.MirroredStrategy) and one.num_replicas_in_sync == 1


def test_cpu_replicas_2_in_a_fresh_process_matches_one_device():
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "workers" / "cpu_replicas_check.py")],
                          capture_output=True, text=True, timeout=150, cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["replicas"] == 2 and r["replicas_again"] == 2 and r["kind"] == "cpu"
    assert len(set(r["devices"])) == 2 and all("CPU" in d for d in r["devices"])
    assert r["cpu2_per_replica_batch"] == 32 and r["one_per_replica_batch"] == 64
    # same global batch, seed and data: the mirrored run follows the single-device one closely
    np.testing.assert_allclose(r["cpu2_loss"], r["one_loss"], rtol=1e-3)
    assert r["one_accuracy"] >= 0.70, f"single-device accuracy {r['one_accuracy']:.3f} below 0.70"
    assert abs(r["cpu2_accuracy"] - r["one_accuracy"]) <= 0.02, r
    assert "does not work mirrored over logical CPU devices" in r["xla_error"]
    assert r["comparison_replicas"] == {"1 replica": 1, "2 CPU replicas": 2}
    assert f"test accuracy {100 * r['cpu2_accuracy']:.1f} %" in r["markdown"]


# ------------------------------------------------------------------------------ processes


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_run_workers_sets_tf_config_and_stops_the_others_when_one_fails():
    code = ("import json, os, sys, time; c = json.loads(os.environ['TF_CONFIG']); "
            "assert c['task']['index'] == int(os.environ['LEPTON_NB_WORKER']); print(c['cluster']['worker']); "
            "sys.exit(3) if c['task']['index'] == 0 else time.sleep(60)")
    results = ln.distributed.run_workers([sys.executable, "-c", code], 2, timeout=30)
    assert [r.returncode for r in results] == [3, -9], [r.stderr for r in results]
    assert results[0].stdout.count("127.0.0.1:") == 2
    assert all(_gone(r.pid) for r in results)


def test_run_workers_kills_everything_on_timeout():
    with pytest.raises(TimeoutError, match="did not finish within 1 s") as err:
        ln.distributed.run_workers([sys.executable, "-c", "import time; time.sleep(60)"], 2, timeout=1)
    assert len(err.value.pids) == 2 and all(_gone(p) for p in err.value.pids)


# ------------------------------------------------------------------------------------- TPU


class FakeTPU:
    """Records the calls of the TPU path; its 'strategy' is a real one-device CPU strategy."""

    def __init__(self):
        self.calls: list[tuple[str, object]] = []

    def backend(self) -> TPUBackend:
        def resolver(tpu):
            self.calls.append(("resolve", tpu))
            return f"resolver({tpu})"

        return TPUBackend(
            resolver=resolver,
            connect=lambda r: self.calls.append(("connect", r)),
            initialize=lambda r: self.calls.append(("initialize", r)),
            make_strategy=lambda r: tf.distribute.OneDeviceStrategy("/cpu:0"),
        )


@pytest.mark.parametrize("env, tpu, resolved, connects", [
    ({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, None, "grpc://10.0.0.2:8470", True),
    ({"TPU_NAME": "my-tpu"}, None, "my-tpu", True),
    ({"TPU_ACCELERATOR_TYPE": "v2-8"}, None, "local", False),
    ({}, "local", "local", False),
])
def test_tpu_path_resolves_connects_and_initialises_once(clean_env, monkeypatch, env, tpu, resolved, connects):
    monkeypatch.setattr(ln.distributed.strategies, "_TPU_INITIALISED", {})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fake = FakeTPU()
    for kind in ("auto", "tpu"):
        s = ln.distributed.strategy(kind, tpu=tpu, tpu_backend=fake.backend(), verbose=False)
        choice = ln.distributed.choice_of(s)
        assert choice.kind == "tpu" and choice.precision == "mixed_bfloat16"
    expected = [("resolve", resolved)] + ([("connect", f"resolver({resolved})")] if connects else [])
    expected += [("initialize", f"resolver({resolved})"), ("resolve", resolved)]
    assert fake.calls == expected, "the TPU system must be initialised once per process"


def test_tpu_resolver_failure_names_the_fix(clean_env, monkeypatch):
    monkeypatch.setattr(ln.distributed.strategies, "_TPU_INITIALISED", {})

    def fail(tpu):
        raise ValueError("Please provide a TPU Name to connect to.")

    with pytest.raises(StrategyError, match="could not be resolved.*Cloud TPU VM .* tpu='local'"):
        ln.distributed.strategy("tpu", tpu="nope", tpu_backend=TPUBackend(resolver=fail))


# --------------------------------------------------------------------------- precision


def test_precision_scope_restores_the_global_policy_and_float32_logits():
    before = tf.keras.mixed_precision.global_policy().name
    with ln.distributed.precision_scope("mixed_float16") as name:
        assert name == "mixed_float16"
        model = ln.distributed.float32_logits(_tiny())
    assert tf.keras.mixed_precision.global_policy().name == before
    assert model.get_layer("logits").compute_dtype == "float16"
    assert model.output.dtype == tf.float32
    plain = _tiny()
    assert ln.distributed.float32_logits(plain) is plain
    with pytest.raises(ValueError, match="choose one of float32, mixed_float16, mixed_bfloat16"):
        with ln.distributed.precision_scope("float16"):
            pass


def test_mixed_precision_training_keeps_float32_outputs_and_scales_the_loss(tiny):
    auto = ln.training.train(_tiny, tiny, QUICK, data_cfg=NO_VAL, distribution=DistributionOptions(mixed_precision=True),
                             evaluate_test=False)
    assert auto.distribution["precision"] == "float32"  # CPU: mixed precision does not apply
    r16 = ln.training.train(_tiny, tiny, QUICK, data_cfg=NO_VAL,
                            distribution=DistributionOptions(mixed_precision="mixed_float16"), evaluate_test=False)
    assert isinstance(r16.model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert r16.model.output.dtype == tf.float32 and r16.distribution["precision"] == "mixed_float16"
    rbf = ln.training.train(_tiny, tiny, QUICK, data_cfg=NO_VAL,
                            distribution=DistributionOptions(mixed_precision="mixed_bfloat16"))
    assert not isinstance(rbf.model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert rbf.model.get_layer("conv_0_0").compute_dtype == "bfloat16"
    assert np.isfinite(rbf.history["loss"]).all() and rbf.report["accuracy"] > 0.2


# ------------------------------------------------------------------------ train() options


def test_global_batch_and_learning_rate_scaling(tiny):
    cfg = TrainConfig(epochs=1, batch_size=32, learning_rate=1e-3, early_stopping_patience=None, verbose=0,
                      tensorboard=False)
    for rule, lr in (("none", 1e-3), ("linear", 4e-3), ("sqrt", 2e-3)):
        r = ln.training.train(_tiny, tiny, cfg, data_cfg=NO_VAL, evaluate_test=False,
                              distribution=DistributionOptions(per_replica_batch=128, lr_scaling=rule))
        assert r.distribution["global_batch"] == 128
        assert float(r.model.optimizer.learning_rate) == pytest.approx(lr)
    with pytest.raises(ValueError, match="global batch 6400 is larger than the 600 training examples"):
        ln.training.train(_tiny, tiny, cfg, data_cfg=NO_VAL, distribution=DistributionOptions(per_replica_batch=6400))


def test_steps_per_execution_and_xla_give_the_same_model(tiny, tmp_path):
    ref = ln.training.train(_tiny, tiny, QUICK, data_cfg=NO_VAL, evaluate_test=False, checkpoint_dir=tmp_path)
    assert (tmp_path / "epoch-001.index").exists(), "per-epoch weights checkpoint"
    fast = ln.training.train(_tiny, tiny, QUICK, data_cfg=NO_VAL, evaluate_test=False,
                             distribution=DistributionOptions(steps_per_execution=5, jit_compile=True))
    assert int(fast.model._steps_per_execution.numpy()) == 5 and fast.model.jit_compile
    assert fast.distribution["jit_compile"] and fast.distribution["steps_per_execution"] == 5
    for a, b in zip(ref.model.get_weights(), fast.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_strategy_needs_a_model_function(tiny, tiny_cnn):
    with pytest.raises(ValueError, match="pass a function that builds the model"):
        ln.training.train(tiny_cnn, tiny, QUICK, strategy=tf.distribute.get_strategy())


def test_one_replica_mirrored_matches_the_default_strategy(tiny):
    mirrored = ln.distributed.strategy("cpu", cpu_replicas=1, verbose=False)
    a = ln.training.train(_tiny, tiny, QUICK, data_cfg=NO_VAL, evaluate_test=False)
    b = ln.training.train(_tiny, tiny, QUICK, data_cfg=NO_VAL, evaluate_test=False, strategy=mirrored)
    assert b.distribution["strategy"] == "cpu" and b.distribution["replicas"] == 1
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)


# --------------------------------------------------------------------------------- resume


def test_in_process_interruption_resumes_with_the_same_weights(tiny, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=50, early_stopping_patience=None, verbose=0, tensorboard=False)
    demo = story.interrupt_and_resume(_tiny, tiny, cfg, tmp_path, interrupt_at=2, data_cfg=NO_VAL)
    s = demo.summary()
    assert s["resumed_at_epoch"] == 2 and s["epochs_after_resume"] == 1 and s["total_epochs"] == 3
    assert demo.max_weight_diff < 1e-5
    assert not (tmp_path / "backup" / "chief").exists()
    text = story.resume_markdown(demo)
    assert "resumed at epoch 2 and ran 1 more, 3 in total" in text
    assert story.run_summary(demo.resumed)["replicas"] == 1
    with pytest.raises(ValueError, match="exists from an earlier run"):
        story.interrupt_and_resume(_tiny, tiny, cfg, tmp_path, interrupt_at=1, data_cfg=NO_VAL)


def test_epoch_indexed_pipeline_is_a_function_of_the_epoch(tiny):
    x, y = tiny.x_train[:100], tiny.y_train[:100]
    full = [b.numpy() for _, b in ln.data.epoch_indexed_pipeline(x, y, batch_size=100, epochs=3, seed=1)]
    late = [b.numpy() for _, b in ln.data.epoch_indexed_pipeline(x, y, batch_size=100, epochs=3,
                                                                      start_epoch=2, seed=1)]
    assert len(full) == 3 and len(late) == 1
    np.testing.assert_array_equal(full[2], late[0])
    assert not np.array_equal(full[0], full[1]), "each epoch has its own order"
    assert sorted(full[0].tolist()) == sorted(y.tolist())


def test_notebook_settings_refuse_an_interruption_outside_the_run():
    for which in ("smoke", "default", "full"):
        c = story.get_config(which)
        assert 0 < c.interrupt_at_epoch < c.resume_epochs
    with pytest.raises(SettingsError, match="interrupt_at_epoch=5"):
        story.DistributedConfig(interrupt_at_epoch=5, resume_epochs=4)
