"""Scoring a trained run's checkpoints: the evaluation command's work (``python -m
dcgan_jax.evaluation``) and :func:`evaluate_run`. Loads checkpoints, so the training loop does not
import it; the scores themselves come from the library, :mod:`dcgan_jax.evaluation`."""

import json
import time
from pathlib import Path

import numpy as np

from dcgan_jax.evaluation import Evaluator, evaluator_for, reports
from dcgan_jax.gan import ConfigError, sampling
from dcgan_jax.gan.config import conditioned_on_classes
from dcgan_jax.run import control, writers
from dcgan_jax.run.checkpoints import CheckpointError
from dcgan_jax.tools import trained


def export_features(
    row: dict, sample_features: np.ndarray, evaluator: Evaluator, path: str | Path
) -> Path:
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


def _score_draw(
    run, evaluator: Evaluator, num: int, seed: int | None, truncation: float
) -> tuple[dict, np.ndarray]:
    """(One draw of ``num`` latents scored, with its provenance; the samples' features)."""
    started = time.monotonic()
    if seed is None:
        images, labels = run.evaluation_samples(num, truncation)
        # The in-training evaluation's fixed draw.
        latents = f"evaluation stream of seed {run.config.seed}"
    else:
        labels = sampling.eval_labels(num, run.num_classes)
        images = run.sample(num, seed, labels, truncation)
        latents = f"key({seed})"
    features, probs = evaluator.features_of(images)
    # Cluster labels name no class.
    asked = labels is not None and conditioned_on_classes(run.config)
    scores = evaluator.score_features(features, probs, np.asarray(labels) if asked else None)
    draw = {"latents": latents, "num_samples": num, "truncation": truncation}
    row = {"step": run.step, **draw, **scores, "seconds": time.monotonic() - started}
    return {**row, "provenance": {**evaluator.provenance, **draw}}, features


def _check_options(steps, seed, draws, *, all_steps, best, export):
    """Before any work, a ConfigError for :func:`evaluate_run`'s options that exclude each other,
    for draws whose seeds run past ``sampling.MAX_SEED`` or for an ``export`` path that cannot be
    written; named as the command's flags."""
    if (seed or 0) + draws - 1 > sampling.MAX_SEED:
        raise ConfigError(f"--seed={seed}, --draws={draws}: seeds past {sampling.MAX_SEED}")
    if all_steps and (steps or best):
        given = "--best" if best else f"--step={','.join(map(str, steps))}"
        raise ConfigError(f"{given} and --all_steps: give one of them")
    if export is None:
        return
    if all_steps or len(steps or [0]) > 1:
        raise ConfigError(
            "--export_features writes one step's features: pass --step=N (or none: the newest), "
            "not --all_steps"
        )
    if Path(export).is_dir():
        raise ConfigError(f"--export_features={export}: a folder; name the .npz file to write")
    control.check_writable_folder(Path(export).absolute().parent, "--export_features")


def evaluate_run(
    workdir: str | Path,
    steps: list[int] | None = None,
    num_samples: int | None = None,
    seed: int | None = None,
    truncation: float = 1.0,
    *,
    output_dir: str | Path | None = None,
    draws: int = 1,
    export_path: str | Path | None = None,
    feature_network: str = "",
    data_dir: str | Path | None = None,
    all_steps: bool = False,
    best: bool = False,
) -> list[dict]:
    """Scores the checkpoints ``steps`` of a run (newest when None), writing
    ``step_<N>[_seed<S>][_truncation<psi>][_inception].json`` into ``output_dir``
    (``workdir/eval``); returns a row per draw. By default the in-training evaluation's draw (so a
    step's FID is its ``eval`` log line's); ``seed``: ``load(...).sample(num, seed)``; ``draws`` >
    1: that many draws from ``seed`` on, with mean and sd; ``truncation`` < 1 scales the latents;
    ``export_path``: the features as .npz (:func:`export_features`); ``feature_network``: the
    run's own when empty, ``"inception"`` for any dataset; ``data_dir``: as
    :func:`~dcgan_jax.load`'s; ``all_steps``: every checkpoint kept, less those a running run
    removes meanwhile; ``best``: the checkpoint of the lowest FID."""
    trained.check_truncation(truncation)
    _check_options(steps, seed, draws, all_steps=all_steps, best=best, export=export_path)
    workdir = control.run_folder(workdir)
    if not workdir.is_dir():
        raise CheckpointError(f"no run folder at {workdir.absolute()}")
    output_dir = Path(output_dir or workdir / "eval")
    control.check_writable_folder(output_dir, "--output_dir")  # Before the work: none of it lost.
    rows, evaluator = [], None
    runs = (  # None: the newest good checkpoint.
        trained.load(workdir, requested, best=best, data_dir=data_dir)
        for requested in ([None] if steps is None else steps)
    )
    for run in trained.load_kept(workdir, data_dir=data_dir) if all_steps else runs:
        if evaluator is None:
            evaluator = evaluator_for(run.config, feature_network)
        num = run.config.eval.num_samples if num_samples is None else num_samples
        cut = "" if truncation == 1.0 else f"_truncation{truncation:g}"
        network = evaluator.network.name
        cut += "" if network == "classifier" else f"_{network}"
        first = seed if draws == 1 else seed or 0
        draw_seeds = [None if first is None else first + d for d in range(draws)]
        scored = [
            _score_draw(run, evaluator, num, draw_seed, truncation) for draw_seed in draw_seeds
        ]
        if export_path is not None:
            export_features(scored[0][0], scored[0][1], evaluator, export_path)
        scored = [row for row, _ in scored]
        name = f"step_{run.step:07d}{'' if seed is None else f'_seed{seed}'}{cut}.json"
        result = scored[0]
        if draws > 1:
            name = f"step_{run.step:07d}_draws{draws}_seed{first}{cut}.json"
            result = {"step": run.step, "draws": draws, "num_samples": num}
            result.update(spread=reports.spread(scored), runs=scored)
        writers.write_json(output_dir / name, result)
        rows.extend(scored)
    return rows
