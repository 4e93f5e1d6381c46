"""Scoring samples against real data: FID, KID, precision/recall, Inception Score and class coverage.

    import dcgan_jax
    scores = dcgan_jax.evaluate(images, dataset="fashion_mnist")   # images: (N, 28, 28, 1) in [-1, 1]

Features are those of the dataset's own classifier (:mod:`dcgan_jax.classifier`),
whose weights ship with the package, so numbers are comparable between users.
The real side is the test split by default; its features are computed once and
cached as ``.npz`` beside the data (or in ``cache_dir``).

From the shell, on the checkpoints of a run (by default the latents the
in-training evaluation scored, so a step's FID is the one its log line shows)::

    python -m dcgan_jax.evaluation --workdir=runs/fashion_dcgan [--step=N | --all_steps] [--seed=S]
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import ml_collections
import numpy as np
from absl import logging

from dcgan_jax import classifier, data, metrics, sampling, trained
from dcgan_jax.config import EVAL_DATASETS, SPLITS, RunError, conditioned_on_classes, default_config
from dcgan_jax.evaluation import networks as feature_networks

MIN_SAMPLES = 1000  # Below this FID's bias dwarfs the differences it is meant to show.
IMAGE_SHAPE = (28, 28, 1)
RANGE_TOLERANCE = 1e-3


class EvaluationError(RunError, ValueError):
    """Images the metrics cannot score; the message says what is wrong with them."""


def check_images(
    images: np.ndarray, min_samples: int = MIN_SAMPLES, shape: tuple[int, ...] = IMAGE_SHAPE
) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:] != tuple(shape):
        raise EvaluationError(f"images must have shape (N, {', '.join(map(str, shape))}), got {images.shape}")
    if len(images) < min_samples:
        raise EvaluationError(
            f"{len(images)} images are too few for a stable FID: pass at least {min_samples} (10,000 is usual)"
        )
    images = images.astype(np.float32)
    if not np.isfinite(images).all():
        bad = int(np.sum(~np.isfinite(images).all(axis=(1, 2, 3))))
        raise EvaluationError(f"{bad} of {len(images)} images contain NaN or inf")
    low, high = float(images.min()), float(images.max())
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        hint = " (uint8 pixels? divide by 127.5 and subtract 1)" if high > 2 else ""
        raise EvaluationError(f"images must lie in [-1, 1], got values in [{low:.3g}, {high:.3g}]{hint}")
    return images


PR_K, DC_K = 3, 5  # Neighbours of precision/recall (Kynkaanniemi et al.) and density/coverage (Naeem et al.).


def _dataset_config(dataset: str, split: str, data_dir: str | Path | None) -> ml_collections.ConfigDict:
    dataset_config = default_config().dataset
    dataset_config.update(name=dataset, data_dir=str(data_dir or ""), split=split)
    return dataset_config


def _with_split(dataset_config: ml_collections.ConfigDict, split: str) -> ml_collections.ConfigDict:
    """A copy of ``dataset_config`` reading ``split``."""
    copy = ml_collections.ConfigDict(dataset_config.to_dict())
    copy.split = split
    return copy


def _cache_file(dataset_config, network: feature_networks.FeatureNetwork, cache_dir: str | Path | None) -> Path:
    """Where a split's reference features are cached: ``cache_dir``, else beside the IDX data when
    writable, else ``~/.cache/dcgan_jax/<dataset>`` (always there for an image folder, which holds
    nothing but images)."""
    name, split = dataset_config.name, dataset_config.split
    digest = network.weights_hash.removeprefix("sha256:")[:16]
    tag = digest if network.name == "classifier" else f"{network.name}-{digest}"
    if name == "image_folder":
        where = hashlib.sha256(str(Path(dataset_config.data_dir).resolve()).encode()).hexdigest()[:12]
        name, split = f"image_folder_{where}_{dataset_config.image_size}", "all"
    folder = Path(cache_dir) if cache_dir else None
    data_dir = data.resolve_data_dir(dataset_config) if dataset_config.name != "image_folder" else None
    if folder is None and data_dir is not None and os.access(data_dir, os.W_OK):
        folder = data_dir
    folder = folder or feature_networks.cache_dir() / dataset_config.name
    return folder / f"reference_{name}_{split}_{tag}.npz"


def _reference(dataset_config, network: feature_networks.FeatureNetwork, cache_dir) -> dict[str, np.ndarray]:
    """Features, class probabilities (when the network has them), labels and the SHA-256 of the
    uint8 images of a real split: computed once and cached as ``.npz``."""
    cache = _cache_file(dataset_config, network, cache_dir)
    if cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            return dict(stored)
    uint8_images, labels = data.load_dataset(dataset_config)
    features, probs = network.apply(data.to_model_range(uint8_images))
    digest = hashlib.sha256(np.ascontiguousarray(uint8_images).tobytes()).hexdigest()
    reference = {"features": features, "labels": labels, "images_sha256": np.array(digest)}
    reference["image_shape"] = np.array(uint8_images.shape[1:])
    if probs is not None:
        reference["probs"] = probs
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f"{cache.stem}.{os.getpid()}.partial.npz")
    np.savez(partial, **reference)
    os.replace(partial, cache)  # Atomic: a process reading it at the same time sees all or nothing.
    logging.info("Cached the %s/%s reference features in %s", dataset_config.name, dataset_config.split, cache)
    return reference


class Evaluator:
    """A feature network and the real reference of one dataset and split, loaded once, to score
    any number of image sets.

    ``feature_network``: "classifier" (the dataset's shipped classifier; the default) or
    "inception" (:mod:`dcgan_jax.feature_networks`; any image shape, and the only choice for a
    dataset without a classifier, e.g. an image folder passed as ``dataset_config``). The
    memorisation ratio needs the training split's features too (cached like the reference); it is
    computed for the datasets with train and test splits unless ``memorisation=False``."""

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        split: str = "test",
        data_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        memorisation: bool = True,
        feature_network: str = "classifier",
        dataset_config: ml_collections.ConfigDict | None = None,
    ):
        self.dataset_config = dataset_config or _dataset_config(dataset, split, data_dir)
        self.dataset, self.split, self.cache_dir = self.dataset_config.name, self.dataset_config.split, cache_dir
        self.network = feature_networks.load(feature_network, self.dataset)
        self.features_and_probs = self.network.apply
        real = self._reference(self.split)
        self.image_shape = self.network.image_shape or tuple(int(d) for d in real["image_shape"])
        self.real_features, self.real_labels = real["features"], real["labels"]
        self.real_probs = real.get("probs")
        self.real_mu, self.real_cov = metrics.mean_and_cov(self.real_features)
        self.real_radii, self.real_radii_dc = metrics.neighbour_radii(self.real_features, (PR_K, DC_K))
        if self.real_probs is not None:
            self.real_hist = metrics.class_histogram(self.real_probs, classifier.NUM_CLASSES)
        classes = np.unique(self.real_labels)
        self.class_stats = [
            metrics.mean_and_cov(self.real_features[self.real_labels == c]) for c in range(classes.max() + 1)
        ]
        self.provenance = {
            **self.network.provenance(),
            "reference": {
                "dataset": self.dataset,
                "split": self.split
                if self.dataset != "image_folder"
                else f"all images of {self.dataset_config.data_dir}",
                "num_images": len(self.real_features),
                "images_sha256": str(real["images_sha256"]),
            },
            "neighbours": {"precision_recall_k": PR_K, "density_coverage_k": DC_K},
            "kid": "mean over 100 subsets of 1000",
        }
        self.train_features = self.heldout_to_train = None
        if memorisation and self.dataset in EVAL_DATASETS and self.network.name == "classifier":
            self._load_memorisation_reference(real)

    def _reference(self, split: str) -> dict[str, np.ndarray]:
        return _reference(_with_split(self.dataset_config, split), self.network, self.cache_dir)

    def training_images(self) -> np.ndarray:
        """The uint8 training images, in the order of :attr:`train_features`."""
        return data.load_dataset(_with_split(self.dataset_config, "train"))[0]

    def _load_memorisation_reference(self, real: dict) -> None:
        """The training split's features and the test images' distances to them; without a training
        split (MNIST on this project's machine has only its test split) the ratio is left out."""
        try:
            train = real if self.split == "train" else self._reference("train")
            test = real if self.split == "test" else self._reference("test")
        except data.DataError as e:
            logging.warning("No memorisation ratio: %s", str(e).splitlines()[0])
            self.provenance["memorisation"] = f"not computed: {str(e).splitlines()[0]}"
            return
        self.train_features = train["features"]
        self.heldout_to_train = metrics.nearest_distances(test["features"], self.train_features)
        self.provenance["memorisation"] = {
            "train_images_sha256": str(train["images_sha256"]),
            "heldout": f"{self.dataset} test split, 5% quantile of its nearest-training distances",
        }

    def __call__(self, images: np.ndarray, min_samples: int = MIN_SAMPLES, labels: np.ndarray | None = None) -> dict:
        """Scores of ``images``; with ``labels`` (the classes a conditional generator was asked for)
        also the intra-class FID and how often the classifier agrees with them."""
        return self.score_features(*self.features_of(images, min_samples), labels)

    def features_of(self, images: np.ndarray, min_samples: int = MIN_SAMPLES) -> tuple[np.ndarray, np.ndarray | None]:
        """(features, class probabilities or None) of ``images``, checked first."""
        return self.features_and_probs(check_images(images, min_samples, self.image_shape))

    def score_features(self, features: np.ndarray, probs: np.ndarray | None, labels: np.ndarray | None = None) -> dict:
        scores = self._feature_scores(features)
        if probs is not None:
            scores.update(self._class_scores(probs))
        if labels is not None:
            if probs is not None:
                scores.update(class_agreement(probs, labels))
            per_class = metrics.intra_class_fid(features, np.asarray(labels), self.class_stats)
            scores.update(intra_fid=float(np.nanmean(per_class)), intra_fid_per_class=per_class)
        return scores

    def _feature_scores(self, features: np.ndarray) -> dict:
        mu, cov = metrics.mean_and_cov(features)
        kid, kid_std = metrics.kernel_inception_distance(self.real_features, features)
        precision, recall = metrics.precision_recall(self.real_features, features, PR_K, self.real_radii)
        density, coverage = metrics.density_coverage(self.real_features, features, DC_K, self.real_radii_dc)
        scores = {
            "fid": metrics.frechet_distance(mu, cov, self.real_mu, self.real_cov),
            "kid": kid,
            "kid_std": kid_std,
            "precision": precision,
            "recall": recall,
            "density": density,
            "coverage": coverage,
            "num_samples": len(features),
        }
        if self.train_features is not None:
            to_train = metrics.nearest_distances(features, self.train_features)
            scores["memorisation_ratio"] = metrics.memorisation_ratio(to_train, self.heldout_to_train)
        return scores

    def _class_scores(self, probs: np.ndarray) -> dict:
        hist = metrics.class_histogram(probs, classifier.NUM_CLASSES)
        covered, class_kl = metrics.class_coverage(hist, self.real_hist)
        return {
            "inception_score": metrics.inception_score(probs),
            "classes_covered": covered,
            "class_kl": class_kl,
            "class_histogram": [float(h) for h in hist],
        }


def class_agreement(probs: np.ndarray, labels: np.ndarray) -> dict:
    """The share of samples the classifier puts in their requested class: overall and per class
    (NaN for a class never requested)."""
    labels = np.asarray(labels)
    if labels.shape != (len(probs),):
        raise EvaluationError(f"labels: one per image expected, shape ({len(probs)},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        found = sorted({int(v) for v in np.unique(labels)} - set(range(probs.shape[1])))[:5] or labels.dtype
        raise EvaluationError(f"labels: class indices in [0, {probs.shape[1]}) expected, got {found}")
    agrees = np.argmax(probs, axis=1) == labels
    per_class = [
        float(np.mean(agrees[labels == c])) if np.any(labels == c) else float("nan") for c in range(probs.shape[1])
    ]
    return {"class_agreement": float(np.mean(agrees)), "class_agreement_per_class": per_class}


def features(images: np.ndarray, dataset: str = "fashion_mnist", feature_network: str = "classifier") -> np.ndarray:
    """(N, D) features of ``images`` (N, H, W, C) in [-1, 1] in the evaluation's feature space: by
    default the penultimate layer (128) of ``dataset``'s shipped classifier, to score with one's own
    tools; ``feature_network="inception"``: Inception-v3 pool3 (2048)."""
    if feature_network == "classifier" and dataset not in EVAL_DATASETS:
        raise EvaluationError(f"dataset={dataset!r}: the evaluation's classifiers are for {', '.join(EVAL_DATASETS)}")
    network = feature_networks.load(feature_network, dataset)
    images = np.asarray(images)
    return network.apply(check_images(images, 1, network.image_shape or images.shape[1:]))[0]


def export_features(row: dict, sample_features: np.ndarray, evaluator: Evaluator, path: str | Path) -> Path:
    """Writes ``path`` (.npz): the scored samples' features, the real reference's features and
    labels, the layer's name and the provenance (JSON) of ``row``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        sample_features=sample_features,
        real_features=evaluator.real_features,
        real_labels=evaluator.real_labels,
        layer=np.array(evaluator.network.layer),
        provenance=np.array(json.dumps(row["provenance"])),
    )
    return path


_EVALUATORS: dict[tuple, Evaluator] = {}


def evaluate(
    images: np.ndarray,
    dataset: str = "fashion_mnist",
    split: str = "test",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    min_samples: int = MIN_SAMPLES,
    labels: np.ndarray | None = None,
    feature_network: str = "classifier",
) -> dict:
    """Scores ``images`` (N, 28, 28, 1) in [-1, 1] against the real ``split`` of ``dataset``.

    Returns fid, kid, kid_std, precision, recall, density, coverage, memorisation_ratio,
    num_samples and, with the classifier, inception_score, classes_covered, class_kl and
    class_histogram; with ``labels`` (the classes a conditional generator was asked for) also
    intra_fid, intra_fid_per_class, class_agreement and class_agreement_per_class. The network and
    reference are loaded once per (dataset, split, data_dir, cache_dir, network) in this process.
    """
    if split not in SPLITS:
        raise EvaluationError(f"split={split!r}: the real images compared with are one of {', '.join(SPLITS)}")
    if dataset not in EVAL_DATASETS:
        raise EvaluationError(f"dataset={dataset!r}: the evaluation scores {', '.join(EVAL_DATASETS)}")
    key = (dataset, split, str(data_dir), str(cache_dir), feature_network)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(dataset, split, data_dir, cache_dir, feature_network=feature_network)
    return _EVALUATORS[key](images, min_samples, labels)


FEATURE_KEYS = ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage")  # Any feature network.
CLASS_KEYS = ("inception_score", "classes_covered", "class_kl")  # A network with class probabilities.
SUMMARY_KEYS = FEATURE_KEYS + CLASS_KEYS  # Of every evaluation with the shipped classifier.
OPTIONAL_KEYS = ("memorisation_ratio", "intra_fid", "class_agreement")  # When computed.


def present_keys(scores: dict) -> tuple[str, ...]:
    """The one-number scores ``scores`` holds, in the tables' order."""
    return tuple(k for k in SUMMARY_KEYS + OPTIONAL_KEYS if k in scores)


def scalar_metrics(scores: dict, prefix: str = "eval/") -> dict[str, float]:
    """The scores that are one number each, named for the metrics log, and the number of samples."""
    return {prefix + k: float(scores[k]) for k in (*present_keys(scores), "num_samples")}


# How the table and the log show each summary score.
_FORMATS = {
    "fid": ".3f",
    "kid": ".4f",
    "kid_std": ".4f",
    "precision": ".3f",
    "recall": ".3f",
    "density": ".3f",
    "coverage": ".3f",
    "inception_score": ".2f",
    "classes_covered": "d",
    "class_kl": ".3f",
    "memorisation_ratio": ".2f",
    "intra_fid": ".3f",
    "class_agreement": ".3f",
}


def score_lines(scores: dict, seconds: float) -> list[str]:
    """The evaluation's log lines (after "eval step N: "): the scores, and for a conditional model
    the intra-class FID and how often the classifier agrees with the requested class."""
    parts = [
        f"FID {scores['fid']:.3f}",
        f"KID {scores['kid']:.4f} +- {scores['kid_std']:.4f}",
        f"precision {scores['precision']:.3f} recall {scores['recall']:.3f}",
        f"density {scores['density']:.3f} coverage {scores['coverage']:.3f}",
    ]
    if "inception_score" in scores:
        parts.append(f"IS {scores['inception_score']:.2f}")
        parts.append(f"classes covered {scores['classes_covered']}/10 (KL {scores['class_kl']:.3f})")
    if "memorisation_ratio" in scores:
        parts.append(f"memorisation {scores['memorisation_ratio']:.2f}")
    lines = [" | ".join([*parts, f"{scores['num_samples']} samples", f"{seconds:.1f} s"])]
    if "intra_fid" in scores:
        per_class = " ".join(f"{f:.1f}" for f in scores["intra_fid_per_class"])
        lines.append(f"intra-class FID {scores['intra_fid']:.3f} (per class: {per_class})")
    if "class_agreement" in scores:
        per_class = " ".join(f"{a:.2f}" for a in scores["class_agreement_per_class"])
        lines.append(
            f"the classifier agrees with the requested class for {100 * scores['class_agreement']:.1f}% "
            f"of samples ({per_class})"
        )
    return lines


def _table_keys(rows: list[dict]) -> tuple[str, ...]:
    """The scores every row has (class agreement is left to the JSON)."""
    return tuple(k for k in present_keys(rows[0]) if k != "class_agreement" and all(k in r for r in rows))


N_DEPENDENT = ("fid", "kid", "kid_std", "intra_fid")  # Biased by the number of samples: named with it.


def metric_name(key: str, num_samples: int) -> str:
    """``fid`` scored on 10,000 samples is ``fid10k`` (StyleGAN2-ADA's convention), on 2,500
    ``fid2500``; scores whose bias does not follow N keep their name."""
    if key not in N_DEPENDENT:
        return key
    count = f"{num_samples // 1000}k" if num_samples % 1000 == 0 else str(num_samples)
    return key.replace("fid", f"fid{count}", 1) if "fid" in key else key.replace("kid", f"kid{count}", 1)


def markdown_table(rows: list[dict]) -> str:
    """The rows' scores, the N-dependent ones named with N when all rows share it."""
    keys = _table_keys(rows)
    counts = {row["num_samples"] for row in rows}
    names = [metric_name(k, *counts) for k in keys] if len(counts) == 1 else list(keys)
    lines = ["| step | latents | " + " | ".join(names) + " | seconds |", "|" + "---|" * (len(keys) + 3)]
    for row in rows:
        cells = [format(row[k], _FORMATS[k]) for k in keys]
        lines.append(f"| {row['step']} | {row['latents']} | " + " | ".join(cells) + f" | {row['seconds']:.1f} |")
    return "\n".join(lines)


def spread(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and sample sd over draws of each summary score: how much a number moves with the latents."""
    return {
        k: {"mean": float(np.mean([r[k] for r in rows])), "sd": float(np.std([r[k] for r in rows], ddof=1))}
        for k in _table_keys(rows)
    }


def spread_line(summary: dict[str, dict[str, float]], draws: int, num: int) -> str:
    cells = " | ".join(
        f"{metric_name(k, num)} {v['mean']:.4g} +- {v['sd']:.2g}" for k, v in summary.items() if k != "kid_std"
    )
    return f"mean +- sd over {draws} draws of {num} latents: {cells}"


def evaluator_for(config: ml_collections.ConfigDict, feature_network: str = "classifier") -> Evaluator:
    """The Evaluator of a run's config: its dataset, against ``eval.split``. The memorisation ratio
    only with the classifier (Inception features of 60,000 training images take long on a CPU)."""
    if feature_network == "classifier" and config.dataset.name not in EVAL_DATASETS:
        raise EvaluationError(
            f"the run's dataset {config.dataset.name!r} has no shipped classifier (those: "
            f"{', '.join(EVAL_DATASETS)}); score it with --feature_network=inception"
        )
    return Evaluator(
        dataset_config=_with_split(config.dataset, config.eval.split),
        feature_network=feature_network,
        memorisation=feature_network == "classifier",
    )


def write_training_provenance(evaluator: Evaluator, config, workdir: Path) -> Path:
    """``workdir/eval/provenance.json``: what the in-training evaluation's numbers are made of. It
    scores one fixed draw (the same latents at every step: cheap, comparable across steps); the
    spread over draws comes from ``python -m dcgan_jax.evaluation --draws=K``."""
    latents = f"evaluation stream of seed {config.seed} (one fixed draw, the same at every evaluation)"
    provenance = {**evaluator.provenance, "num_samples": config.eval.num_samples, "latents": latents, "truncation": 1.0}
    path = workdir / "eval" / "provenance.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(provenance, indent=2) + "\n")
    return path


def _score_draw(run, evaluator: Evaluator, num: int, seed: int | None, truncation: float) -> tuple[dict, np.ndarray]:
    """One draw of ``num`` latents scored, with what the number depends on (provenance), and the
    samples' features."""
    started = time.monotonic()
    if seed is None:
        images, labels = run.evaluation_samples(num, truncation)
        latents = f"evaluation stream of seed {run.config.seed}"  # The in-training evaluation's fixed draw.
    else:
        labels = sampling.eval_labels(num, run.num_classes)
        images = run.sample(num, seed, labels, truncation)
        latents = f"key({seed})"
    features, probs = evaluator.features_of(images)
    asked = labels is not None and conditioned_on_classes(run.config)  # Cluster labels name no class.
    scores = evaluator.score_features(features, probs, np.asarray(labels) if asked else None)
    provenance = {**evaluator.provenance, "num_samples": num, "latents": latents, "truncation": truncation}
    row = {
        "step": run.step,
        "latents": latents,
        "num_samples": num,
        "truncation": truncation,
        **scores,
        "seconds": time.monotonic() - started,
        "provenance": provenance,
    }
    return row, features


def evaluate_run(
    workdir: str | Path,
    steps: list[int] | None = None,
    num_samples: int | None = None,
    seed: int | None = None,
    truncation: float = 1.0,
    output_dir: str | Path | None = None,
    draws: int = 1,
    export_path: str | Path | None = None,
    feature_network: str = "classifier",
) -> list[dict]:
    """Scores the checkpoints ``steps`` of a run (newest when None) and writes
    ``step_<N>[_seed<S>][_truncation<psi>].json`` for each into ``output_dir`` (default ``workdir/eval``).

    By default (``seed`` None) it scores the draw the in-training evaluation scored,
    ``num_samples`` (default ``eval.num_samples``) latents of the run's evaluation stream, so its
    FID for a step is the one that step's ``eval`` log line reports; ``seed`` scores another draw
    (``dcgan_jax.load(...).sample(num, seed)``). ``draws`` > 1 scores that many independent draws,
    seeds ``seed`` (default 0) onwards, and writes ``step_<N>_draws<K>_seed<S>.json`` with each
    draw and their mean and sd. ``truncation`` < 1 scales the latents: a point on the run's
    precision/recall trade-off. ``export_path`` (.npz): the features of the (first) draw and of the
    real reference (:func:`export_features`), for one step. ``feature_network="inception"`` scores
    in Inception-v3's features (:mod:`dcgan_jax.feature_networks`), for any dataset and image shape,
    stored with ``_inception`` in the file names. Returns one row per draw scored."""
    workdir = Path(workdir)
    output_dir = Path(output_dir or workdir / "eval")
    output_dir.mkdir(parents=True, exist_ok=True)
    rows, evaluator = [], None
    for requested in [None] if steps is None else steps:  # None: the newest good checkpoint.
        run = trained.load(workdir, requested)
        if evaluator is None:
            evaluator = evaluator_for(run.config, feature_network)
        num = num_samples or run.config.eval.num_samples
        cut = ("" if truncation == 1.0 else f"_truncation{truncation:g}") + (
            "" if feature_network == "classifier" else f"_{feature_network}"
        )
        first = seed if draws == 1 else seed or 0
        scored = [
            _score_draw(run, evaluator, num, None if first is None else first + d, truncation) for d in range(draws)
        ]
        if export_path is not None:
            export_features(scored[0][0], scored[0][1], evaluator, export_path)
        scored = [row for row, _ in scored]
        if draws == 1:
            name = f"step_{run.step:07d}{'' if seed is None else f'_seed{seed}'}{cut}.json"
            (output_dir / name).write_text(json.dumps(scored[0], indent=2) + "\n")
        else:
            summary = {"step": run.step, "draws": draws, "num_samples": num, "spread": spread(scored), "runs": scored}
            name = f"step_{run.step:07d}_draws{draws}_seed{first}{cut}.json"
            (output_dir / name).write_text(json.dumps(summary, indent=2) + "\n")
        rows.extend(scored)
    return rows
