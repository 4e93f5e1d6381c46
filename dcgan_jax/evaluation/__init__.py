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

import json
import os
import time
from pathlib import Path

import numpy as np
from absl import logging

from dcgan_jax import classifier, data, metrics, sampling, trained
from dcgan_jax.config import EVAL_DATASETS, SPLITS, RunError, default_config

MIN_SAMPLES = 1000  # Below this FID's bias dwarfs the differences it is meant to show.
IMAGE_SHAPE = (28, 28, 1)
RANGE_TOLERANCE = 1e-3
CACHE_ENV = "DCGAN_JAX_CACHE_DIR"


class EvaluationError(RunError, ValueError):
    """Images the metrics cannot score; the message says what is wrong with them."""


def check_images(images: np.ndarray, min_samples: int = MIN_SAMPLES) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:] != IMAGE_SHAPE:
        raise EvaluationError(f"images must have shape (N, 28, 28, 1), got {images.shape}")
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


def _cache_folder(dataset: str, data_dir: Path | None, cache_dir: str | Path | None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    if data_dir is not None and os.access(data_dir, os.W_OK):
        return data_dir
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "dcgan_jax")) / dataset


class Evaluator:
    """The classifier and the real reference of one dataset and split, loaded once, to score
    any number of image sets."""

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        split: str = "test",
        data_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ):
        self.dataset, self.split = dataset, split
        params, self.classifier_info = classifier.load_params(dataset)
        self.features_and_probs = classifier.make_apply(params)
        dataset_config = default_config().dataset
        dataset_config.update(name=dataset, data_dir=str(data_dir or ""), split=split)
        resolved = data.resolve_data_dir(dataset_config)
        cache = _cache_folder(dataset, resolved, cache_dir) / (
            f"reference_{dataset}_{split}_{self.classifier_info['params_hash']}.npz"
        )
        if cache.exists():
            stored = np.load(cache)
            self.real_features, self.real_probs = stored["features"], stored["probs"]
        else:
            real_images, _ = data.load_dataset(dataset_config)
            self.real_features, self.real_probs = self.features_and_probs(data.to_model_range(real_images))
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, features=self.real_features, probs=self.real_probs)
            logging.info("Cached the %s/%s reference features in %s", dataset, split, cache)
        self.real_mu, self.real_cov = metrics.mean_and_cov(self.real_features)
        self.real_hist = metrics.class_histogram(self.real_probs, classifier.NUM_CLASSES)
        self.real_radii = metrics.kth_neighbour_radii(self.real_features, k=3)

    def __call__(self, images: np.ndarray, min_samples: int = MIN_SAMPLES, labels: np.ndarray | None = None) -> dict:
        """Scores of ``images``; with ``labels`` (the classes a conditional generator was asked for)
        also how often the classifier agrees with them, overall and per class."""
        images = check_images(images, min_samples)
        features, probs = self.features_and_probs(images)
        scores = self.score_features(features, probs)
        if labels is not None:
            scores.update(class_agreement(probs, labels))
        return scores

    def score_features(self, features: np.ndarray, probs: np.ndarray) -> dict:
        mu, cov = metrics.mean_and_cov(features)
        kid, kid_std = metrics.kernel_inception_distance(self.real_features, features)
        precision, recall = metrics.precision_recall(self.real_features, features, 3, self.real_radii)
        hist = metrics.class_histogram(probs, classifier.NUM_CLASSES)
        covered, class_kl = metrics.class_coverage(hist, self.real_hist)
        return {
            "fid": metrics.frechet_distance(mu, cov, self.real_mu, self.real_cov),
            "kid": kid,
            "kid_std": kid_std,
            "precision": precision,
            "recall": recall,
            "inception_score": metrics.inception_score(probs),
            "classes_covered": covered,
            "class_kl": class_kl,
            "class_histogram": [float(h) for h in hist],
            "num_samples": len(features),
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


_EVALUATORS: dict[tuple, Evaluator] = {}


def evaluate(
    images: np.ndarray,
    dataset: str = "fashion_mnist",
    split: str = "test",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    min_samples: int = MIN_SAMPLES,
    labels: np.ndarray | None = None,
) -> dict:
    """Scores ``images`` (N, 28, 28, 1) in [-1, 1] against the real ``split`` of ``dataset``.

    Returns fid, kid, kid_std, precision, recall, inception_score, classes_covered,
    class_kl, class_histogram and num_samples; with ``labels`` (the classes a conditional
    generator was asked for) also class_agreement and class_agreement_per_class. The classifier
    and reference are loaded once per (dataset, split, data_dir, cache_dir) in this process.
    """
    if split not in SPLITS:
        raise EvaluationError(f"split={split!r}: the real images compared with are one of {', '.join(SPLITS)}")
    if dataset not in EVAL_DATASETS:
        raise EvaluationError(f"dataset={dataset!r}: the evaluation scores {', '.join(EVAL_DATASETS)}")
    key = (dataset, split, str(data_dir), str(cache_dir))
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(dataset, split, data_dir, cache_dir)
    return _EVALUATORS[key](images, min_samples, labels)


SUMMARY_KEYS = ("fid", "kid", "kid_std", "precision", "recall", "inception_score", "classes_covered", "class_kl")


def scalar_metrics(scores: dict, prefix: str = "eval/") -> dict[str, float]:
    """The scores that are one number each, named for the metrics log."""
    keys = SUMMARY_KEYS + (("class_agreement",) if "class_agreement" in scores else ())
    return {prefix + k: float(scores[k]) for k in keys}


# How the table and the log show each summary score.
_FORMATS = {
    "fid": ".3f",
    "kid": ".4f",
    "kid_std": ".4f",
    "precision": ".3f",
    "recall": ".3f",
    "inception_score": ".2f",
    "classes_covered": "d",
    "class_kl": ".3f",
}


def score_lines(scores: dict, seconds: float) -> list[str]:
    """The evaluation's log lines (after "eval step N: "): the scores, and for a conditional model
    how often the classifier agrees with the requested class."""
    lines = [
        f"FID {scores['fid']:.3f} | KID {scores['kid']:.4f} +- {scores['kid_std']:.4f} | precision "
        f"{scores['precision']:.3f} recall {scores['recall']:.3f} | IS {scores['inception_score']:.2f} | classes "
        f"covered {scores['classes_covered']}/10 (KL {scores['class_kl']:.3f}) | {seconds:.1f} s"
    ]
    if "class_agreement" in scores:
        per_class = " ".join(f"{a:.2f}" for a in scores["class_agreement_per_class"])
        lines.append(
            f"the classifier agrees with the requested class for {100 * scores['class_agreement']:.1f}% "
            f"of samples ({per_class})"
        )
    return lines


def markdown_table(rows: list[dict]) -> str:
    header = "| step | latents | " + " | ".join(SUMMARY_KEYS) + " | seconds |"
    lines = [header, "|" + "---|" * (len(SUMMARY_KEYS) + 3)]
    for row in rows:
        cells = [format(row[k], _FORMATS[k]) for k in SUMMARY_KEYS]
        lines.append(f"| {row['step']} | {row['latents']} | " + " | ".join(cells) + f" | {row['seconds']:.1f} |")
    return "\n".join(lines)


def evaluate_run(
    workdir: str | Path,
    steps: list[int] | None = None,
    num_samples: int | None = None,
    seed: int | None = None,
    truncation: float = 1.0,
    output_dir: str | Path | None = None,
) -> list[dict]:
    """Scores the checkpoints ``steps`` of a run (newest when None) and writes
    ``step_<N>[_seed<S>][_truncation<psi>].json`` for each into ``output_dir`` (default ``workdir/eval``).

    By default (``seed`` None) it scores the draw the in-training evaluation scored,
    ``num_samples`` (default ``eval.num_samples``) latents of the run's evaluation stream, so its
    FID for a step is the one that step's ``eval`` log line reports; ``seed`` scores another draw
    (``dcgan_jax.load(...).sample(num, seed)``). ``truncation`` < 1 scales the latents: a point on the
    run's precision/recall trade-off."""
    workdir = Path(workdir)
    output_dir = Path(output_dir or workdir / "eval")
    rows, evaluator = [], None
    for requested in [None] if steps is None else steps:  # None: the newest good checkpoint.
        started = time.monotonic()
        run = trained.load(workdir, requested)
        if evaluator is None:
            evaluator = Evaluator(run.config.dataset.name, run.config.eval.split, run.config.dataset.data_dir)
        num = num_samples or run.config.eval.num_samples
        if seed is None:
            images, labels = run.evaluation_samples(num, truncation)
            latents, suffix = f"evaluation stream of seed {run.config.seed}", ""
        else:
            labels = sampling.eval_labels(num, run.num_classes)
            images = run.sample(num, seed, labels, truncation)
            latents, suffix = f"key({seed})", f"_seed{seed}"
        scores = evaluator(images, labels=None if labels is None else np.asarray(labels))
        row = {
            "step": run.step,
            "latents": latents,
            "num_samples": num,
            "truncation": truncation,
            **scores,
            "seconds": time.monotonic() - started,
        }
        suffix += "" if truncation == 1.0 else f"_truncation{truncation:g}"
        out = output_dir / f"step_{run.step:07d}{suffix}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(row, indent=2) + "\n")
        rows.append(row)
    return rows
