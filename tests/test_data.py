"""lepton_nb.data: the bundled sample, loaders, validation errors, pipelines, partitions."""

from __future__ import annotations

import gzip
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import lepton_nb as ln
from conftest import FASHION_MNIST_IDX, require
from lepton_nb.data import DataError
from lepton_nb.settings import Augmentation, DataConfig


def test_bundled_sample_is_6000_4000_stratified(sample):
    assert sample.x_train.shape == (6000, 28, 28, 1) and sample.x_test.shape == (4000, 28, 28, 1)
    assert sample.x_train.dtype == np.float32 and 0.0 <= sample.x_train.min() and sample.x_train.max() <= 1.0
    assert (sample.class_counts("train") == 600).all() and (sample.class_counts("test") == 400).all()
    assert len(sample.class_names) == 10 and sample.class_names[0] == "T-shirt/top"


def test_bundled_sample_matches_the_original_idx_files(sample):
    require(FASHION_MNIST_IDX, "apt-get install dataset-fashion-mnist")
    src = FASHION_MNIST_IDX.parent
    with np.load(ln.data.BUNDLED_SAMPLE) as z:
        idx = z["index_train"]
    originals = ln.data.read_idx(src / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal((sample.x_train[:50, ..., 0] * 255).round().astype(np.uint8), originals[idx[:50]])


def _copy_sample(tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    dst.mkdir()
    shutil.copy(ln.data.BUNDLED_SAMPLE, dst)
    shutil.copy(ln.data.BUNDLED_SAMPLE.parent / "SHA256SUMS", dst)
    return dst / ln.data.BUNDLED_SAMPLE.name


def test_corrupted_sample_is_rejected_by_checksum(tmp_path):
    path = _copy_sample(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum mismatch"):
        ln.data.load("fashion-mnist", path=path)


def test_missing_sample_names_the_file(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        ln.data.load("fashion-mnist", path=tmp_path / "nope.npz")
    assert "nope.npz" in str(err.value)


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="unknown data set"):
        ln.data.load("imagenet")


def _write_npz(path, n_train=40, n_test=20, *, k=4, labels_2d=True, **override):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n_train).reshape(-1, 1) % k,
        "val_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "val_labels": np.arange(10).reshape(-1, 1) % k,
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(n_test).reshape(-1, 1) % k,
    }
    if not labels_2d:
        arrays = {key: v.ravel() if "labels" in key else v for key, v in arrays.items()}
    arrays.update(override)
    arrays = {key: v for key, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_load_npz_reads_the_medmnist_layout(tmp_path):
    ds = ln.data.load_npz(_write_npz(tmp_path / "bloodmnist.npz"))
    assert ds.x_train.shape == (40, 28, 28, 1) and ds.y_train.shape == (40,)
    assert ds.x_val.shape == (10, 28, 28, 1) and ds.num_classes == 4 and ds.name == "bloodmnist"
    assert ds.y_train.dtype == np.int64 and ds.x_test.max() <= 1.0
    assert ln.data.load("bloodmnist", path=tmp_path / "bloodmnist.npz").num_classes == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"test_labels": None}, "missing arrays"),
        ({"train_images": np.zeros((40, 32, 32), np.uint8)}, "expected 28x28"),
        ({"train_images": np.zeros((40, 28, 28), np.int32)}, "dtype int32"),
        ({"train_images": np.full((40, 28, 28), np.nan, np.float32)}, "NaN or infinite"),
        ({"train_images": np.full((40, 28, 28), np.inf, np.float32)}, "NaN or infinite"),
        ({"train_images": np.full((40, 28, 28), 3.0, np.float32)}, r"\[0, 1\]"),
        ({"train_labels": np.zeros((39, 1), np.int64)}, "39 labels for 40 images"),
        ({"test_labels": np.full((20, 1), -1)}, r"must lie in 0\.\.|labels must be >= 0|0\.\."),
        ({"train_labels": np.zeros((40, 3), np.int64)}, "multi-label"),
    ],
)
def test_bad_npz_inputs_raise_clear_errors(tmp_path, override, message):
    path = _write_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(DataError, match=message) as err:
        ln.data.load_npz(path)
    assert "bad.npz" in str(err.value)


def test_labels_outside_the_named_classes(tmp_path):
    path = _write_npz(tmp_path / "bad.npz", k=4)
    with pytest.raises(DataError, match=r"0\.\.2, found 0\.\.3"):
        ln.data.load_npz(path, class_names=["a", "b", "c"])


def test_train_and_test_with_different_classes(tmp_path):
    path = _write_npz(tmp_path / "bad.npz", test_labels=np.zeros((20, 1), np.int64))
    with pytest.raises(DataError, match="different classes"):
        ln.data.load_npz(path)


def test_not_an_npz_file(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        ln.data.load_npz(path)


def _write_idx_folder(folder: Path, x_train, y_train, x_test, y_test):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in zip(ln.data.loading.IDX_FILES.values(), (x_train, y_train, x_test, y_test)):
        header = b"\x00\x00\x08" + bytes([arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        (folder / f"{stem}.gz").write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))
    return folder


def test_full_loader_reads_an_idx_folder(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (30, 28, 28)), np.arange(30) % 10
    folder = _write_idx_folder(tmp_path / "fm", x, y, x[:20], y[:20])
    ds = ln.data.load("fashion-mnist", full=True, path=folder)
    assert ds.x_train.shape == (30, 28, 28, 1)
    np.testing.assert_array_equal((ds.x_train[..., 0] * 255).round(), x)


def test_truncated_idx_file_is_rejected(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (30, 28, 28)), np.arange(30) % 10
    folder = _write_idx_folder(tmp_path / "fm", x, y, x[:20], y[:20])
    f = folder / "train-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-100]))
    with pytest.raises(DataError, match="truncated"):
        ln.data.load("fashion-mnist", full=True, path=folder)


def test_missing_idx_file_is_named(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        rng = np.random.default_rng(1)
        x, y = rng.integers(0, 256, (30, 28, 28)), np.arange(30) % 10
        folder = _write_idx_folder(tmp_path / "fm", x, y, x[:20], y[:20])
        (folder / "t10k-images-idx3-ubyte.gz").unlink()
        ln.data.load("fashion-mnist", full=True, path=folder)


def test_full_fashion_mnist_from_debian():
    require(FASHION_MNIST_IDX, "apt-get install dataset-fashion-mnist")
    ds = ln.data.load("fashion-mnist", full=True)
    assert len(ds.y_train) == 60_000 and len(ds.y_test) == 10_000
    assert (ds.class_counts("train") == 6000).all()


def test_stratified_subset_keeps_every_class(sample):
    small = ln.data.stratified_subset(sample, 100, 50, seed=3)
    assert len(small.y_train) == 100 and len(small.y_test) == 50
    assert (small.class_counts("train") == 10).all() and (small.class_counts("test") == 5).all()


def test_split_validation_is_stratified_and_disjoint(tiny):
    x_tr, y_tr, x_val, y_val = ln.data.split_validation(tiny.x_train, tiny.y_train, 0.1, seed=0)
    assert len(y_val) == 60 and len(y_tr) == 540
    assert (np.bincount(y_val, minlength=10) == 6).all()


def test_pipeline_batches_scales_and_drops_remainder():
    x = np.full((10, 28, 28), 255, np.uint8)
    y = np.arange(10)
    batches = list(ln.data.pipeline(x, y, batch_size=4, shuffle=False))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert float(batches[0][0].numpy().max()) == 1.0 and batches[0][0].shape[1:] == (28, 28, 1)
    dropped = list(ln.data.pipeline(x, y, batch_size=4, drop_remainder=True))
    assert [b[0].shape[0] for b in dropped] == [4, 4]
    with pytest.raises(ValueError, match="leaves no batch"):
        ln.data.pipeline(x, y, batch_size=11, drop_remainder=True)


def test_augmentation_changes_images_but_not_labels(tiny):
    aug = Augmentation(rotation=0.05, shift=0.1, horizontal_flip=True)
    plain = next(iter(ln.data.pipeline(tiny.x_train[:32], tiny.y_train[:32], batch_size=32, shuffle=False)))
    moved = next(iter(ln.data.pipeline(tiny.x_train[:32], tiny.y_train[:32], batch_size=32, shuffle=False,
                                       augment=aug)))
    np.testing.assert_array_equal(plain[1], moved[1])
    assert moved[0].shape == plain[0].shape
    assert not np.allclose(plain[0], moved[0])


def test_partition_iid_covers_everything_once():
    labels = np.repeat(np.arange(10), 50)
    parts = ln.data.partition(labels, 7, seed=1)
    assert len(parts) == 7 and all(len(p) > 0 for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(500))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_partition_dirichlet_is_skewed_and_nonempty():
    labels = np.repeat(np.arange(10), 100)
    skewed = ln.data.partition(labels, 10, alpha=0.1, seed=0)
    even = ln.data.partition(labels, 10, alpha=100.0, seed=0)
    np.testing.assert_array_equal(np.sort(np.concatenate(skewed)), np.arange(1000))
    assert all(len(p) >= 1 for p in skewed)

    def classes_per_client(parts):  # classes holding >= 5 % of a client's data
        return np.mean([(np.bincount(labels[p], minlength=10) / len(p) >= 0.05).sum() for p in parts])

    assert classes_per_client(skewed) < classes_per_client(even)
    assert ln.data.partition(labels, 10, alpha=0.1, seed=0)[3].tolist() == skewed[3].tolist()


def test_partition_shards_give_few_labels_per_client():
    labels = np.repeat(np.arange(10), 60)
    parts = ln.data.partition(labels, 10, shards_per_client=2, seed=0)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(600))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_clients": 0}, "at least one client"),
    ({"num_clients": 5, "alpha": 0.0}, "must be > 0"),
    ({"num_clients": 5, "alpha": -1.0}, "must be > 0"),
    ({"num_clients": 50}, "cannot give 50 clients"),
    ({"num_clients": 2, "alpha": 1.0, "shards_per_client": 2}, "not both"),
])
def test_partition_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ln.data.partition(np.arange(20) % 2, **kwargs)


# --------------------------------------------------------------------------- MedMNIST and augmentation


def _medmnist_npz(path, *, n_train=60, n_test=30, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("val", 20), ("test", n_test)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def test_from_config_reads_a_medmnist_npz_and_subsets_it(tmp_path):
    path = _medmnist_npz(tmp_path / "toymnist.npz")
    cfg = DataConfig(dataset="toymnist", path=str(path))
    ds = ln.data.from_config(cfg)
    assert ds.name == "toymnist" and ds.num_classes == 4 and len(ds.y_train) == 60
    assert ds.x_val is not None and len(ds.y_val) == 20  # MedMNIST's own validation split is kept
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    small = ln.data.from_config(replace(cfg, max_train=20, max_test=8))
    assert len(small.y_train) == 20 and len(small.y_test) == 8
    assert np.bincount(small.y_train).tolist() == [5, 5, 5, 5]  # stratified


def test_from_config_default_is_the_bundled_sample_and_missing_files_are_named(tmp_path):
    ds = ln.data.from_config(DataConfig(max_train=600, max_test=300))
    assert ds.name == "fashion-mnist-sample" and len(ds.y_train) == 600
    with pytest.raises(ln.data.DataError, match="nowhere.npz"):
        ln.data.from_config(DataConfig(dataset="nowhere", path=str(tmp_path / "nowhere.npz")))


def test_augmentation_drops_the_flip_where_mirroring_changes_meaning(tiny, tmp_path):
    aug = Augmentation(rotation=0.03, shift=0.08, horizontal_flip=True)
    kept, why = ln.data.augmentation_for(tiny, aug)
    assert kept.horizontal_flip and "flip" in why  # clothing is mirror-invariant
    xray = ln.data.load_npz(_medmnist_npz(tmp_path / "chestxray.npz"))
    assert not xray.horizontal_flip_ok
    dropped, why = ln.data.augmentation_for(xray, aug)
    assert not dropped.horizontal_flip and (dropped.rotation, dropped.shift) == (0.03, 0.08)
    assert "not mirror-invariant" in why
    assert ln.data.augmentation_for(tiny, None) == (None, "no augmentation")


def test_augmented_examples_are_changed_copies_of_each_class(tiny):
    x, y = ln.data.augmented_examples(tiny, Augmentation(rotation=0.05, shift=0.1), per_class=3, seed=1)
    assert x.shape == (30, 28, 28, 1) and x.dtype == np.float32
    assert np.bincount(y, minlength=10).tolist() == [3] * 10
    assert 0 <= x.min() and x.max() <= 1 + 1e-6
    # the same images without augmentation differ from the augmented ones
    x0, _ = ln.data.augmented_examples(tiny, Augmentation(rotation=0.0, shift=0.0), per_class=3, seed=1)
    assert np.abs(x - x0).mean() > 0.01


def test_a_missing_machine_dependency_skips_locally_but_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require(tmp_path / "absent", "apt-get install it")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install it"):
        require(tmp_path / "absent", "apt-get install it")
    require(tmp_path, "an existing path passes")
