"""Grids of runs over config fields, and the tables that compare them (docs/benchmarks.md):
``launch.py --sweep='optimizer.learning_rate=1e-4,2e-4 model.base_width=32,64'`` runs the grid, each
run in ``WORKDIR/<its overrides>`` (a rerun skips the runs already at their ``train.num_steps``);
``python -m dcgan_jax.sweep --runs=DIR`` tabulates any folder of runs."""

import copy
import csv
import dataclasses
import itertools
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from dcgan_jax.evaluation import reports
from dcgan_jax.gan import config as config_lib
from dcgan_jax.run import cli, images, writers
from dcgan_jax.run.control import (  # Every run writes its status.json.
    Interrupted,
    TrainingDiverged,
    WorkdirError,
    check_writable_folder,
    nothing_to_do,
    read_status,
)
from dcgan_jax.tools import slurm

FINAL_METRICS = ("d_loss", "g_loss", "d_real_acc", "d_fake_acc")
FINAL_EVAL_METRICS = (
    "fid",
    "kid",
    "precision",
    "recall",
    "density",
    "coverage",
    "classes_covered",
    "num_samples",
)


MAX_NAME_BYTES = 255  # Of a file name: Linux's and macOS's file systems.


@dataclasses.dataclass(frozen=True)
class SweepRun:
    # The overrides as given, e.g. "optimizer.learning_rate=1e-4,model.base_width=32".
    name: str
    overrides: dict[str, Any]  # Dotted field -> typed value.

    @property
    def folder(self) -> str:
        """Its sub-workdir: its name, a / of a value (a path) written %2F so that it nests none."""
        return self.name.replace("/", "%2F")


def _typed(field: str, text: str, default: Any) -> Any:
    kind = type(default)
    booleans = {"true": True, "1": True, "false": False, "0": False}
    try:
        if kind is bool:
            return booleans[text.lower()]
        return kind(text) if kind in (int, float) else text
    except (KeyError, ValueError):
        raise config_lib.ConfigError(
            f"--sweep: {field}={text!r} is not a valid {kind.__name__}"
        ) from None


def expand(spec: str, base: ml_collections.ConfigDict, given=()) -> list[SweepRun]:
    """The grid of ``spec`` ('FIELD=V1,V2 FIELD=V3'), every run's config validated before any
    starts; neither its fields nor those ``given`` (the command's) may be ones a run never reads."""
    known = config_lib.flatten(base)
    axes = []
    for item in spec.split():
        field, equals, values = item.partition("=")
        if not equals:
            raise config_lib.ConfigError(f"--sweep: {item!r} is not FIELD=VALUE1,VALUE2,...")
        if field not in known:
            raise config_lib.ConfigError(f"--sweep: {cli.unknown_field_message(field, known)}")
        if field in (axis[0][0] for axis in axes):
            raise config_lib.ConfigError(
                f"--sweep: {field} is given twice; list its values once: {field}=V1,V2,V3"
            )
        if field in given:  # The run's own value would win: the flag would change nothing.
            raise config_lib.ConfigError(
                f"--sweep: {field} is swept and also given as --config.{field}; give it once"
            )
        texts = values.split(",")
        if not all(texts):  # "" too: its one text is empty.
            raise config_lib.ConfigError(f"--sweep: {field} has an empty value in {values!r}")
        axis = [(field, text, _typed(field, text, known[field])) for text in texts]
        if len({repr(value) for _, _, value in axis}) < len(axis):  # Two runs of one config.
            raise config_lib.ConfigError(f"--sweep: {field} lists one value twice in {values!r}")
        axes.append(axis)
    if not axes:
        raise config_lib.ConfigError("--sweep is empty: give FIELD=VALUE1,VALUE2 ...")
    runs = []
    for combination in itertools.product(*axes):
        run = SweepRun(
            name=",".join(f"{field}={text}" for field, text, _ in combination),
            overrides={field: value for field, _, value in combination},
        )
        config = configure(base, run)
        config_lib.validate(config)  # Impossible values fail now, not hours in.
        cli.check_read(config, [*given, *run.overrides], f"--sweep: {run.name}: ")
        if len(run.folder.encode()) > MAX_NAME_BYTES:
            raise config_lib.ConfigError(
                f"--sweep: the run folder {run.folder[:60]}... would be a name of "
                f"{len(run.folder.encode())} bytes, over the {MAX_NAME_BYTES} a file system takes: "
                "give the fields of one value as --config.FIELD=VALUE flags, not in --sweep"
            )
        runs.append(run)
    return runs


def configure(base: ml_collections.ConfigDict, run: SweepRun) -> ml_collections.ConfigDict:
    config = copy.deepcopy(base)
    config.update_from_flattened_dict(run.overrides)
    return config


def commands(
    experiment: str, sweep_dir: Path, runs: list[SweepRun], overrides: dict, launcher: Path
) -> list[list[str]]:
    """One ``launch.py`` argv a run, the command's ``overrides`` before its own;
    interpreter, launcher and workdir absolute, so it runs the same from any folder or shell (a
    scheduler's)."""
    sweep_dir, launcher = Path(sweep_dir).absolute(), str(Path(launcher).absolute())
    start = [sys.executable, launcher, f"--experiment={experiment}"]
    return [
        # The run's name is its FIELD=VALUE pairs, each a --config flag.
        [*start, f"--workdir={sweep_dir / run.folder}"]
        + [f"--config.{field}={value}" for field, value in overrides.items()]
        + [f"--config.{pair}" for pair in run.name.split(",")]
        for run in runs
    ]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What ``launch.py --sweep`` does with the grid: print it, write a SLURM job array, or run it
    here."""

    dry_run: bool = False
    slurm: str | None = None  # Write the job array here (and its manifest beside it).
    max_parallel: int = 4  # Array tasks running at once (sbatch --array=0-N%P).
    submit: bool = False  # Also hand the script to sbatch.
    metric: str | None = None  # Plotted over steps in the results.
    # The command's --config overrides {field: value}, repeated in every run's.
    overrides: dict = dataclasses.field(default_factory=dict)
    launcher: Path = Path("launch.py")  # The script each run's command calls.


def launch(
    experiment: str,
    base: ml_collections.ConfigDict,
    sweep_dir: Path,
    spec: str,
    *,
    train_fn,
    plan: Plan,
) -> None:
    """``launch.py --sweep=SPEC``: the grid's commands, a SLURM array of them, or its runs one after
    another."""
    if plan.slurm and plan.metric:
        raise config_lib.ConfigError(
            f"--sweep_metric={plan.metric}: a SLURM array's runs end on the cluster; plot the "
            "metric then with python -m dcgan_jax.sweep --runs=DIR --metric=NAME"
        )
    script = Path(plan.slurm or "")
    if plan.slurm and not plan.dry_run:  # Both folders checked before any work, as --workdir is.
        if script.is_dir():
            raise WorkdirError(
                f"--sweep_slurm={plan.slurm}: a folder; name the script file to write"
            )
        check_writable_folder(script.absolute().parent, "--sweep_slurm")
        check_writable_folder(sweep_dir, "--workdir")
    runs = expand(spec, base, plan.overrides)
    argvs = commands(experiment, sweep_dir, runs, plan.overrides, plan.launcher)
    if plan.dry_run:
        print("\n".join(shlex.join(argv) for argv in argvs))
    elif plan.slurm:
        script = slurm.write_array(script, runs, argvs, sweep_dir, plan.max_parallel)
        print(
            slurm.submit(script)
            if plan.submit
            else f"Wrote {script}; submit it with: sbatch {script}"
        )
    else:
        logging.info("Sweep of %d runs in %s", len(runs), sweep_dir)
        run_sweep(base, runs, sweep_dir, train_fn, plan.metric)


def run_sweep(
    base: ml_collections.ConfigDict,
    runs: list[SweepRun],
    sweep_dir: Path,
    train_fn,
    metric: str | None = None,
) -> list[dict]:
    """Trains the runs one after another with ``train_fn(config, workdir)`` (a signal stops the
    sweep, a diverged run is a result); returns the results rows."""
    for i, run in enumerate(runs, 1):
        workdir = sweep_dir / run.folder
        config = configure(base, run)
        if nothing_to_do(workdir, config.train.num_steps):
            logging.info("Sweep run %d/%d %s: ended earlier, skipped.", i, len(runs), run.name)
            continue
        logging.info("Sweep run %d/%d: %s", i, len(runs), run.name)
        try:
            train_fn(config, workdir)
        # A diverged run is a result of the sweep (its status.json says so), not a reason to stop.
        except TrainingDiverged as e:
            logging.error("Sweep run %s diverged: %s", run.name, e)
            continue
        # A signal stops the sweep; the rerun skips what finished and resumes this run.
        except Interrupted:
            logging.warning("Sweep stopped during %s; rerun the same command to go on.", run.name)
            raise
    return write_results(sweep_dir, metric)


def _run_dirs(sweep_dir):
    if not Path(sweep_dir).is_dir():
        raise config_lib.ConfigError(f"--runs={sweep_dir}: not a folder (a sweep's --workdir)")
    return sorted(p for p in Path(sweep_dir).iterdir() if (p / "config.json").exists())


def results(sweep_dir: str | Path) -> list[dict]:
    """One row per run folder under ``sweep_dir``: the config fields that differ, steps, wall time,
    the final training metrics, the last evaluation's scores and the best FID."""
    sweep_dir = Path(sweep_dir)
    run_dirs = _run_dirs(sweep_dir)
    if not run_dirs:
        is_run = (sweep_dir / "config.json").exists()
        hint = " (it is a run itself: give the folder that holds runs)" if is_run else ""
        raise config_lib.ConfigError(f"no runs (folders with a config.json) in {sweep_dir}{hint}")
    configs = {d: config_lib.flatten(cli.read_json(d / "config.json")) for d in run_dirs}
    fields = sorted({k for c in configs.values() for k in c})
    varying = [f for f in fields if len({json.dumps(c.get(f)) for c in configs.values()}) > 1]
    rows = []
    for d in run_dirs:
        metrics_rows = writers.read_metrics(d / "metrics.jsonl")
        training = [r for r in metrics_rows if "d_loss" in r]
        evals = [r for r in metrics_rows if "eval/fid" in r]
        status = read_status(d)
        row = {"run": d.name, **{f: configs[d].get(f) for f in varying}}
        row["steps"] = status.get("step", training[-1]["step"] if training else 0)
        row["wall_s"] = round(status.get("wall_seconds", float("nan")), 1)
        row["status"] = status.get("ended") or (
            "finished" if status.get("finished") else "unfinished"
        )
        for key in FINAL_METRICS:
            row[key] = round(training[-1][key], 4) if training else None
        for key in FINAL_EVAL_METRICS:
            value = evals[-1].get(f"eval/{key}") if evals else None
            row[f"final_{key}"] = None if value is None else round(value, 3)
        row["best_fid"] = round(min(r["eval/fid"] for r in evals), 3) if evals else None
        rows.append(row)
    return rows


SETTING_METRICS = tuple(
    "steps final_fid best_fid final_kid final_precision final_recall final_density "
    "final_coverage".split()
)


def _by_setting(rows: list[dict]) -> tuple[list[str], dict[str, list[dict]]]:
    """(the fields that tell settings apart: those that vary but ``seed``, each setting's runs by
    its label, e.g. "optimizer.learning_rate=1e-4")."""
    keys = list(rows[0])  # "run", the fields that vary, "steps" and the measurements.
    fields = [k for k in keys[1 : keys.index("steps")] if k != "seed"]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        label = ",".join(f"{f}={row[f]}" for f in fields) or "all runs"
        groups.setdefault(label, []).append(row)
    return fields, groups


def settings(rows: list[dict]) -> list[dict]:
    """One row per setting (runs differing only in ``seed``): its fields, n, the seeds, and the mean
    and sd (None for one run) of each of :data:`SETTING_METRICS` over the runs that have it."""
    fields, groups = _by_setting(rows)
    table = []
    for members in groups.values():
        setting = {f: members[0][f] for f in fields}
        setting.update(
            n=len(members), seeds=" ".join(str(r.get("seed", "")) for r in members).strip()
        )
        for key in SETTING_METRICS:
            values = [r[key] for r in members if r[key] is not None]
            setting[f"{key}_mean"] = round(statistics.fmean(values), 3) if values else None
            setting[f"{key}_sd"] = round(statistics.stdev(values), 3) if len(values) > 1 else None
        table.append(setting)
    return table


def settings_markdown(table: list[dict]) -> str:
    """The per-setting table with each metric as "mean +- sd" in one cell."""
    shown = []
    for setting in table:
        row = {k: v for k, v in setting.items() if not k.endswith(("_mean", "_sd"))}
        for key in SETTING_METRICS:
            mean, sd = setting[f"{key}_mean"], setting[f"{key}_sd"]
            row[key] = (
                None if mean is None else (f"{mean:g}" if sd is None else f"{mean:g} +- {sd:g}")
            )
        shown.append(row)
    return reports.markdown(shown)


def _write_csv(path, rows):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_results(sweep_dir: str | Path, metric: str | None = None) -> list[dict]:
    """Prints the Markdown tables and writes results.md, results.csv (a row per run), settings.csv
    (per setting: mean and sd over its seeds) and the plots of ``metric``: every run, and +- sd
    bands."""
    sweep_dir = Path(sweep_dir)
    rows = results(sweep_dir)
    run_dirs = _run_dirs(sweep_dir)
    table = settings(rows)
    text = "## Per setting (mean +- sd over seeds)\n\n" + settings_markdown(table)
    text += "\n\n## Per run\n\n" + reports.markdown(rows) + provenance_note(run_dirs)
    (sweep_dir / "results.md").write_text(text + "\n")
    _write_csv(sweep_dir / "results.csv", rows)
    _write_csv(sweep_dir / "settings.csv", table)
    if metric is None:
        metric = "eval/fid" if any(r["best_fid"] is not None for r in rows) else "g_loss"
    print(text)
    name = metric.replace("/", "_")
    plots = [images.plot_metric(run_dirs, metric, sweep_dir / f"{name}.png")]
    if any(setting["n"] > 1 for setting in table):
        groups = {
            label: [sweep_dir / r["run"] for r in members]
            for label, members in _by_setting(rows)[1].items()
        }
        plots.append(images.plot_metric_bands(groups, metric, sweep_dir / f"{name}_bands.png"))
    tables = ", ".join(str(sweep_dir / n) for n in ("results.md", "results.csv", "settings.csv"))
    logging.info("Results: %s; %s over steps: %s", tables, metric, ", ".join(map(str, plots)))
    return rows


def provenance_note(run_dirs: list[Path]) -> str:
    """What the evaluation scores were made with (each run's ``eval/provenance.json``): a line per
    kind."""
    found = {json.dumps(writers.read_record(d / "eval/provenance.json", {})) for d in run_dirs}
    note = ""
    for p in map(json.loads, sorted(found - {"{}"})):
        try:
            ref = p["reference"]
            note += (
                f"\n\nScores: {p['num_samples']} samples of each run's {p['latents']}, truncation "
                f"{p['truncation']:g}; "
                f"features: {p['feature_network']}, {p['feature_layer']}, weights "
                f"{p['feature_weights_hash']}; "
                f"reference: {ref['dataset']}/{ref['split']}, {ref['num_images']} images, "
                f"sha256:{ref['images_sha256']}."
            )
        except (KeyError, TypeError, ValueError) as e:  # Not as the run writes it.
            logging.warning("An eval/provenance.json is damaged (%r); left out of the table", e)
    return note
