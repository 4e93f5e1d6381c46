"""Runs an experiment: ``python launch.py --experiment=NAME [--workdir=DIR] [--config.FIELD=VALUE
...]``.

``experiments/NAME.py`` returns the run's config; any field can be overridden by a flag.
"""

import sys
from pathlib import Path

from absl import flags

from dcgan_jax.run import cli, control, distributed
from dcgan_jax.run.train import train_and_evaluate
from dcgan_jax.tools import sweep

LAUNCHER = Path(__file__).resolve()
EXPERIMENTS_DIR = LAUNCHER.parent / "experiments"

flags.DEFINE_string("experiment", None, "Name of a file in experiments/ (without .py).")
flags.DEFINE_string("workdir", None, "Where the run writes everything; default runs/<experiment>.")
flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0, for a multi-process run (jax.distributed).",
)
flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.", lower_bound=1)
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
flags.DEFINE_integer(
    "distributed_timeout_s", 300, "Seconds to wait for a multi-process run.", lower_bound=1
)
flags.DEFINE_string(
    "sweep", None, "A grid of runs, 'FIELD=V1,V2 FIELD=V3', each in --workdir/<overrides>."
)
flags.DEFINE_bool("sweep_dry_run", False, "Only print the sweep's commands, one a line.")
flags.DEFINE_string(
    "sweep_metric", None, "Metric the sweep plots over steps (default eval/fid, else g_loss)."
)
flags.DEFINE_string(
    "sweep_slurm", None, "Write the sweep as a SLURM job-array script at this path (no run here)."
)
flags.DEFINE_integer(
    "sweep_max_parallel", 4, "Array tasks at once in the --sweep_slurm script (--array=0-N%P)."
)
flags.DEFINE_bool("sweep_submit", False, "With --sweep_slurm: also submit the script with sbatch.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    config = FLAGS.config
    default = Path("runs") / (FLAGS.experiment + ("_sweep" if FLAGS.sweep else ""))
    workdir = control.run_folder(default if FLAGS.workdir is None else FLAGS.workdir)
    cli.check_flags_need(FLAGS, [n for n in FLAGS if n.startswith("sweep_")], "sweep")
    cli.check_flags_need(FLAGS, ["sweep_max_parallel", "sweep_submit"], "sweep_slurm")
    overrides = cli.config_overrides(config, FLAGS.experiment, EXPERIMENTS_DIR)
    distributed.initialize_distributed(
        FLAGS.coordinator_address,
        FLAGS.num_processes,
        FLAGS.process_id,
        timeout_s=FLAGS.distributed_timeout_s,
    )
    if FLAGS.sweep is None:
        cli.check_read(config, overrides)  # A sweep checks each of its runs.
        train_and_evaluate(config, workdir)
        return
    plan = sweep.Plan(  # --sweep='' too: an error there rather than a plain run.
        dry_run=FLAGS.sweep_dry_run,
        slurm=FLAGS.sweep_slurm,
        max_parallel=FLAGS.sweep_max_parallel,
        submit=FLAGS.sweep_submit,
        metric=FLAGS.sweep_metric,
        overrides=overrides,
        launcher=LAUNCHER,
    )
    sweep.launch(
        FLAGS.experiment, config, workdir, FLAGS.sweep, train_fn=train_and_evaluate, plan=plan
    )


if __name__ == "__main__":
    _, experiment = cli.experiment_config(sys.argv, EXPERIMENTS_DIR)
    cli.define_config(experiment, "The experiment's config; override with --config.X=V.")
    cli.run(main)
