"""The evaluation's feature networks: the dataset's own classifier (shipped, the default) or
Inception-v3 (optional), for FIDs comparable with published tables.

Published FIDs (Heusel et al. 2017; Lucic et al. 2018's Fashion-MNIST table) use the pool3
features (2048-d) of TensorFlow's Inception graph of 2015-12-05. We use pytorch-fid's port of it,
the weights most PyTorch papers score with, run by pytorch-fid's own model code
(``pip install -e ".[inception]"``). The weights are fetched once, on a machine with internet, into
``~/.cache/dcgan_jax`` (or ``$DCGAN_JAX_CACHE_DIR``), and checked against their SHA-256 before
every use: a different or damaged file would change every number without a word.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from dcgan_jax import classifier
from dcgan_jax.config import RunError

CACHE_ENV = "DCGAN_JAX_CACHE_DIR"
NAMES = ("classifier", "inception")


class FeatureNetworkError(RunError, FileNotFoundError):
    """Weights missing, not the expected file, or the optional dependency absent; says what to do."""


@dataclasses.dataclass(frozen=True)
class Weights:
    file: str
    url: str
    sha256: str


INCEPTION_WEIGHTS = Weights(
    file="pt_inception-2015-12-05-6726825d.pth",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
)
INCEPTION_PREPROCESSING = (
    "grey replicated to 3 channels; [-1, 1] mapped to [0, 1]; resized to 299x299 by pytorch-fid's "
    "InceptionV3(resize_input=True): torch.nn.functional.interpolate, bilinear, align_corners=False"
)


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """``apply(images)``: images (N, H, W, C) in [-1, 1] -> (features (N, D), class probabilities
    (N, 10) or None). ``image_shape``: the one input shape it takes, None for any H x W x {1, 3}."""

    name: str
    description: str
    layer: str
    weights_hash: str
    preprocessing: str
    image_shape: tuple[int, ...] | None
    apply: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]

    def provenance(self) -> dict:
        return {
            "feature_network": self.description,
            "feature_layer": self.layer,
            "feature_weights_hash": self.weights_hash,
            "preprocessing": self.preprocessing,
        }


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "dcgan_jax"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_weights(weights: Weights, folder: Path | None = None) -> Path:
    """The path of ``weights`` in the cache, after checking its SHA-256; a FeatureNetworkError that
    says where to fetch it from and where to put it when it is missing, or that refuses another file."""
    path = (folder or cache_dir()) / weights.file
    if not path.is_file():
        raise FeatureNetworkError(
            f"the Inception weights are not at {path}. This needs no internet here: on a machine with "
            f"internet fetch {weights.url} (e.g. curl -L -o {weights.file} URL) and copy it to {path} "
            f"(or set ${CACHE_ENV} to its folder); expected SHA-256 {weights.sha256}"
        )
    found = sha256_file(path)
    if found != weights.sha256:
        raise FeatureNetworkError(
            f"{path} has SHA-256 {found}, not {weights.sha256} of {weights.url}: another or a damaged "
            "file, whose FIDs would not be comparable. Delete it and fetch it again"
        )
    return path


def classifier_network(dataset: str) -> FeatureNetwork:
    params, info = classifier.load_params(dataset)
    apply = classifier.make_apply(params)
    return FeatureNetwork(
        name="classifier",
        description=f"dcgan_jax's {dataset} classifier (dcgan_jax/assets/classifiers/{dataset})",
        layer="the classifier's penultimate layer: dense, 128 units, after ReLU",
        weights_hash=f"sha256:{info['params_hash']} (first 16 hex digits, over the weights' arrays)",
        preprocessing="none: 28x28x1 in [-1, 1], as the generator writes them",
        image_shape=(28, 28, 1),
        apply=apply,
    )


@contextlib.contextmanager
def _torch_hub_holding(path: Path) -> Iterator[None]:
    """torch.hub pointed at a folder whose checkpoints/ holds ``path``: pytorch-fid loads its weights
    by URL through torch.hub, which takes a file already there instead of downloading."""
    import torch

    hub = path.parent / "torch_hub"
    link = hub / "checkpoints" / path.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(path)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        yield
    finally:
        torch.hub.set_dir(previous)


def _torch_inception(path: Path, batch_size: int = 100) -> Callable[[np.ndarray], np.ndarray]:
    """pytorch-fid's FID Inception with the verified weights at ``path``: (N, 3, H, W) float32 in
    [0, 1] -> (N, 2048) pool3 features. The only part that needs torch."""
    try:
        import torch
        from pytorch_fid.inception import InceptionV3
    except ImportError as e:
        raise FeatureNetworkError(
            f"--feature_network=inception needs pytorch-fid ({e}): pip install -e '.[inception]'"
        ) from e
    with _torch_hub_holding(path):
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True).eval()

    def features(batch: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(batch), batch_size):
                pooled = model(torch.from_numpy(batch[start : start + batch_size]))[0]
                out.append(pooled[:, :, 0, 0].numpy())
        return np.concatenate(out)

    return features


def inception_inputs(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 1 or 3) in [-1, 1] -> (N, 3, H, W) float32 in [0, 1], grey replicated to 3 channels."""
    images = np.asarray(images, np.float32)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.ascontiguousarray(((images + 1) / 2).transpose(0, 3, 1, 2))


def inception_network(folder: Path | None = None) -> FeatureNetwork:
    path = verified_weights(INCEPTION_WEIGHTS, folder)
    network = _torch_inception(path)
    return FeatureNetwork(
        name="inception",
        description=f"Inception-v3 of TensorFlow's 2015-12-05 graph, pytorch-fid's port ({INCEPTION_WEIGHTS.file})",
        layer="pool3: the final average pooling, 2048 units",
        weights_hash=f"sha256:{INCEPTION_WEIGHTS.sha256} (of the file)",
        preprocessing=INCEPTION_PREPROCESSING,
        image_shape=None,
        apply=lambda images: (network(inception_inputs(images)), None),
    )


def load(name: str, dataset: str) -> FeatureNetwork:
    """The feature network ``name`` (one of :data:`NAMES`) for scoring images of ``dataset``."""
    if name == "classifier":
        return classifier_network(dataset)
    if name == "inception":
        return inception_network()
    raise FeatureNetworkError(f"feature_network={name!r}: one of {', '.join(NAMES)}")
