"""Export a trained model with a metadata file, and load it back (checked).

:func:`save` writes a folder::

    <path>/model.keras       the Keras v3 archive (architecture, weights, compile config)
    <path>/metadata.json     data, training config, metrics, strategy, versions, SHA-256 of model.keras

:func:`load` verifies the checksum before loading, so a truncated or swapped file fails with a
clear error instead of a model with wrong weights. The ``.keras`` format is used rather than a
SavedModel because it round-trips a Keras model exactly (compile state, mixed-precision layer
policies) and is one file; for TF Serving / TFLite, Keras' ``model.export(folder)`` writes a
SavedModel from the loaded model.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lepton_nb.data import sha256_file
from lepton_nb.reports import jsonable

__all__ = ["ExportError", "load", "save", "versions"]

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


class ExportError(ValueError):
    """An export folder is missing, incomplete or altered; the message says which file and what to do."""


def versions() -> dict[str, str]:
    """Python, TensorFlow, Keras, NumPy and lepton_nb versions of this process."""
    import keras
    import tensorflow as tf

    import lepton_nb

    out = {"python": platform.python_version(), "tensorflow": tf.__version__,
           "keras": keras.__version__, "numpy": np.__version__,
           "lepton_nb": lepton_nb.__version__}
    for mod in ("tensorflow_federated", "tensorflow_privacy"):
        if mod in sys.modules:
            out[mod] = getattr(sys.modules[mod], "__version__", "?")
    return out


def save(result, path: str | os.PathLike, *, data=None, config: Any = None, metrics: dict | None = None,
         strategy: Any = None, notes: dict | None = None, overwrite: bool = False) -> Path:
    """Save a model (or a :class:`~lepton_nb.training.TrainResult`) with its metadata.

    Args:
        result: a ``TrainResult`` (its model, config, test metrics and distribution are used) or a
            ``tf.keras.Model``.
        path: the export folder (created).
        data: the :class:`~lepton_nb.data.Dataset` trained on (its ``summary()`` is stored).
        config: any config dataclass or dict to store (default: the result's ``TrainConfig``).
        metrics: figures to store (default: the result's test accuracy / macro recall / macro F1).
        strategy: a ``tf.distribute.Strategy`` or ``StrategyChoice`` (default: the result's).
        notes: anything else worth keeping (JSON-serialisable).
        overwrite: replace an existing export at ``path``.

    Returns:
        The folder path.

    Raises:
        ExportError: when ``path`` already holds an export and ``overwrite`` is False.
    """
    import tensorflow as tf

    is_model = isinstance(result, tf.keras.Model)
    model = result if is_model else getattr(result, "model", None)
    if not isinstance(model, tf.keras.Model):
        raise ExportError(f"save() needs a tf.keras.Model or a TrainResult, got {type(result).__name__}")
    folder = Path(path)
    if (folder / MODEL_FILE).exists() and not overwrite:
        raise ExportError(f"{folder / MODEL_FILE} already exists; pass overwrite=True or choose another folder")
    folder.mkdir(parents=True, exist_ok=True)

    run = None if is_model else result  # a TrainResult's own figures fill what was not given
    if metrics is None and getattr(run, "report", None):
        metrics = {k: float(run.report[k]) for k in ("accuracy", "recall_macro", "f1_macro")}
    if config is None:
        config = getattr(run, "config", None)
    if strategy is None:
        strategy = getattr(run, "distribution", None) or None
    elif isinstance(strategy, tf.distribute.Strategy):
        from lepton_nb.distributed import choice_of

        strategy = choice_of(strategy).as_dict()
    elif hasattr(strategy, "as_dict"):
        strategy = strategy.as_dict()

    model_path = folder / MODEL_FILE
    tmp = folder / (MODEL_FILE + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, model_path)
    meta = {
        "format": "lepton_nb-export-1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"file": MODEL_FILE, "sha256": sha256_file(model_path), "name": model.name,
                  "input_shape": list(model.input_shape[1:]), "output_shape": list(model.output_shape[1:]),
                  "params": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
                  "dtype_policy": model.dtype_policy.name},
        "data": jsonable(data.summary()) if hasattr(data, "summary") else jsonable(data),
        "config": jsonable(config),
        "metrics": jsonable(metrics),
        "strategy": jsonable(strategy),
        "history": jsonable(getattr(run, "history", None)),
        "versions": versions(),
        "notes": jsonable(notes or {}),
    }
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def load(path: str | os.PathLike, *, compile: bool = True):
    """Load an export written by :func:`save`: returns ``(model, metadata)``.

    Raises:
        ExportError: when a file is missing, the metadata is unreadable, or ``model.keras`` does
            not match the SHA-256 recorded at export time.
    """
    import tensorflow as tf

    folder = Path(path)
    meta_path, model_path = folder / METADATA_FILE, folder / MODEL_FILE
    for p, what in ((meta_path, "metadata file"), (model_path, "model file")):
        if not p.is_file():
            raise ExportError(f"{p}: {what} not found; is {folder} a folder written by lepton_nb.export.save()?")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{meta_path}: not valid JSON ({err}); export the model again") from None
    expected = meta.get("model", {}).get("sha256")
    actual = sha256_file(model_path)
    if expected != actual:
        raise ExportError(f"{model_path}: SHA-256 {actual[:16]}... does not match the {str(expected)[:16]}... "
                          "recorded at export; the file was changed or truncated: export the model again")
    model = tf.keras.models.load_model(model_path, compile=compile)
    return model, meta
