"""The one convention of the commands (``launch.py``, ``python -m dcgan_jax.{analysis,classifier,
evaluation,sweep}``), each running its ``main`` through :func:`run`: a user's mistake is one
``error: ...`` line and exit 2, never a traceback; a signal exits 128 + its number, as shells
report (Ctrl-C with one warning line, not a traceback)."""

import difflib
import importlib.util
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from dcgan_jax.gan import ConfigError, RunError
from dcgan_jax.gan.config import default_config, flatten
from dcgan_jax.run import control, writers
from dcgan_jax.run.writers import fail

HELP_FLAGS = {"--help", "--helpshort", "--helpfull", "-?"}  # absl's; it has no -h.


def check_printable(argv: list[str]) -> None:
    """Control characters (a newline, an escape) in a path or value are refused before anything
    reads them: such a value could end a line of a generated script and start a command."""
    for arg in argv:
        if has_control_characters(arg):
            fail(f"{arg!r}: control characters are not allowed in flags, paths or values")


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a C0 control character or DEL."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def check_flags_need(flag_values, dependents: list[str], needed: str) -> None:
    """Flags that act only with ``--needed``, given without it: a user's mistake, never ignored."""
    given = [f"--{name}" for name in dependents if flag_values[name].present]
    if given and not flag_values[needed].present:
        fail(f"{', '.join(given)}: acts only with --{needed}; give --{needed} too, or leave it out")


def experiment_config(
    argv: list[str], experiments_dir: Path
) -> tuple[str, ml_collections.ConfigDict]:
    """(name, config) of ``--experiment``, read before flag parsing since it decides which config
    the ``--config.X`` flags override; an unknown experiment or field fails here, naming it."""
    argv = expand_flagfiles(argv)
    check_printable(argv)
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
        return name, load_experiment(name, experiments_dir)
    except ConfigError as e:
        fail(str(e))


def expand_flagfiles(argv: list[str]) -> list[str]:
    """``argv`` with each ``--flagfile=F`` replaced by the flags in F, as absl reads them: what is
    checked before absl parses the flags is what it parses."""
    try:
        return [*argv[:1], *flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)]
    except flags.Error as e:
        fail(str(e).removeprefix("ERROR:: "))


def run(main: Callable[[list[str]], None]) -> None:
    """``app.run(main)``, with a :class:`~dcgan_jax.config.RunError` (also logged, for train.log) as
    one error line."""

    def guarded(argv: list[str]) -> None:
        check_printable(expand_flagfiles(sys.argv))
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        expand_home(flags.FLAGS)
        writers.library_noise_to_log()
        try:
            with writers.logging_to():
                main(argv)
        except control.Interrupted as e:  # The loop has logged how it stopped.
            sys.exit(e.exit_status)
        except KeyboardInterrupt:  # Ctrl-C outside training (SIGTERM and SIGHUP end it at once).
            logging.warning("SIGINT received: stopped")
            sys.exit(128 + signal.SIGINT)
        except BrokenPipeError:  # The reader of the output left (``| head``): end as a shell tool.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + signal.SIGPIPE)
        except RunError as e:
            # For train.log; the console gets the error line.
            logging.error("%s", e, extra=writers.FILE_ONLY)
            fail(str(e))
        except (RuntimeError, AssertionError):
            message = backend_failure()
            if message is None:
                raise
            fail(message)

    try:
        app.run(guarded)
    except SystemExit as e:
        # absl exits 1 after the help asked for (0 then) and after a flag it cannot parse.
        if e.code == 1:
            sys.exit(0 if HELP_FLAGS & set(sys.argv) else 2)
        raise


def backend_failure() -> str | None:
    """Why JAX starts no backend here, ``JAX_PLATFORMS`` naming one this machine lacks (a typo,
    ``cuda`` on a login node), or None when it starts one: asked again of JAX after an error."""
    try:
        jax.devices()
    except RuntimeError as e:  # "Unable to initialize backend ...", with what to do.
        return str(e)
    except AssertionError:  # A platform JAX knows with its plugin not installed (cuda here).
        return (
            f"JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS')}: no such backend on this machine "
            "(its plugin not installed?); set JAX_PLATFORMS='' to automatically choose an "
            "available backend"
        )
    return None


def expand_home(flag_values) -> None:
    """A path flag's leading ``~`` as the shell expands it in ``--workdir ~/x`` but not in
    ``--workdir=~/x``: never a folder named ``~`` in the current one."""
    for name in flag_values:
        flag = flag_values[name]
        if flag.present and isinstance(flag.value, str) and flag.value.startswith("~"):
            flag.value = os.path.expanduser(flag.value)


def define_config(config: ml_collections.ConfigDict, help_text: str) -> None:
    """The ``--config`` flag of a command, its ``--config.X`` overrides checked first: defining it
    applies them, and a field that does not exist would be an AttributeError traceback there."""
    try:
        check_override_names(expand_flagfiles(sys.argv), config)
    except ConfigError as e:
        fail(str(e))
    config_flags.DEFINE_config_dict("config", config, help_text)


def check_override_names(argv: list[str], config: ml_collections.ConfigDict) -> None:
    """Rejects ``--config.X=...`` (and ``--noconfig.X``) flags whose field X does not exist,
    suggesting the closest."""
    known = sorted(flatten(config))
    for arg in argv:
        prefix, dot, rest = arg.partition(".")
        field = rest.split("=", 1)[0]
        if prefix in ("--config", "--noconfig") and dot and field not in known:
            raise ConfigError(f"{prefix}.{unknown_field_message(field, known)}")


def check_fields(config: ml_collections.ConfigDict) -> None:
    """ConfigError unless ``config`` has the defaults' fields and types: a field no run reads (a
    typo such as ``train.lr`` in an experiment file or a script) would otherwise be ignored."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"config: a {type(config).__name__}, not an ml_collections.ConfigDict; start from "
            "dcgan_jax.default_config() or an experiment's get_config()"
        )
    defaults, flat = flatten(default_config()), flatten(config)
    if unknown := sorted(flat.keys() - defaults.keys()):
        raise ConfigError(f"--config.{unknown_field_message(unknown[0], defaults)}")
    for field, default in defaults.items():
        if field not in flat:
            raise ConfigError(f"--config.{field}: missing; start from dcgan_jax.default_config()")
        kinds = (int, float) if isinstance(default, float) else type(default)
        if not isinstance(flat[field], kinds):
            raise ConfigError(
                f"--config.{field}={flat[field]!r}: must be of type {type(default).__name__}"
            )


def unknown_field_message(field: str, known) -> str:
    """One line naming the unknown ``field``, the closest known ones and all of them."""
    hint = did_you_mean(field, known)
    return f"{field}: no such config field.{hint} Known fields: {', '.join(sorted(known))}"


def did_you_mean(name: str, known) -> str:
    """' Did you mean: a, b?' for the ``known`` names closest to ``name``; '' when none is close."""
    close = difflib.get_close_matches(name, sorted(known), n=3)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def read_json(path: Path) -> ml_collections.ConfigDict:
    """A run's ``config.json``; an unreadable file, invalid JSON or JSON that is not an object is a
    ConfigError naming the file."""
    try:
        stored = json.loads(Path(path).read_text())
        why = "" if isinstance(stored, dict) else "not a JSON object"
    except (OSError, ValueError) as e:
        why = str(e)
    if why:
        raise ConfigError(
            f"{Path(path).absolute()}: cannot read the run's config ({why}); the next training run "
            "in that folder rewrites it (the checkpoints carry their own copy)"
        )
    return ml_collections.ConfigDict(stored)


def config_overrides(
    config: ml_collections.ConfigDict, experiment: str, experiments_dir: Path
) -> dict[str, object]:
    """{field: value} where ``config`` differs from the experiment's: the command's overrides
    however they were spelled (``--config.X V``, ``--noconfig.X``), to check or to repeat in another
    command."""
    base = flatten(load_experiment(experiment, experiments_dir))
    return {field: value for field, value in flatten(config).items() if base[field] != value}


# Fields a run never reads with some values of another: {field: (the other, those values)}.
UNREAD_WITH = {
    "loss.generator": ("loss.name", ("hinge", "lsgan", "wgan_gp")),
    "loss.gp_weight": ("loss.name", ("bce", "hinge", "lsgan")),  # Losses without a penalty.
    "loss.r1_every": ("loss.r1_gamma", (0,)),
    "train.top_k_min": ("train.top_k_decay", (0,)),
    "dataset.labels": ("model.num_classes", (0,)),
    "dataset.data_dir": ("dataset.name", ("synthetic",)),
    "dataset.split": ("dataset.name", ("image_folder", "synthetic")),  # All their images.
    "dataset.num_synthetic": (
        "dataset.name",
        ("fashion_mnist", "mnist", "cifar10", "celeb_a", "image_folder"),
    ),
    "train.divergence_lr_factor": ("train.on_divergence", ("stop",)),
    "train.max_divergence_restores": ("train.on_divergence", ("stop",)),
    "train.collapse_warmup": ("train.collapse_threshold", (0,)),
    "eval.inception_fid": ("eval.every", (0,)),
}


def unread(config: ml_collections.ConfigDict) -> dict[str, str]:
    """{field: why} for each field set away from its default that ``config`` never reads: its value
    changes nothing (and a sweep over it trains one run several times)."""
    defaults, flat = flatten(default_config()), flatten(config)
    return {
        field: f"{field}={flat[field]} changes nothing with {other}={flat[other]}"
        for field, (other, values) in UNREAD_WITH.items()
        if flat[field] != defaults[field] and flat[other] in values
    }


def check_read(config: ml_collections.ConfigDict, fields, where: str = "--config.") -> None:
    """ConfigError when one of ``fields`` (the user's) is a field ``config`` never reads."""
    problems = unread(config)
    for field in fields:
        if why := problems.get(field):
            raise ConfigError(f"{where}{why}; leave it out, or set what it needs")


def available_experiments(experiments_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(experiments_dir).glob("*.py") if not p.stem.startswith("_"))


def load_experiment(name: str, experiments_dir: Path) -> ml_collections.ConfigDict:
    """Imports ``experiments_dir/NAME.py`` and returns its ``get_config()``. ``name`` is a file name
    in that folder, never a path: ``--experiment=../x`` runs nothing."""
    known = available_experiments(experiments_dir)
    if name not in known:
        raise ConfigError(
            f"--experiment={name}: no such experiment (the name of a file in {experiments_dir} "
            f"without .py, not a path).{did_you_mean(name, known)} Available experiments: "
            f"{', '.join(known) or 'none'}"
        )
    path = Path(experiments_dir) / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"experiments.{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not callable(getattr(module, "get_config", None)):
            raise ConfigError("defines no get_config() returning the experiment's config")
        config = module.get_config()
        check_fields(config)
    except Exception as e:  # The researcher's own code: the line that failed, not a traceback.
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
        where = f"{path}, line {lines[-1]}" if lines else path  # A SyntaxError's text has its own.
        what = e if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
        raise ConfigError(f"{where}: {what}") from e
    return config
