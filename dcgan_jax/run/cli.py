"""The one convention of the commands (``launch.py``, ``python -m dcgan_jax.{analysis,classifier,
evaluation,sweep}``), each running its ``main`` through :func:`run`: a user's mistake is one
``error: ...`` line and exit 2, never a traceback; a signal exits 128 + its number, as shells
report."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import ml_collections
from absl import app, logging

from dcgan_jax.gan import ConfigError, RunError
from dcgan_jax.gan.config import (
    available_experiments,
    check_override_names,
    default_config,
    load_experiment,
)
from dcgan_jax.run import control, writers

HELP_FLAGS = {"--help", "--helpshort", "--helpfull", "-?"}  # absl's; it has no -h.


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def experiment_config(
    argv: list[str], experiments_dir: Path
) -> tuple[str, ml_collections.ConfigDict]:
    """(name, config) of ``--experiment``, read before flag parsing since it decides which config
    the ``--config.X`` flags override; an unknown experiment or field fails here, naming it."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--experiment=")]
    given += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--experiment"]
    if len(given) > 1:
        fail(f"--experiment is given {len(given)} times ({', '.join(given)}): give it once")
    name = given[0] if given else None
    listed = f"Available experiments: {', '.join(available_experiments(experiments_dir))}"
    if name is None and HELP_FLAGS & set(argv):
        print(
            f"{listed}\nRun one with --experiment=NAME; its config fields are flags "
            "--config.FIELD=VALUE.\n"
        )
        return "", default_config()  # absl then prints the flags and exits.
    if name is None:
        fail(f"--experiment is required. {listed}")
    try:
        config = load_experiment(name, experiments_dir)
        check_override_names(argv, config)
    except ConfigError as e:
        fail(str(e))
    return name, config


def run(main: Callable[[list[str]], None]) -> None:
    """``app.run(main)``, with a :class:`~dcgan_jax.config.RunError` (also logged, for train.log) as
    one error line."""

    def guarded(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        writers.library_noise_to_log()
        try:
            with writers.logging_to():
                main(argv)
        except control.Interrupted as e:  # The loop has logged how it stopped.
            sys.exit(e.exit_status)
        except RunError as e:
            # For train.log; the console gets the error line.
            logging.error("%s", e, extra=writers.FILE_ONLY)
            fail(str(e))

    try:
        app.run(guarded)
    except SystemExit as e:
        # absl exits 1 after the help asked for (0 then) and after a flag it cannot parse.
        if e.code == 1:
            sys.exit(0 if HELP_FLAGS & set(sys.argv) else 2)
        raise
