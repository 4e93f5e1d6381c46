"""Datasets held whole in memory as uint8 NHWC, and a batch order that is a pure
function of (seed, batch index) so that a resumed run sees exactly the batches
an uninterrupted run would have seen.

Sources: a folder of the four standard IDX ``.gz`` files (offline), TFDS
(imported lazily: TensorFlow is only needed to download and prepare), or an
in-memory synthetic set for tests.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "DCGAN_JAX_DATA_DIR"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_UBYTE = 0x08
IMAGE_SHAPES = {"fashion_mnist": (28, 28, 1), "mnist": (28, 28, 1), "synthetic": (28, 28, 1)}


class DataError(RuntimeError):
    """A dataset that cannot be read; the message names the file or the fix."""


def read_idx(path: str | os.PathLike, expected_ndim: int) -> np.ndarray:
    """Reads a gzip-compressed IDX file of unsigned bytes, checking its header and size."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file not found: {path}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}); the download may be truncated or corrupt") from e
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _IDX_UBYTE or ndim != expected_ndim:
        raise DataError(
            f"{path}: bad IDX header (magic {raw[:4].hex()}); expected unsigned-byte data with "
            f"{expected_ndim} dimensions (magic 000008{expected_ndim:02x})"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(shape))
    if len(raw) - header_len != expected:
        raise DataError(
            f"{path}: header promises shape {shape} ({expected} bytes) but the file holds "
            f"{len(raw) - header_len} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, np.uint8, offset=header_len).reshape(shape)


def load_idx_folder(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 1) uint8 and labels (N,) from a folder of IDX files."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"dataset.data_dir {data_dir} is not a folder")
    image_file, label_file = IDX_FILES[split]
    images = read_idx(data_dir / image_file, expected_ndim=3)
    labels = read_idx(data_dir / label_file, expected_ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{data_dir}: {len(images)} images in {image_file} but {len(labels)} labels in {label_file}")
    return images[..., None], labels


def load_tfds(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads a TFDS dataset with ``tfds.data_source`` (downloading it first if needed)."""
    import tensorflow_datasets as tfds
    from absl import logging

    logging.info(
        "No dataset.data_dir: reading %s/%s through TFDS, which downloads and prepares it on first use. "
        "Offline this fails after some minutes of retries; use --config.dataset.data_dir=DIR or %s instead.",
        name,
        split,
        DATA_DIR_ENV,
    )
    try:
        source = tfds.data_source(name, split=split)
    except Exception as e:  # TFDS raises many types for "cannot download / prepare".
        raise DataError(
            f"TFDS could not provide {name}/{split} ({type(e).__name__}: {e}).\n"
            f"Without internet, point the run at a folder of the four IDX .gz files: "
            f"--config.dataset.data_dir=/path/to/{name} or {DATA_DIR_ENV}=/path/holding/{name}/"
        ) from e
    records = [source[i] for i in range(len(source))]
    images = np.stack([r["image"] for r in records]).astype(np.uint8)
    labels = np.array([r["label"] for r in records], dtype=np.int64)
    return images, labels


def synthetic_images(num: int, seed: int, shape=(28, 28, 1)) -> tuple[np.ndarray, np.ndarray]:
    """Blurry bright rectangles on black: structured enough for a GAN to learn in a few steps."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    images = np.zeros((num, h, w, c), np.uint8)
    labels = rng.integers(0, 10, size=num)
    for i in range(num):
        top, left = rng.integers(2, h // 2, size=2)
        height, width = rng.integers(h // 4, h // 2, size=2)
        images[i, top : top + height, left : left + width] = rng.integers(128, 256)
    return images, labels


def resolve_data_dir(dataset_config) -> Path | None:
    """The IDX folder to read, or None to use TFDS."""
    if dataset_config.data_dir:
        return Path(dataset_config.data_dir).expanduser()
    root = os.environ.get(DATA_DIR_ENV)
    if root:
        return Path(root).expanduser() / dataset_config.name
    return None


def load_dataset(dataset_config, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The configured split as (images uint8 NHWC, labels)."""
    if dataset_config.name == "synthetic":
        return synthetic_images(dataset_config.num_synthetic, seed, IMAGE_SHAPES["synthetic"])
    data_dir = resolve_data_dir(dataset_config)
    if data_dir is None:
        return load_tfds(dataset_config.name, dataset_config.split)
    return load_idx_folder(data_dir, dataset_config.split)


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] to float32 [-1, 1], the generator's tanh range."""
    return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


class BatchOrder:
    """Batch ``i`` of a run: epochs of a fresh permutation drawn from (seed, epoch).

    Stateless, so resuming at any step needs nothing but the step. The last
    partial batch of each epoch is dropped so that every batch has the same shape.
    """

    def __init__(self, images: np.ndarray, batch_size: int, seed: int):
        if len(images) < batch_size:
            raise DataError(f"the dataset has {len(images)} images, fewer than one batch of {batch_size}")
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = len(images) // batch_size
        self._epoch = -1
        self._permutation = None

    def indices(self, batch_index: int) -> np.ndarray:
        epoch, position = divmod(batch_index, self.batches_per_epoch)
        if epoch != self._epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
            self._epoch = epoch
        start = position * self.batch_size
        return self._permutation[start : start + self.batch_size]

    def batch(self, batch_index: int, rows: slice = slice(None)) -> np.ndarray:
        """Float32 images in [-1, 1], shape (batch_size, H, W, C); only ``rows`` of it when given
        (a process's share of a global batch)."""
        return to_model_range(self.images[self.indices(batch_index)[rows]])
