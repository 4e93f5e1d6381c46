"""Seconds to score 10,000 images with dcgan_jax.evaluate (target: under 10 s on a 2-core CPU).

    export DCGAN_JAX_DATA_DIR=../shared/data
    python benchmarks/evaluation_speed.py [--workdir=runs/fashion_dcgan]

Scores samples of the run in --workdir when given, else 10,000 real training images. The first call
also computes (and caches) the reference features; the timed call is the second.
"""

import time

import numpy as np
from absl import app, flags

import dcgan_jax
from dcgan_jax import evaluation
from dcgan_jax.evaluation import reports
from dcgan_jax.gan import data

flags.DEFINE_string("workdir", None, "A run whose samples to score.")
flags.DEFINE_integer("num_samples", 10_000, "Images per scored set.")
FLAGS = flags.FLAGS


def main(argv):
    started = time.monotonic()
    evaluator = evaluation.Evaluator(evaluation.reference_config("fashion_mnist", "test"))
    print(
        f"classifier and reference: {time.monotonic() - started:.1f} s (includes the cache on a "
        "first run)"
    )
    if FLAGS.workdir:
        run = dcgan_jax.load(FLAGS.workdir)
        images = np.concatenate(
            [run.sample(1000, seed=i) for i in range(FLAGS.num_samples // 1000)]
        )
        source = f"samples of {FLAGS.workdir} step {run.step}"
    else:
        train_images, _ = data.load_dataset(evaluator_config())
        images = data.to_model_range(train_images[: FLAGS.num_samples])
        source = "real training images"
    evaluator(images[:1000])  # Compiles the jitted parts.
    for attempt in range(2):
        started = time.monotonic()
        scores = evaluator(images)
        seconds = time.monotonic() - started
        print(f"run {attempt + 1}: {len(images)} {source} scored in {seconds:.1f} s")
    print({k: round(scores[k], 4) for k in (*reports.SUMMARY_KEYS, "memorisation_ratio")})


def evaluator_config():
    config = dcgan_jax.default_config().dataset
    config.update(name="fashion_mnist", split="train")
    return config


if __name__ == "__main__":
    app.run(main)
