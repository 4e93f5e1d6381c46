"""``python -m dcgan_jax.sweep --runs=DIR [--metric=eval/fid]``: the results table (results.md,
results.csv) and a metric plot of any folder of runs."""

from absl import flags

from dcgan_jax import cli, sweep

flags.DEFINE_string("runs", None, "A folder of runs (a sweep's --workdir).", required=True)
flags.DEFINE_string("metric", None, "Metric to plot over steps (default eval/fid when evaluated, else g_loss).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    sweep.write_results(FLAGS.runs, FLAGS.metric)


if __name__ == "__main__":
    cli.run(main)
