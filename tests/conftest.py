"""Shared fixtures: tiny data and a tiny model, built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import numpy as np
import pytest

#: What some tests need from the machine (Debian packages); .ci/run installs both.
FASHION_MNIST_IDX = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
CHROMIUM = Path("/usr/bin/chromium")


def require(path: Path, what: str) -> None:
    """Skip the calling test when ``path`` is missing, but fail it under ``CI=true``.

    CI installs every machine dependency (.ci/run), so there a missing one is a broken set-up that
    must not turn tests into silent skips.
    """
    if path.exists():
        return
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{path} is missing: {what} (CI=true, where .ci/run installs it, so this is a failure)")
    pytest.skip(f"{path} is missing: {what}")


@pytest.fixture(autouse=True)
def _reports_in_tmp(tmp_path_factory, monkeypatch):
    """Keep tests from writing into the repository's reports/."""
    monkeypatch.setenv("LEPTON_NB_REPORTS", str(tmp_path_factory.getbasetemp() / "reports"))


@pytest.fixture(scope="session")
def sample():
    """The bundled Fashion-MNIST sample (6,000 / 4,000)."""
    import lepton_nb as ln

    return ln.data.load("fashion-mnist")


@pytest.fixture(scope="session")
def tiny(sample):
    """600 train / 200 test images of the bundled sample, stratified."""
    import lepton_nb as ln

    return ln.data.stratified_subset(sample, 600, 200, seed=0)


@pytest.fixture(scope="session")
def random_batch():
    """Eight random 28x28x1 images in [0, 1] and labels, seeded."""
    rng = np.random.default_rng(0)
    return rng.random((8, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 8)


@pytest.fixture()
def tiny_cnn():
    """A fresh three-layer CNN (conv, pool, logits), 28x28x1 -> 10 logits."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        tf.keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        tf.keras.layers.MaxPooling2D(2, name="pool"),
        tf.keras.layers.Flatten(name="flatten"),
        tf.keras.layers.Dense(10, name="logits"),
    ], name="tiny_cnn")


def _assert_drawn(fig, *, min_axes: int = 1) -> None:
    """``fig`` draws itself as a PNG of real content (as notebooks display it), with axes that hold something."""
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000, "no PNG of real content"
    axes = fig.get_axes()
    assert len(axes) >= min_axes, f"{len(axes)} axes, expected at least {min_axes}"
    assert any(ax.lines or ax.images or ax.patches or ax.collections or ax.texts or ax.tables for ax in axes), \
        "the axes are empty"


@pytest.fixture()
def assert_drawn():
    """Check that a lepton_nb figure draws (see :func:`_assert_drawn`)."""
    return _assert_drawn


@pytest.fixture(scope="session")
def small_d2(tiny):
    """A small member of the explained CNN family (two pooled blocks, 8 filters), trained 3 epochs
    on ``tiny``; the explanation tests share it."""
    import lepton_nb as ln
    from lepton_nb.settings import CNNConfig, TrainConfig

    return ln.training.train(lambda: ln.models.build_cnn(CNNConfig(filters=8, depth=2, dense_units=32)), tiny,
                             TrainConfig(epochs=3, verbose=0, tensorboard=False, early_stopping_patience=None),
                             name="small_d2").model


@pytest.fixture(scope="session")
def small_batch(small_d2, tiny):
    """Twelve test images and ``small_d2``'s predicted class for each."""
    from lepton_nb.explain import _common

    x = tiny.x_test[:12]
    return x, _common.predict_logits(small_d2, x).argmax(1).astype(np.int32)
