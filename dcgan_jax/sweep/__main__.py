"""``python -m dcgan_jax.sweep --runs=DIR [--metric=eval/fid]``: the results tables (results.md,
results.csv, settings.csv) and metric plots of any folder of runs; ``--manifest=M --task=I`` runs
one task of a SLURM job array (the script ``launch.py --sweep_slurm`` writes calls it)."""

from absl import flags

from dcgan_jax.run import cli
from dcgan_jax.tools import slurm, sweep

flags.DEFINE_string("runs", None, "A folder of runs (a sweep's --workdir).")
flags.DEFINE_string(
    "metric", None, "Metric to plot over steps (default eval/fid when evaluated, else g_loss)."
)
flags.DEFINE_string(
    "manifest", None, "A job array's manifest (written by launch.py --sweep_slurm)."
)
flags.DEFINE_integer("task", None, "The array task's index into --manifest ($SLURM_ARRAY_TASK_ID).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    cli.check_flags_need(FLAGS, ["task"], "manifest")
    cli.check_flags_need(FLAGS, ["metric"], "runs")
    if FLAGS.runs is not None and FLAGS.manifest is not None:
        cli.fail("--runs and --manifest are two different jobs: give one of them")
    if FLAGS.manifest is not None:
        if FLAGS.task is None:
            cli.fail("--manifest needs --task=INDEX (the array task's $SLURM_ARRAY_TASK_ID)")
        slurm.run_task(FLAGS.manifest, FLAGS.task)
    elif FLAGS.runs is not None:
        sweep.write_results(FLAGS.runs, FLAGS.metric)
    else:
        cli.fail(
            "give --runs=DIR (a folder of runs) or --manifest=M --task=I (one task of a job array)"
        )


if __name__ == "__main__":
    cli.run(main)
