"""The real images' side of every score: each split's features under a feature network, computed
once and cached as .npz (beside the IDX data when writable, else ``$DCGAN_JAX_CACHE_DIR`` or
``~/.cache/dcgan_jax``), keyed by the network's weights; a damaged cache is rebuilt."""

import contextlib
import dataclasses
import functools
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np
from absl import logging

from dcgan_jax.gan import data

CACHE_ENV = "DCGAN_JAX_CACHE_DIR"


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """``apply(images)``: images (N, H, W, C) in [-1, 1], or uint8 pixels (a real split, converted a
    batch at a time) -> (features (N, D), class probabilities (N, 10) or None). ``image_shape``: the
    one input shape it takes, None for any H x W x {1, 3}."""

    name: str
    description: str
    layer: str
    weights_hash: str
    preprocessing: str
    image_shape: tuple[int, ...] | None
    feature_dim: int
    apply: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]

    def provenance(self) -> dict:
        return {
            "feature_network": self.description,
            "feature_layer": self.layer,
            "feature_weights_hash": self.weights_hash,
            "preprocessing": self.preprocessing,
        }


def model_range(images: np.ndarray) -> np.ndarray:
    """Images as a :class:`FeatureNetwork` takes them, uint8 pixels or in [-1, 1], in [-1, 1]."""
    return data.to_model_range(images) if images.dtype == np.uint8 else images


def pixels(images: np.ndarray) -> np.ndarray:
    """The same rule the other way: uint8 images as they are, those in [-1, 1] as uint8 pixels."""
    return images if images.dtype == np.uint8 else data.to_uint8(images)


def in_batches(apply: Callable, images: np.ndarray, batch_size: int, what: str) -> tuple:
    """``apply(batch)``'s arrays over ``images`` in zero-padded batches of one size (one program for
    any N, bounded memory), the padding's rows dropped; progress in the log every 20 batches."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        padded = np.pad(batch, [(0, batch_size - len(batch))] + [(0, 0)] * 3)
        outputs.append([np.asarray(out)[: len(batch)] for out in apply(padded)])
        if (start // batch_size) % 20 == 19:
            logging.info("%s: %d of %d images", what, start + len(batch), len(images))
    return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))


def default_cache_dir() -> Path:
    """``$DCGAN_JAX_CACHE_DIR``, else ``~/.cache/dcgan_jax``; where no home folder can be found (no
    ``$HOME`` and a user the system does not list, as in some containers), the temporary folder."""
    if cache := os.environ.get(CACHE_ENV):
        return Path(cache)
    try:
        return Path.home() / ".cache" / "dcgan_jax"
    except RuntimeError:
        return Path(tempfile.gettempdir()) / "dcgan_jax_cache"


def save_npz(path: Path, **arrays) -> None:
    """``arrays`` written to ``path`` atomically (a reader sees all or nothing): a cache. A folder
    that cannot be written (a read-only home, a full disk) is one warning; the caller's result
    stands."""
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(partial, **arrays)
        os.replace(partial, path)
    except OSError as e:
        logging.warning(
            "Could not write the cache %s (%s); it is computed anew next time.", path, e
        )
    else:
        logging.info("Cached %s", path)
    finally:  # Also after a stop signal.
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def with_split(
    dataset_config: ml_collections.ConfigDict, split: str, **fields
) -> ml_collections.ConfigDict:
    """A copy of ``dataset_config`` reading ``split`` (and ``fields`` changed)."""
    return ml_collections.ConfigDict({**dataset_config.to_dict(), "split": split, **fields})


def _files_digest(folder: Path) -> str:
    """A digest of the data files under ``folder`` (its path, their names, sizes and modification
    times; caches left out) and of how they are read: a reference cached for other files (images
    added, removed or replaced, another copy of a dataset) or read otherwise (a newer dcgan_jax) is
    not found, and is computed anew."""
    files = {p: p.stat() for p in data.files_under(folder) if not p.name.startswith("reference_")}
    stats = [(str(p.relative_to(folder)), s.st_size, s.st_mtime_ns) for p, s in files.items()]
    named = [str(folder.resolve()), stats, data.READING_VERSION]
    return hashlib.sha256(repr(named).encode()).hexdigest()[:12]


def _cache_file(dataset_config, network, cache_dir):
    """A split's reference cache: in ``cache_dir``, else beside the IDX data when writable, else in
    ``~/.cache/dcgan_jax/<dataset>``; named for the feature network and the data files."""
    name, split = dataset_config.name, dataset_config.split
    digest = network.weights_hash.removeprefix("sha256:")[:16]
    tag = digest if network.name == "classifier" else f"{network.name}-{digest}"
    folder = Path(cache_dir) if cache_dir else default_cache_dir() / name
    data_dir = data.resolve_data_dir(dataset_config)
    if data_dir and data_dir.is_dir():  # Else TFDS's own store.
        tag += f"-{_files_digest(data_dir)}"
    if name == "image_folder":
        name, split = f"image_folder_{dataset_config.image_size}", "all"
    elif not cache_dir and data_dir and os.access(data_dir, os.W_OK):
        folder = data_dir
    return folder / f"reference_{name}_{split}_{tag}.npz"


REFERENCE_KEYS = ("features", "labels", "images_sha256", "image_shape")


def load_cache(
    path: Path, check: Callable[[dict], None], what: str
) -> dict[str, np.ndarray] | None:
    """The arrays of the cache at ``path`` when it exists and ``check(arrays)`` passes; else None,
    with one warning when the file is unreadable, truncated or fails the check (``what`` is then
    rebuilt)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = dict(stored)
        check(arrays)
    except Exception as e:  # BadZipFile, EOFError, KeyError, ValueError...: any damage is rebuilt.
        logging.warning("Rebuilding %s: %s is unreadable (%s)", what, path, str(e).splitlines()[0])
        return None
    return arrays


def _check_reference(reference, feature_dim):
    """A ValueError unless ``reference`` holds a reference's arrays, ``feature_dim`` wide."""
    features, labels = reference["features"], reference["labels"]
    if not set(REFERENCE_KEYS) <= reference.keys() or len(features) != len(labels):
        raise ValueError(f"not the arrays of a reference (keys {sorted(reference)})")
    if features.ndim != 2 or features.shape[1] != feature_dim:
        raise ValueError(f"features of shape {features.shape}, not (N, {feature_dim})")


def reference(dataset_config, network: FeatureNetwork, cache_dir) -> dict[str, np.ndarray]:
    """Features, class probabilities (if any), labels and images' SHA-256 of a real split,
    cached."""
    cache = _cache_file(dataset_config, network, cache_dir)
    check = functools.partial(_check_reference, feature_dim=network.feature_dim)
    if (stored := load_cache(cache, check, "the reference features")) is not None:
        return stored
    uint8_images, labels = data.load_dataset(dataset_config)
    features, probs = network.apply(uint8_images)  # Not a float copy of the whole split.
    digest = hashlib.sha256(np.ascontiguousarray(uint8_images)).hexdigest()  # No copy of the split.
    reference = {"features": features, "labels": labels, "images_sha256": np.array(digest)}
    reference["image_shape"] = np.array(uint8_images.shape[1:])
    if probs is not None:
        reference["probs"] = probs
    save_npz(cache, **reference)
    return reference
