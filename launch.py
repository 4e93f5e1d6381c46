"""Runs an experiment: ``python launch.py --experiment=NAME [--workdir=DIR] [--config.FIELD=VALUE ...]``.

``experiments/NAME.py`` returns the run's config; any field can be overridden by a flag.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from dcgan_jax import config as config_lib
from dcgan_jax.checkpoints import CheckpointError
from dcgan_jax.data import DataError
from dcgan_jax.run_lock import WorkdirLockedError

EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"

flags.DEFINE_string("experiment", None, "Name of a file in experiments/ (without .py).")
flags.DEFINE_string("workdir", None, "Where the run writes everything; default runs/<experiment>.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a multi-process run (jax.distributed).")
flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
flags.DEFINE_integer("distributed_timeout_s", 300, "Give up joining a multi-process run after this many seconds.")
flags.DEFINE_string(
    "sweep",
    None,
    "A grid of runs: 'FIELD=V1,V2 FIELD=V3,V4' (fields as in --config.FIELD), each in --workdir/<overrides>.",
)
flags.DEFINE_bool("sweep_dry_run", False, "Only print the sweep's commands, one a line.")
flags.DEFINE_string("sweep_metric", None, "Metric the sweep plots over steps (default eval/fid, else g_loss).")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _experiment_name(argv: list[str]) -> str:
    """--experiment is needed before flag parsing: it decides which config the flags override."""
    for i, arg in enumerate(argv):
        if arg.startswith("--experiment="):
            return arg.split("=", 1)[1]
        if arg == "--experiment" and i + 1 < len(argv):
            return argv[i + 1]
    known = ", ".join(config_lib.available_experiments(EXPERIMENTS_DIR))
    _fail(f"--experiment is required. Available experiments: {known}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    config = flags.FLAGS.config
    default_workdir = flags.FLAGS.experiment + ("_sweep" if flags.FLAGS.sweep else "")
    workdir = flags.FLAGS.workdir or str(Path("runs") / default_workdir)
    from dcgan_jax.classifier import ClassifierMissingError
    from dcgan_jax.parallel import DistributedError, initialize_distributed
    from dcgan_jax.train import TrainingDiverged, train
    from dcgan_jax.writers import quiet_library_info

    quiet_library_info()
    if config.get("task") == "classifier":  # The evaluation's feature network (experiments/*_classifier.py).
        from dcgan_jax.classifier import train_classifier

        try:
            train_classifier(config, config.output_dir or None)
        except (DataError, ValueError) as e:
            _fail(str(e))
        return
    try:
        config_lib.validate(config)
        FLAGS = flags.FLAGS
        initialize_distributed(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed_timeout_s
        )
        if FLAGS.sweep:
            _sweep(config, Path(workdir), train)
        else:
            train(config, workdir)
    except (
        config_lib.ConfigError,
        DataError,
        CheckpointError,
        DistributedError,
        WorkdirLockedError,
        TrainingDiverged,
        ClassifierMissingError,
    ) as e:
        logging.error("%s", e)
        _fail(str(e))


def _sweep(config, sweep_dir: Path, train) -> None:
    from dcgan_jax import sweep

    runs = sweep.expand(flags.FLAGS.sweep, config)
    if flags.FLAGS.sweep_dry_run:
        base_flags = [arg for arg in sys.argv[1:] if arg.startswith("--config.")]
        print("\n".join(sweep.commands(flags.FLAGS.experiment, sweep_dir, runs, base_flags)))
        return
    logging.info("Sweep of %d runs in %s", len(runs), sweep_dir)
    sweep.run_sweep(config, runs, sweep_dir, train, flags.FLAGS.sweep_metric)


def run() -> None:
    name = _experiment_name(sys.argv)
    try:
        config = config_lib.load_experiment(name, EXPERIMENTS_DIR)
        config_lib.check_override_names(sys.argv, config)
    except config_lib.ConfigError as e:
        _fail(str(e))
    config_flags.DEFINE_config_dict("config", config, "The experiment's config; override fields with --config.X=V.")
    app.run(main)


if __name__ == "__main__":
    run()
