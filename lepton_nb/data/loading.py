"""Loaders with validation: the bundled sample, the full Fashion-MNIST idx files, MedMNIST ``.npz``.

Every loader returns a :class:`Dataset` of float32 NHWC images in [0, 1] and int64 labels, after
checking the file (existence, SHA-256 for the bundled sample) and the arrays (shape, dtype,
finite pixels, label range, same classes in train and test). Problems raise :class:`DataError`
naming the file and the fix, before any training starts.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from lepton_nb.data.checks import (
    DataError,
    _as_images,
    _as_labels,
    _expected_sha256,
    _require_file,
    sha256_file,
    validate_arrays,
)
from lepton_nb.reports import Summary

if TYPE_CHECKING:  # pragma: no cover
    from lepton_nb.settings import DataConfig

__all__ = ["BUNDLED_SAMPLE", "Dataset", "FASHION_MNIST_CLASSES", "from_config", "load", "load_idx_folder",
           "load_medmnist", "load_npz", "read_idx"]


DATA_DIR = Path(__file__).resolve().parents[2] / "data"
BUNDLED_SAMPLE = DATA_DIR / "fashion_mnist_sample.npz"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
#: Where the full Fashion-MNIST idx files are looked for, in order (after a ``path=`` given).
FULL_DATA_DIRS = (
    Path("/usr/share/datasets/fashion-mnist"),
    Path.home() / ".keras" / "datasets" / "fashion-mnist",
)
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
MEDMNIST_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images and labels of one data set, ready for Keras.

    Attributes:
        x_train, x_test: float32 arrays (N, H, W, C) in [0, 1].
        y_train, y_test: int64 arrays (N,) in 0..num_classes-1.
        class_names: one name per class, in label order.
        name: a short identifier such as "fashion-mnist-sample".
        source: where the arrays were read from.
        x_val, y_val: a separate validation split when the source has one (MedMNIST).
        horizontal_flip_ok: whether mirrored images keep their class (used by augmentation).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    name: str
    source: str
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    horizontal_flip_ok: bool = False
    notes: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def class_counts(self, split: str = "train") -> np.ndarray:
        """Examples per class in ``split`` ("train", "test" or "val"), shape (num_classes,)."""
        labels = getattr(self, f"y_{split}")
        return np.bincount(labels, minlength=self.num_classes)

    def summary(self) -> dict:
        """Sizes, shape and source, for tables and reports."""
        out = {
            "name": self.name,
            "source": self.source,
            "train": int(len(self.y_train)),
            "test": int(len(self.y_test)),
            "image_shape": list(self.input_shape),
            "classes": self.num_classes,
        }
        if self.y_val is not None:
            out["val"] = int(len(self.y_val))
        return Summary(out)

    def __repr__(self) -> str:
        s = self.summary()
        return (f"Dataset({s['name']!r}: {s['train']} train / {s['test']} test, "
                f"{tuple(s['image_shape'])}, {s['classes']} classes, from {s['source']})")




def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (optionally gzipped) of uint8 values, e.g. Fashion-MNIST's originals."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: corrupt gzip stream ({err}); download the file again") from None
    if len(raw) < 8 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not a uint8 idx file (header {raw[:4].hex()}); is it the right file?")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path}: truncated or padded idx file ({len(raw)} bytes, header says {expected})")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    return None


def load_idx_folder(folder: str | os.PathLike, *, class_names: Sequence[str] = FASHION_MNIST_CLASSES,
                    name: str = "fashion-mnist") -> Dataset:
    """Load the four (gzipped) idx files of an MNIST-style folder, validated."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; pass the folder holding the four idx files")
    arrays = {}
    for key, stem in IDX_FILES.items():
        found = _find_idx(folder, stem)
        if found is None:
            raise DataError(f"{folder / (stem + '.gz')}: idx file not found; the folder needs "
                            f"{', '.join(s + '.gz' for s in IDX_FILES.values())}")
        arrays[key] = read_idx(found)
    x_tr, y_tr, x_te, y_te = validate_arrays(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
        num_classes=len(class_names), where=str(folder))
    return Dataset(x_tr, y_tr, x_te, y_te, tuple(class_names), name, str(folder), horizontal_flip_ok=True)


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (reports stay machine-independent)."""
    try:
        return str(path.resolve().relative_to(DATA_DIR.parent))
    except ValueError:
        return str(path)


def _load_bundled(path: Path = BUNDLED_SAMPLE) -> Dataset:
    _require_file(path, "bundled Fashion-MNIST sample",
                  "restore it with 'git checkout -- data/' or rebuild it with 'python data/build_sample.py'")
    expected, actual = _expected_sha256(path), sha256_file(path)
    if actual != expected:
        raise DataError(f"{path}: checksum mismatch (sha256 {actual[:16]}..., expected {expected[:16]}...); "
                        "the file is corrupted or was changed: restore it with 'git checkout -- data/' "
                        "or rebuild it with 'python data/build_sample.py'")
    with np.load(path, allow_pickle=False) as z:
        x_tr, y_tr, x_te, y_te = validate_arrays(z["x_train"], z["y_train"], z["x_test"], z["y_test"],
                                                 num_classes=10, where=str(path))
    return Dataset(x_tr, y_tr, x_te, y_te, FASHION_MNIST_CLASSES, "fashion-mnist-sample", _display_path(path),
                   horizontal_flip_ok=True)


def _load_full_fashion_mnist(path: str | os.PathLike | None) -> Dataset:
    folders = [Path(path).expanduser()] if path else list(FULL_DATA_DIRS)
    for folder in folders:
        if folder.is_dir() and all(_find_idx(folder, s) for s in IDX_FILES.values()):
            return load_idx_folder(folder)
    if path:
        return load_idx_folder(path)  # raises the precise DataError
    try:  # Keras downloads into ~/.keras/datasets/fashion-mnist/ when the network allows
        import tensorflow as tf

        tf.keras.datasets.fashion_mnist.load_data()
    except Exception as err:  # noqa: BLE001 - any download failure gets the same advice
        raise DataError(
            "full Fashion-MNIST: no idx files in " + ", ".join(map(str, FULL_DATA_DIRS))
            + f" and the Keras download failed ({type(err).__name__}); on Debian/Ubuntu run "
            "'apt-get install dataset-fashion-mnist', or pass path= a folder with the four idx files"
        ) from None
    return load_idx_folder(FULL_DATA_DIRS[1])


def load_npz(path: str | os.PathLike, *, class_names: Sequence[str] | None = None,
             name: str | None = None, image_size: tuple[int, int] | None = (28, 28)) -> Dataset:
    """Load a MedMNIST-layout ``.npz``: ``{train,val,test}_{images,labels}``, labels (n, 1).

    ``val_*`` is optional. Class names default to those the ``medmnist`` package lists for a file
    named after its flag (e.g. ``bloodmnist.npz``), else "class 0", "class 1", ...
    """
    path = _require_file(Path(path).expanduser(), "MedMNIST .npz file",
                         "check the path, or fetch it with lepton_nb.data.load_medmnist(flag)")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - numpy raises several types for a bad archive
        raise DataError(f"{path}: not a readable .npz archive ({type(err).__name__}: {err})") from None
    with z:
        missing = [k for k in MEDMNIST_KEYS if k not in z.files]
        if missing:
            raise DataError(f"{path}: missing arrays {missing}; a MedMNIST .npz holds "
                            f"{', '.join(MEDMNIST_KEYS)} (and optionally val_images, val_labels)")
        arrays = {k: z[k] for k in z.files}
    flag = name or path.stem.split("_")[0]
    if class_names is None:
        class_names = _medmnist_class_names(flag)
    if class_names is None:
        all_labels = np.concatenate([np.ravel(arrays["train_labels"]), np.ravel(arrays["test_labels"])])
        if not np.issubdtype(all_labels.dtype, np.number) or not np.isfinite(all_labels).all():
            raise DataError(f"{path}: labels must be finite integers")
        class_names = [f"class {i}" for i in range(int(all_labels.max()) + 1)]
    x_tr, y_tr, x_te, y_te = validate_arrays(arrays["train_images"], arrays["train_labels"],
                                             arrays["test_images"], arrays["test_labels"],
                                             num_classes=len(class_names), where=str(path),
                                             image_size=image_size)
    x_val = y_val = None
    if "val_images" in arrays and "val_labels" in arrays:
        x_val = _as_images(np.asarray(arrays["val_images"]), f"{path} [val images]")
        y_val = _as_labels(arrays["val_labels"], len(x_val), len(class_names), f"{path} [val labels]")
    return Dataset(x_tr, y_tr, x_te, y_te, tuple(class_names), flag, str(path), x_val=x_val, y_val=y_val,
                   horizontal_flip_ok=flag in {"pathmnist", "bloodmnist", "dermamnist", "tissuemnist"})


def _medmnist_class_names(flag: str) -> list[str] | None:
    try:
        from medmnist import INFO  # type: ignore[import-not-found]
    except ImportError:
        return None
    info = INFO.get(flag)
    if not info:
        return None
    labels = info["label"]
    return [labels[str(i)] for i in range(len(labels))]


def load_medmnist(flag: str, *, root: str | os.PathLike = "~/.medmnist", download: bool = True) -> Dataset:
    """A named 28x28 MedMNIST set (e.g. "bloodmnist"): ``root/<flag>.npz``, fetched if missing.

    Fetching needs the ``medmnist`` package (``pip install medmnist``) and a network.
    """
    root = Path(root).expanduser()
    path = root / f"{flag}.npz"
    if not path.exists():
        if not download:
            raise DataError(f"{path}: not found and download=False")
        try:
            import medmnist  # type: ignore[import-not-found]
        except ImportError:
            raise DataError(f"{path}: not found, and fetching '{flag}' needs the medmnist package "
                            "('pip install medmnist') and a network; or place the .npz there yourself") from None
        info = medmnist.INFO.get(flag)
        if info is None:
            raise DataError(f"unknown MedMNIST flag {flag!r}; known: {sorted(medmnist.INFO)}")
        root.mkdir(parents=True, exist_ok=True)
        try:
            getattr(medmnist, info["python_class"])(split="train", download=True, root=str(root))
        except Exception as err:  # noqa: BLE001
            raise DataError(f"{path}: download of {flag} failed ({type(err).__name__}: {err}); "
                            "check the network or place the .npz there yourself") from None
    return load_npz(path, name=flag)


def load(name: str = "fashion-mnist", *, full: bool = False, path: str | os.PathLike | None = None) -> Dataset:
    """Load a data set by name.

    Args:
        name: "fashion-mnist" (the bundled 6,000/4,000 stratified sample unless ``full``), or a
            MedMNIST flag ("bloodmnist", "pathmnist", ...) read from ``path`` or ``~/.medmnist``.
        full: the full 60,000/10,000 Fashion-MNIST from local idx files (``path``, Debian's
            ``/usr/share/datasets/fashion-mnist``, ``~/.keras/datasets/fashion-mnist``), or a Keras
            download when online.
        path: a folder of idx files (Fashion-MNIST) or an ``.npz`` file (MedMNIST).

    Returns:
        A validated :class:`Dataset`.
    """
    key = name.lower().replace("_", "-")
    if key in {"fashion-mnist", "fashionmnist"}:
        if full:
            return _load_full_fashion_mnist(path)
        return _load_bundled(Path(path)) if path else _load_bundled()
    if key.endswith("mnist"):
        if path and Path(path).suffix == ".npz":
            return load_npz(path, name=key)
        return load_medmnist(key, root=path or "~/.medmnist")
    raise DataError(f"unknown data set {name!r}: use 'fashion-mnist', a MedMNIST flag such as "
                    "'bloodmnist', or lepton_nb.data.load_npz(path) for your own .npz")


def from_config(cfg: "DataConfig") -> Dataset:
    """Load what a :class:`~lepton_nb.settings.DataConfig` names, subset as it says.

    A ``path`` ending in ``.npz`` is read as a MedMNIST-layout file named ``cfg.dataset`` (unless the
    data set is Fashion-MNIST, whose bundled-sample format it then is); otherwise :func:`load`.
    """
    from lepton_nb.data.splits import stratified_subset

    fashion = cfg.dataset.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist")
    if cfg.path is not None and Path(cfg.path).suffix == ".npz" and not fashion:
        ds = load_npz(cfg.path, name=cfg.dataset)
    else:
        ds = load(cfg.dataset, full=cfg.full, path=cfg.path)
    if cfg.max_train or cfg.max_test:
        ds = stratified_subset(ds, cfg.max_train, cfg.max_test, seed=cfg.seed)
    return ds
