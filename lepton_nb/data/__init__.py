"""Data: loaders with validation, splits, tf.data pipelines and augmentation, client partitions.

- :mod:`~lepton_nb.data.loading`: :func:`load` (the bundled sample, the full Fashion-MNIST,
  MedMNIST flags), :func:`load_npz`, :func:`from_config` and the :class:`Dataset` they return;
- :mod:`~lepton_nb.data.checks`: the checks on arrays and files behind :class:`DataError`;
- :mod:`~lepton_nb.data.splits`: :func:`stratified_subset`, :func:`split_validation`,
  :func:`partition` over simulated clients (IID, Dirichlet, label shards);
- :mod:`~lepton_nb.data.pipelines`: :func:`pipeline`, :func:`epoch_indexed_pipeline`,
  :func:`augmenter`, :func:`augmentation_for`, :func:`augmented_examples`; :mod:`~lepton_nb.data.augment`:
  :class:`~lepton_nb.data.augment.RandomPixelShift` (whole-pixel shifts with zero fill).

Importing this package imports numpy only; the pipelines import TensorFlow when they run.
"""

from __future__ import annotations

from lepton_nb.data.checks import DataError, sha256_file, validate_arrays
from lepton_nb.data.loading import (
    BUNDLED_SAMPLE,
    FASHION_MNIST_CLASSES,
    Dataset,
    from_config,
    load,
    load_idx_folder,
    load_medmnist,
    load_npz,
    read_idx,
)
from lepton_nb.data.pipelines import augmentation_for, augmented_examples, augmenter, epoch_indexed_pipeline, pipeline
from lepton_nb.data.splits import partition, split_validation, stratified_subset

__all__ = ["BUNDLED_SAMPLE", "FASHION_MNIST_CLASSES", "DataError", "Dataset", "augmentation_for", "augmented_examples",
           "augmenter", "epoch_indexed_pipeline", "from_config", "load", "load_idx_folder", "load_medmnist",
           "load_npz", "partition", "pipeline", "read_idx", "sha256_file", "split_validation", "stratified_subset",
           "validate_arrays"]
