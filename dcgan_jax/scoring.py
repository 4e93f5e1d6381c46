"""Scoring a trained run's checkpoints: the evaluation command's work (``python -m
dcgan_jax.evaluation``) and :func:`evaluate_run`. Loads checkpoints, so the training loop does not
import it; the scores themselves come from the library, :mod:`dcgan_jax.evaluation`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from dcgan_jax import reports, sampling, trained
from dcgan_jax.config import conditioned_on_classes
from dcgan_jax.evaluation import Evaluator, evaluator_for


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
    in Inception-v3's features (:mod:`dcgan_jax.evaluation.inception`), for any dataset and image shape,
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
            summary = {
                "step": run.step,
                "draws": draws,
                "num_samples": num,
                "spread": reports.spread(scored),
                "runs": scored,
            }
            name = f"step_{run.step:07d}_draws{draws}_seed{first}{cut}.json"
            (output_dir / name).write_text(json.dumps(summary, indent=2) + "\n")
        rows.extend(scored)
    return rows
