"""``python -m dcgan_jax.evaluation --workdir=W [--step=N | --all_steps | --best] [--seed=S]
[--truncation=PSI] [--draws=K] [--export_features=PATH.npz]``: scores a run's checkpoints, writes
``W/eval/step_<N>*.json`` and ``W/eval/results.json``, prints a table (and, with ``--draws``, each
score's mean +- sd over the draws). Without ``--seed`` it scores the latents of the in-training
evaluation, so a step's FID is its log line's."""

from pathlib import Path

from absl import flags

from dcgan_jax import evaluation
from dcgan_jax.evaluation import reports
from dcgan_jax.gan import sampling
from dcgan_jax.gan.config import MAX_EVAL_SAMPLES
from dcgan_jax.run import cli, control, writers
from dcgan_jax.tools import scoring

flags.DEFINE_string("workdir", None, "The run folder (holding checkpoints/).", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step to score (default: the newest).")
flags.DEFINE_bool("all_steps", False, "Score every checkpoint of the run.")
flags.DEFINE_bool(
    "best", False, "Score the checkpoint of the lowest FID (best_checkpoint/, kept when pruned)."
)
flags.DEFINE_integer(
    "num_samples",
    None,
    "Samples to score per checkpoint (default: the run's eval.num_samples).",
    lower_bound=evaluation.MIN_SAMPLES,
    upper_bound=MAX_EVAL_SAMPLES,
)
flags.DEFINE_integer(
    "seed",
    None,
    "Score latents drawn with this seed instead of the training evaluation's.",
    lower_bound=0,
    upper_bound=sampling.MAX_SEED,
)
flags.DEFINE_float(
    "truncation", 1.0, "Scale the latent vectors by this (< 1: the truncation trick)."
)
flags.DEFINE_string("output_dir", None, "Where the JSON results go (default: <workdir>/eval).")
flags.DEFINE_integer(
    "draws",
    1,
    "Score this many independent draws of latents (seeds --seed on) and their spread.",
    lower_bound=1,
    upper_bound=100,
)
flags.DEFINE_enum(
    "feature_network",
    None,
    list(evaluation.NAMES),
    "The dataset's classifier or Inception pool3; default: the network the run's evaluation used "
    "(Inception for a dataset without a classifier).",
)
flags.DEFINE_string(
    "export_features",
    None,
    "Also write the samples' and the real reference's features to this .npz.",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "Where the run's real images are here, when not where it trained (its dataset.data_dir).",
)
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    out = Path(FLAGS.output_dir or control.run_folder(FLAGS.workdir) / "eval")
    rows = scoring.evaluate_run(
        FLAGS.workdir,
        None if FLAGS.step is None else [FLAGS.step],
        FLAGS.num_samples,
        FLAGS.seed,
        FLAGS.truncation,
        output_dir=out,
        draws=FLAGS.draws,
        export_path=FLAGS.export_features,
        feature_network=FLAGS.feature_network or "",
        data_dir=FLAGS.data_dir,
        all_steps=FLAGS.all_steps,
        best=FLAGS.best,
    )
    summary = out / "results.json"
    writers.write_json(summary, rows)
    print(reports.markdown_table(rows))
    for start in range(0, len(rows), FLAGS.draws) if FLAGS.draws > 1 else []:
        draws = rows[start : start + FLAGS.draws]
        spread = reports.spread_line(reports.spread(draws), FLAGS.draws, draws[0]["num_samples"])
        print(f"step {draws[0]['step']}, {spread}")
    print(
        f"Scored with {rows[0]['provenance']['feature_network']} against "
        f"{rows[0]['provenance']['reference']}"
    )
    if FLAGS.export_features:
        print(f"Wrote the features to {FLAGS.export_features}")
    print(f"Wrote {summary}")


if __name__ == "__main__":
    cli.run(main)
