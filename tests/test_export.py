"""lepton_nb.export: save a trained model with metadata, reload it, refuse altered files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

import lepton_nb as ln
from lepton_nb import export
from lepton_nb.settings import DataConfig, DistributionOptions, TrainConfig

QUICK = TrainConfig(epochs=1, batch_size=32, early_stopping_patience=None, verbose=0, tensorboard=False)


@pytest.fixture(scope="module")
def trained(tiny):
    return ln.training.train(lambda: ln.models.build_cnn(filters=4, dense_units=16, name="tiny"), tiny, QUICK,
                             data_cfg=DataConfig(validation_fraction=0.0),
                             distribution=DistributionOptions(mixed_precision="mixed_bfloat16"))


def test_save_and_load_round_trip(trained, tiny, tmp_path):
    folder = export.save(trained, tmp_path / "exp", data=tiny, notes={"purpose": "test"})
    model, meta = export.load(folder)
    np.testing.assert_allclose(model.predict(tiny.x_test[:16], verbose=0),
                               trained.model.predict(tiny.x_test[:16], verbose=0), atol=1e-6)
    for a, b in zip(model.get_weights(), trained.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer is not None, "compile state is kept"
    assert meta["metrics"]["accuracy"] == pytest.approx(trained.report["accuracy"])
    assert meta["config"]["batch_size"] == 32 and meta["data"]["train"] == 600
    assert meta["strategy"]["strategy"] == "default" and meta["strategy"]["precision"] == "mixed_bfloat16"
    assert meta["model"]["dtype_policy"] == "mixed_bfloat16" and meta["model"]["output_shape"] == [10]
    assert meta["versions"]["tensorflow"] == tf.__version__ and meta["notes"] == {"purpose": "test"}
    assert json.loads((folder / "metadata.json").read_text()) == meta


def test_a_model_and_a_strategy_can_be_saved_too(trained, tmp_path):
    s = ln.distributed.strategy("cpu", cpu_replicas=1, verbose=False)
    folder = export.save(trained.model, tmp_path / "m", strategy=s, config={"note": 1})
    _, meta = export.load(folder, compile=False)
    assert meta["strategy"]["kind"] == "cpu" and meta["config"] == {"note": 1} and meta["metrics"] is None


def test_errors_name_the_file_and_the_fix(trained, tmp_path):
    folder = export.save(trained, tmp_path / "exp")
    with pytest.raises(export.ExportError, match="already exists; pass overwrite=True"):
        export.save(trained, folder)
    export.save(trained, folder, overwrite=True)
    with (folder / "model.keras").open("ab") as f:
        f.write(b"tampered")
    with pytest.raises(export.ExportError, match="does not match .* recorded at export"):
        export.load(folder)
    with pytest.raises(export.ExportError, match="metadata file not found"):
        export.load(tmp_path / "nowhere")
    with pytest.raises(export.ExportError, match="needs a tf.keras.Model or a TrainResult"):
        export.save({"not": "a model"}, tmp_path / "x")
