"""Datasets held whole in memory as uint8 NHWC, from a folder of the four IDX files, TFDS
(imported only to download and prepare), a folder of image files or a synthetic set; and a batch
order that is a pure function of (seed, batch index), so a resumed run sees the same batches."""

import dataclasses
import glob
import gzip
import math
import os
import socket
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np
from absl import logging

from dcgan_jax.gan import RunError

DATA_DIR_ENV = "DCGAN_JAX_DATA_DIR"
TFDS_HOST = "storage.googleapis.com"  # Where TFDS downloads from.
TFDS_GRACE_SECONDS = 5  # A prepared or mocked dataset answers sooner; then: online, or fail.
TFDS_MAX_SECONDS = 3600
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_UBYTE = 0x08
IDX_NUM_CLASSES = 10  # Both have classes 0..9; any other label byte is damage.
SYNTHETIC_SHAPE = (28, 28, 1)
DEFAULT_IMAGE_SIZE = 64  # celeb_a and image_folder: the DCGAN paper's size.
CELEB_A_CROP = 140  # Central square of CelebA's 178x218 images holding the face, before resizing.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
READ_PROGRESS_EVERY = 1000  # Image files per progress line: a folder of photos takes minutes.
# Raised whenever files are read into other pixels (16-bit grey, formats, EXIF, grey by content):
# a data folder's cached reference features are named for it.
READING_VERSION = 4
# image_folder: above this share of broken files, stop rather than skip.
MAX_UNREADABLE_FRACTION = 0.1


class DataError(RunError, RuntimeError):
    """A dataset that cannot be read; the message names the file or the fix."""


def read_idx(path: str | os.PathLike, expected_ndim: int) -> np.ndarray:
    """Reads an IDX file of unsigned bytes, gzip-compressed or (``path`` less ``.gz``) unpacked, as
    gunzip, torchvision and Kaggle leave them; checks its header and size."""
    path = Path(path)
    if not path.is_file() and path.with_suffix("").is_file():
        path = path.with_suffix("")
    if not path.is_file():
        raise DataError(f"IDX file not found: {path} (dataset.split=train: train-*; test: t10k-*)")
    try:
        raw = path.read_bytes()
        if raw.startswith(b"\x1f\x8b"):  # gzip's magic.
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path}: not a readable gzip file ({e}); the download may be truncated or corrupt"
        ) from e
    header_len = 4 + 4 * expected_ndim
    if raw[:4] != bytes([0, 0, _IDX_UBYTE, expected_ndim]) or len(raw) < header_len:
        raise DataError(
            f"{path}: bad IDX header (magic {raw[:4].hex()}, {len(raw)} bytes); expected "
            f"unsigned-byte data with {expected_ndim} dimensions (magic 000008{expected_ndim:02x})"
        )
    shape = struct.unpack(f">{expected_ndim}I", raw[4:header_len])
    if len(raw) - header_len != (expected := math.prod(shape)):
        raise DataError(
            f"{path}: header promises shape {shape} ({expected} bytes) but the file holds "
            f"{len(raw) - header_len} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, np.uint8, offset=header_len).reshape(shape)


def load_idx_folder(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 1) uint8 and labels (N,) from a folder of IDX files."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"{data_dir} is not a folder (the IDX files' folder: --config.dataset.data_dir or a "
            f"command's --data_dir, else ${DATA_DIR_ENV} joined with the dataset's name)"
        )
    image_file, label_file = IDX_FILES[split]
    images = read_idx(data_dir / image_file, expected_ndim=3)
    labels = read_idx(data_dir / label_file, expected_ndim=1)
    if (bad := np.flatnonzero(labels >= IDX_NUM_CLASSES)).size:
        raise DataError(
            f"{data_dir / label_file}: {bad.size} labels outside 0..{IDX_NUM_CLASSES - 1} (e.g. "
            f"{int(labels[bad[0]])} at index {bad[0]}); the file is corrupt: fetch it again"
        )
    return images[..., None], labels


def _tfds_source(name: str, split: str, data_dir):
    """``tfds.data_source``, which downloads and prepares on first use, with bounds: offline (the
    download host cannot be reached) it fails after ``TFDS_GRACE_SECONDS`` rather than retrying for
    minutes; online it may take ``TFDS_MAX_SECONDS``."""
    import tensorflow_datasets as tfds

    found = {}

    def fetch():
        try:
            found["source"] = tfds.data_source(name, split=split, data_dir=data_dir)
        except Exception as e:  # TFDS raises many types for "cannot download / prepare".
            found["error"] = e

    worker = threading.Thread(target=fetch, daemon=True)  # Left behind when a bound ends the wait.
    worker.start()
    worker.join(TFDS_GRACE_SECONDS)
    online = not worker.is_alive() or _online()
    worker.join(TFDS_MAX_SECONDS if online else 0)
    if "source" in found:
        return found["source"]
    e = found.get("error") or TimeoutError(f"no answer within {TFDS_MAX_SECONDS} s")
    if not online:
        e = ConnectionError(f"{TFDS_HOST} cannot be reached: no internet?")
    raise DataError(
        f"TFDS could not provide {name}/{split} ({type(e).__name__}: {e}).\n"
        "Without internet, point the run at a copy on disk: (fashion_)mnist's four IDX files "
        f"in --config.dataset.data_dir=DIR (a command's --data_dir) or {DATA_DIR_ENV}/<name>/, "
        f"any other's TFDS data folder with {name} prepared in --config.dataset.data_dir=DIR"
    ) from e


def _online():
    try:
        socket.create_connection((TFDS_HOST, 443), timeout=5).close()
    except OSError:
        return False
    return True


def load_tfds(
    name: str, split: str, image_size: int = 0, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A TFDS dataset in memory (downloaded first if needed); celeb_a cropped to its central face
    square, resized to ``image_size``, every label 0."""
    logging.info(
        f"No dataset.data_dir: reading {name}/{split} through TFDS (use "
        f"--config.dataset.data_dir=DIR or {DATA_DIR_ENV} for files on disk)."
    )
    source = _tfds_source(name, split, str(data_dir) if data_dir else None)
    images, labels = [], []
    for record in source:
        image = np.asarray(record["image"], np.uint8)
        if name == "celeb_a":
            image = crop_and_resize(image, image_size or DEFAULT_IMAGE_SIZE, crop=CELEB_A_CROP)
        images.append(image)
        labels.append(int(record.get("label", 0)))
    return np.stack(images), np.array(labels, dtype=np.int64)


def crop_and_resize(image: np.ndarray, size: int, crop: int | None = None) -> np.ndarray:
    """The central ``crop`` square (default: the shorter side) of an HWC uint8 image, resized to
    ``size`` x ``size`` with a bicubic filter (antialiased when shrinking)."""
    from PIL import Image

    height, width = image.shape[:2]
    side = min(crop or height, height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    channels = square.shape[2]
    pil = Image.fromarray(square[..., 0] if channels == 1 else square)
    resized = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC), np.uint8)
    return resized.reshape(size, size, channels)


def files_under(folder: Path) -> list[Path]:
    """The files under ``folder`` but hidden ones, through linked folders (a class folder linked
    in from elsewhere); one reached on several paths (a link back up) once, by the shortest."""
    paths = map(folder.joinpath, glob.glob("**", root_dir=folder, recursive=True))
    # Deepest first: of the paths to one file, the shortest is written last, and kept.
    deepest_first = sorted(paths, key=lambda p: (len(p.parts), p), reverse=True)
    return sorted({p.resolve(): p for p in deepest_first if p.is_file()}.values())


def _image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (by suffix, :data:`IMAGE_SUFFIXES`); none is a DataError
    naming what is there instead."""
    if not folder.is_dir():
        raise DataError(f"dataset.data_dir {folder} is not a folder")
    files = files_under(folder)
    paths = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        found = ""
        if files:
            others = ", ".join(p.name for p in files[:3]) + (", ..." if len(files) > 3 else "")
            found = f"; it holds {len(files)} other files ({others})"
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}{found}")
    return paths


def _read_pictures(folder: Path, paths: list[Path], size: int) -> list[tuple[Path, np.ndarray]]:
    """(path, pixels: HW1 if grey, else HW3) of each readable file, cropped and resized to ``size``
    as it is read: memory holds the images at their training size, not the files' (a folder of
    megapixel photos would not fit). A few unreadable files are skipped with a warning, over a
    tenth is a DataError."""
    from PIL import Image, ImageOps

    pictures, unreadable = [], []
    for count, path in enumerate(paths, 1):
        if count % READ_PROGRESS_EVERY == 0:
            logging.info("Reading %s: %d of %d image files", folder, count, len(paths))
        try:
            with Image.open(path) as picture:
                picture.load()
                picture = ImageOps.exif_transpose(picture)  # Photos shot turned, as they are seen.
                if picture.mode.startswith("I"):  # 16 bits: "L" would clip at 255, not scale.
                    picture = picture.convert("I").point(lambda v: v / 257 + 0.5)
                pixels = np.asarray(picture.convert("RGB"))
                if (pixels == pixels[..., :1]).all():  # Grey, however stored (a palette, RGB).
                    pixels = pixels[..., :1]
        # PIL raises many types (a decompression bomb, SyntaxError, struct.error): one unreadable.
        except Exception as e:
            unreadable.append((path, e))
            continue
        pictures.append((path, crop_and_resize(pixels, size)))
    if not unreadable:
        return pictures
    path, error = unreadable[0]
    which = f"{len(unreadable)} of {len(paths)} image files under {folder}"
    if len(unreadable) > MAX_UNREADABLE_FRACTION * len(paths):
        raise DataError(f"{which} cannot be read, e.g. {path}: {error}")
    logging.warning("Skipped %s that cannot be read, e.g. %s: %s", which, path, error)
    return pictures


def load_image_folder(
    folder: str | os.PathLike, image_size: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Every image file under ``folder``, centre-cropped and resized, uint8 NHWC (grey if all are,
    else RGB); labels: the top-level sub-folder's index when there are two or more, else 0. A few
    unreadable files are skipped with a warning; over a tenth, or no image, is a DataError."""
    folder = Path(folder).expanduser()
    size = image_size or DEFAULT_IMAGE_SIZE
    paths = _image_files(folder)
    classes = sorted({p.relative_to(folder).parts[0] for p in paths if p.parent != folder})
    loose = [p.name for p in paths if p.parent == folder]
    if len(classes) >= 2 and loose:  # Checked before minutes of reading.
        raise DataError(
            f"{folder} has class sub-folders and also {len(loose)} images beside them "
            f"({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}), which would belong to "
            "no class: move them into a class's folder"
        )
    pictures = _read_pictures(folder, paths, size)
    shape = (size, size, max(pixels.shape[2] for _, pixels in pictures))
    images = np.stack([np.broadcast_to(pixels, shape) for _, pixels in pictures])
    if len(classes) < 2:
        return images, np.zeros(len(images), np.int64)
    labels = [classes.index(path.relative_to(folder).parts[0]) for path, _ in pictures]
    logging.info("image_folder %s: %d classes: %s", folder, len(classes), ", ".join(classes))
    return images, np.array(labels, np.int64)


def synthetic_images(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Blurry bright rectangles on black, 28x28x1: structured enough for a GAN to learn in a few
    steps."""
    rng = np.random.default_rng(seed)
    h, w, c = SYNTHETIC_SHAPE
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
    return Path(root).expanduser() / dataset_config.name if root else None


def _idx_or_tfds(dataset_config, seed: int):
    """Fashion-MNIST or MNIST from a folder of IDX files when one is given or found (then set as
    ``dataset_config.data_dir``, so the run records where its images are), else TFDS."""
    data_dir = resolve_data_dir(dataset_config)
    if not data_dir:
        return _tfds(dataset_config, seed)
    dataset_config.data_dir = str(data_dir)
    return load_idx_folder(data_dir, dataset_config.split)


def _tfds(config, seed: int):
    """A TFDS dataset; ``dataset.data_dir``, if any, is a TFDS data folder holding it prepared."""
    return load_tfds(config.name, config.split, config.image_size, config.data_dir)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset a run can train on. ``load(dataset_config, seed)``: (uint8 NHWC images, int labels)
    of ``dataset_config.split``, held in memory. ``labelled``: whether its labels are classes, as a
    conditional model needs (``labels_are`` says what they are, for the error when there are none).
    ``scored_by``: the feature network of its evaluation: "classifier" (one ships in
    dcgan_jax/assets/classifiers/NAME), "inception", or None (no built-in evaluation)."""

    load: Callable[[ml_collections.ConfigDict, int], tuple[np.ndarray, np.ndarray]]
    labelled: bool = True
    scored_by: str | None = "inception"
    labels_are: str = "class labels"


DATASETS: dict[str, Dataset] = {}


def register(name: str, dataset: Dataset) -> None:
    """Makes ``dataset`` trainable as ``--config.dataset.name=NAME`` (from a script, a test or
    here)."""
    DATASETS[name] = dataset


register("fashion_mnist", Dataset(_idx_or_tfds, scored_by="classifier"))
register("mnist", Dataset(_idx_or_tfds, scored_by="classifier"))
register("cifar10", Dataset(_tfds))
register("celeb_a", Dataset(_tfds, labelled=False))
register(
    "image_folder",
    Dataset(
        lambda dataset_config, seed: load_image_folder(
            dataset_config.data_dir, dataset_config.image_size
        ),
        labels_are="class sub-folders (or put each class's images in a sub-folder of its own)",
    ),
)
register(
    "synthetic",
    Dataset(
        lambda dataset_config, seed: synthetic_images(dataset_config.num_synthetic, seed),
        scored_by=None,
    ),
)


def load_dataset(dataset_config, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The configured split as (images uint8 (N, H, H, C), N labels >= 0), by the loader registered
    for its name; a loader that returns other arrays is a DataError saying what they are."""
    images, labels = map(np.asarray, DATASETS[dataset_config.name].load(dataset_config, seed))
    square = images.ndim == 4 and images.shape[1] == images.shape[2]
    labelled = labels.shape == images.shape[:1] and np.issubdtype(labels.dtype, np.integer)
    if not (square and images.dtype == np.uint8 and labelled and np.all(labels >= 0)):
        raise DataError(
            f"the loader of dataset {dataset_config.name!r} returned images {images.dtype} "
            f"{images.shape} and labels {labels.dtype} {labels.shape}, not uint8 images (N, H, H, "
            "C) and N integer labels >= 0"
        )
    return images, labels


def scored_by(name: str) -> str | None:
    """The feature network of ``name``'s built-in evaluation (None: none; unknown names too)."""
    return DATASETS[name].scored_by if name in DATASETS else None


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] to float32 [-1, 1], the generator's tanh range (NumPy or JAX arrays)."""
    return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


class BatchOrder:
    """Batch ``i`` of a run: epochs of a permutation drawn from (seed, epoch), so resuming needs
    only the step; each epoch's last partial batch is dropped."""

    def __init__(self, images: np.ndarray, batch_size: int, seed: int):
        if len(images) < batch_size:
            raise DataError(
                f"the dataset has {len(images)} images, fewer than one batch of {batch_size}"
            )
        self.images, self.batch_size, self.seed = images, batch_size, seed
        self.batches_per_epoch = len(images) // batch_size
        self._epoch, self._permutation = -1, None

    def indices(self, batch_index: int) -> np.ndarray:
        epoch, position = divmod(batch_index, self.batches_per_epoch)
        if epoch != self._epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(
                len(self.images)
            )
            self._epoch = epoch
        start = position * self.batch_size
        return self._permutation[start : start + self.batch_size]

    def step_indices(self, first_step: int, num_steps: int, d_steps: int) -> np.ndarray:
        """The rows of steps ``first_step .. first_step + num_steps - 1``, each step's ``d_steps``
        batches in turn: int32 (num_steps, d_steps, batch_size)."""
        batches = range(first_step * d_steps, (first_step + num_steps) * d_steps)
        rows = np.asarray([self.indices(b) for b in batches], np.int32)
        return rows.reshape(num_steps, d_steps, self.batch_size)
