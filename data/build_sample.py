"""Build the bundled Fashion-MNIST sample (6,000 train / 4,000 test, stratified by class).

Reads the original idx files (Debian's ``dataset-fashion-mnist`` installs them in
``/usr/share/datasets/fashion-mnist/``; Keras caches the same four files in
``~/.keras/datasets/fashion-mnist/``) and writes ``fashion_mnist_sample.npz`` next to this
script, byte-for-byte reproducible (fixed zip timestamps), then prints its SHA-256 for
``SHA256SUMS``.

    python data/build_sample.py [--source DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "fashion_mnist_sample.npz"
SOURCES = (Path("/usr/share/datasets/fashion-mnist"), Path.home() / ".keras/datasets/fashion-mnist")
PER_CLASS = {"train": 600, "test": 400}
SEED = 20240601


def read_idx(path: Path) -> np.ndarray:
    """Parse a (gzipped) idx file: big-endian magic 0x0000 08 <ndim>, dims, uint8 payload."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not a uint8 idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picks))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, but with fixed timestamps so the file hash is reproducible."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="folder with the four idx(.gz) files")
    args = parser.parse_args()
    candidates = [args.source] if args.source else list(SOURCES)
    src = next((d for d in candidates if (d / "train-images-idx3-ubyte.gz").exists()), None)
    if src is None:
        raise SystemExit(f"no Fashion-MNIST idx files in {candidates}; apt-get install dataset-fashion-mnist")
    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(src / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(src / f"{prefix}-labels-idx1-ubyte.gz")
        idx = stratified(y, PER_CLASS[split], rng)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[idx], y[idx]
        arrays[f"index_{split}"] = idx.astype(np.int32)  # positions in the original files
    write_npz(OUT, arrays)
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    (HERE / "SHA256SUMS").write_text(f"{digest}  {OUT.name}\n")
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes) sha256 {digest}")


if __name__ == "__main__":
    main()
