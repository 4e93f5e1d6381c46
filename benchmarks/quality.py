"""Sample quality after equal wall-clock training: our experiments against the PyTorch reference.

    DCGAN_JAX_DATA_DIR=../shared/data python benchmarks/quality.py \\
        --torch_python=/tmp/torch-ref/bin/python [--seconds=600] [--seeds=0,1] \\
        [--benchmarks=fashion,mnist] [--workdir=/tmp/dcgan_jax_quality] [--out=benchmarks/quality]

One run after another, alone on the machine, each ``--seconds`` of wall clock (ours:
``train.max_seconds``, so data loading and compilation count against it; the reference's clock
starts after its data loading):

- fashion: the unsupervised ``fashion_dcgan`` for each of ``--seeds`` (the headline: like for like
  with the reference, which is not given labels either; it conditions on clusters of the pixels it
  finds itself), the same without clusters (the plain DCGAN, a row of its own), the
  class-conditional ``fashion_cdcgan`` (a second, labelled row), and
  ``../shared/bench/torch_reference.py``; 10,000 samples of each scored by
  ``dcgan_jax.evaluate`` against the Fashion-MNIST test split.
- mnist: ``mnist_dcgan`` and the reference, both trained on the MNIST images this machine has
  (the 10,000 of the test split: the reference reads them from a folder where they are its
  ``train-images``), scored against that same split.

Our runs go to ``--workdir/<experiment>[_plain]_seed<S>``, the reference's samples to
``--workdir/reference_<dataset>.npz``; a rerun reuses each that is already there (a run folder only
if it stopped at the time limit with exactly the config it would be given, ``train.num_steps``
aside), so an interrupted benchmark goes on where it stopped. Writes ``results.md`` (the tables, the
targets of issue 18 checked, the commands), ``results.json`` and sample grids into ``--out``.
``--truncations`` adds rows for the first seed sampled with its latents scaled toward 0: points on
its precision/recall trade-off, labelled as such.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

import dcgan_jax
from dcgan_jax.gan import config as config_lib
from dcgan_jax.gan import data
from dcgan_jax.run import cli, control, images
from dcgan_jax.tools import sweep

REPO = Path(__file__).resolve().parent.parent
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"
NUM_SAMPLES = 10_000
COLUMNS = ("fid", "precision", "recall", "density", "coverage", "classes_covered")


@dataclasses.dataclass(frozen=True)
class Benchmark:
    dataset: str
    headline: str  # The unsupervised experiment, against the reference.
    conditional: str | None  # A class-conditional experiment, its own labelled row.
    overrides: tuple[str, ...] = ()  # FIELD=VALUE for every run of ours.
    # FIELD=VALUE making the headline the plain DCGAN (a row for each seed); () = none.
    plain: tuple[str, ...] = ()
    reference_images: str = "train-images-idx3-ubyte.gz"  # The IDX file the reference trains on.


BENCHMARKS = {
    "fashion": Benchmark(
        "fashion_mnist",
        "fashion_dcgan",
        "fashion_cdcgan",
        plain=("model.num_classes=0", "dataset.labels=dataset"),
    ),
    "mnist": Benchmark(
        "mnist",
        "mnist_dcgan",
        None,
        overrides=("dataset.split=test",),
        reference_images="t10k-images-idx3-ubyte.gz",
    ),
}

flags.DEFINE_float("seconds", 600, "Wall-clock training budget of each run.")
flags.DEFINE_list("seeds", ["0", "1"], "Seeds of the headline (unsupervised) fashion_dcgan runs.")
flags.DEFINE_list("benchmarks", ["fashion", "mnist"], f"Which of {', '.join(BENCHMARKS)}.")
flags.DEFINE_string(
    "torch_python", None, "Python of a virtualenv with torch (see benchmarks/throughput.py)."
)
flags.DEFINE_string(
    "workdir", str(Path(tempfile.gettempdir()) / "dcgan_jax_quality"), "Runs and samples go here."
)
flags.DEFINE_string(
    "out", str(REPO / "benchmarks" / "quality"), "Where the tables and the grids go."
)
flags.DEFINE_bool(
    "references_only", False, "Only train the references (a later invocation reuses them)."
)
flags.DEFINE_list(
    "truncations",
    ["0.9", "0.8"],
    "Also score the first headline seed with its latents times these.",
)
flags.DEFINE_bool(
    "inception",
    False,
    "Add an Inception FID column to every table (tens of minutes a row on a CPU).",
)
flags.DEFINE_integer(
    "lucic_steps", 15_600, "The lucic benchmark's budget: G steps at batch 64 (20 epochs of 50k)."
)
flags.DEFINE_list("lucic_seeds", ["0", "1", "2"], "Seeds of each lucic experiment.")
flags.DEFINE_list(
    "lucic_experiments", ["fashion_dcgan"], "Experiments the lucic benchmark trains and scores."
)
flags.DEFINE_bool(
    "lucic_inception",
    True,
    "Score the lucic runs' Inception FID (about 13 minutes a run on 2 cores); without it, only the "
    "classifier's scores (precision, recall, coverage) for a comparison of those.",
)
flags.DEFINE_list(
    "lucic_average",
    ["1"],
    "A row per value: G's weights averaged over that many newest checkpoints (load(average=N)).",
)
flags.DEFINE_bool(
    "lucic_comparisons",
    True,
    "Also score the floor, the PyTorch reference and the plain DCGAN in the lucic benchmark.",
)
FLAGS = flags.FLAGS


def _overrides(bench: Benchmark, seed: int, steps: int = 0) -> list[str]:
    """FIELD=VALUE of one run of ours: the benchmark's, the seed, the time limit (or ``steps`` at
    batch 64)."""
    limit = [f"train.max_seconds={FLAGS.seconds:g}", "train.num_steps=100000000"]
    budget = [f"train.num_steps={steps}", "train.batch_size=64"] if steps else limit
    return [*bench.overrides, f"seed={seed}", *budget]


def _reusable(workdir: Path, experiment: str, overrides: list[str], ended: str) -> bool:
    """Whether ``workdir`` holds a run that ended as ``ended`` with the config ``overrides``
    give."""
    if control.read_status(workdir).get("ended") != ended or not (workdir / "config.json").exists():
        return False
    base = cli.load_experiment(experiment, REPO / "experiments")
    # The sweep's parsing: each field typed as its default.
    (run,) = sweep.expand(" ".join(overrides), base)
    wanted = config_lib.flatten(config_lib.resolved(sweep.configure(base, run)))
    # Fields added since the run was written had their defaults then, as load() reads them.
    stored = config_lib.flatten(config_lib.with_defaults(cli.read_json(workdir / "config.json")))
    return all(
        stored.get(k) == v
        for k, v in wanted.items()
        if k != "train.num_steps" or ended == "finished"
    )


def score(samples: np.ndarray, dataset: str, cache: Path, inception: bool) -> dict:
    """The classifier's scores of ``samples`` and, with ``inception``, the Inception FID and its
    seconds; cached in ``cache`` (JSON) for the same samples, since an Inception pass of 10,000
    images takes tens of minutes on a CPU."""
    digest = hashlib.sha256(np.ascontiguousarray(samples).tobytes()).hexdigest()
    stored = json.loads(cache.read_text()) if cache.exists() else {}
    if stored.get("samples_sha256") != digest:
        stored = {"samples_sha256": digest, **dcgan_jax.evaluate(samples, dataset=dataset)}
    if inception and "inception_fid" not in stored:
        started = time.monotonic()
        stored["inception_fid"] = dcgan_jax.evaluate(
            samples, dataset=dataset, feature_network="inception"
        )["fid"]
        stored["inception_seconds"] = round(time.monotonic() - started, 1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(stored, indent=2, default=float) + "\n")
    return stored


def train_ours(
    bench: Benchmark,
    experiment: str,
    seed: int,
    plain: bool = False,
    steps: int = 0,
    average: int = 1,
) -> dict:
    """Trains (or reuses) one run of ours (``plain``: with the benchmark's ``plain`` overrides;
    ``steps``: that many steps at batch 64 instead of ``--seconds``); its facts, its 10,000 samples'
    scores (G averaged over ``average`` checkpoints) and its command."""
    name = f"{experiment}{'_plain' if plain else ''}{f'_steps{steps}' if steps else ''}_seed{seed}"
    workdir = Path(FLAGS.workdir) / name
    overrides = [*(bench.plain if plain else ()), *_overrides(bench, seed, steps)]
    command = ["launch.py", f"--experiment={experiment}", f"--workdir={workdir}"]
    command += [f"--config.{item}" for item in overrides]
    reused = _reusable(workdir, experiment, overrides, "finished" if steps else "time_limit")
    if not reused:
        subprocess.run([sys.executable, str(REPO / command[0]), *command[1:]], check=True)
    run = dcgan_jax.load(workdir, average=average)
    status = control.read_status(workdir)
    samples = sample(run)
    with_inception = FLAGS.inception or (bool(steps) and FLAGS.lucic_inception)
    cache = workdir / ("scores.json" if average == 1 else f"scores_average{average}.json")
    scores = score(samples, bench.dataset, cache, with_inception)
    facts = {
        "steps": status["step"],
        "seconds": round(status["wall_seconds"], 1),
        "batch": run.config.train.batch_size,
    }
    return {
        "name": experiment,
        "seed": seed,
        "labels": _labels(run.config),
        "reused": reused,
        **facts,
        "scores": scores,
        "command": shlex.join(["python", *command]),
        "run": run,
        "samples": samples,
    }


def _labels(config) -> str:
    """What a run's G is conditioned on, for its row's label."""
    if not config.model.num_classes:
        return "unsupervised, unconditional"
    if config_lib.conditioned_on_classes(config):
        return "class-conditional: given the labels"
    return (
        f"unsupervised: conditioned on {config.model.num_classes} clusters of the pixels it "
        "found, no labels"
    )


def sample(run: dcgan_jax.TrainedGenerator, truncation: float = 1.0) -> np.ndarray:
    return np.concatenate(
        [run.sample(1000, seed=i, truncation=truncation) for i in range(NUM_SAMPLES // 1000)]
    )


def train_reference(bench: Benchmark, inception: bool = False) -> dict:
    """The reference's 10,000 samples after ``--seconds`` on the benchmark's images (or those of an
    earlier invocation), scored."""
    samples_path = Path(FLAGS.workdir) / f"reference_{bench.dataset}.npz"
    report_path = samples_path.with_suffix(".json")
    if not report_path.exists():
        if not FLAGS.torch_python:
            raise app.UsageError(
                f"give --torch_python to train the reference (no {report_path} to reuse)"
            )
        source = data.resolve_data_dir(_dataset_config(bench))
        if source is None:
            raise app.UsageError(
                f"set DCGAN_JAX_DATA_DIR: the reference reads {bench.dataset}'s IDX files"
            )
        folder = Path(FLAGS.workdir) / f"reference_{bench.dataset}_data"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / "train-images-idx3-ubyte.gz"
        link.unlink(missing_ok=True)
        link.symlink_to((source / bench.reference_images).absolute())
        args = [
            "--data",
            str(folder),
            "--seconds",
            f"{FLAGS.seconds:g}",
            "--samples",
            str(samples_path),
        ]
        result = subprocess.run(
            [FLAGS.torch_python, str(TORCH_REFERENCE), *args], capture_output=True, text=True
        )
        if result.returncode:
            sys.exit(f"the reference failed:\n{result.stderr[-2000:]}")
        report_path.write_text(result.stdout.strip().splitlines()[-1] + "\n")
    report = json.loads(report_path.read_text())
    pixels = np.load(samples_path)["images"]
    samples = data.to_model_range(pixels[..., None] if pixels.ndim == 3 else pixels)
    facts = {"steps": report["steps"], "seconds": report["seconds"], "batch": report["batch"]}
    return {
        "name": "PyTorch reference",
        "seed": "-",  # The reference seeds itself.
        **facts,
        "scores": score(
            samples,
            bench.dataset,
            samples_path.with_name(samples_path.stem + "_scores.json"),
            inception,
        ),
        "samples": samples,
    }


def _dataset_config(bench: Benchmark):
    config = config_lib.default_config().dataset
    config.name = bench.dataset
    return config


def _columns() -> tuple[str, ...]:
    return (*COLUMNS, "inception_fid") if FLAGS.inception else COLUMNS


def _row(label: str, r: dict) -> str:
    s = r["scores"]
    values = " | ".join(
        f"{s[c]:.3f}" if c != "classes_covered" else f"{s[c]}/10" for c in _columns()
    )
    return f"| {label} | {values} | {r['steps']} | {r['batch']} |"


def _mean_row(label: str, runs: list[dict]) -> str:
    """Mean and each value of every column over the seeds."""
    cells = []
    for c in (*_columns(), "steps"):
        values = [r["scores"][c] if c in r["scores"] else r[c] for r in runs]
        if c == "classes_covered":
            each, mean = ", ".join(f"{v:g}/10" for v in values), f"{statistics.mean(values):g}/10"
        else:
            each = ", ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in values)
            mean = (
                f"{statistics.mean(values):.3f}"
                if c != "steps"
                else f"{statistics.mean(values):.0f}"
            )
        cells.append(f"**{mean}** ({each})" if len(values) > 1 else each)
    seeds = f", mean (seeds {', '.join(str(r['seed']) for r in runs)})" if len(runs) > 1 else ""
    return f"| {label}{seeds} | {' | '.join(cells)} | {runs[0]['batch']} |"


def table(
    bench: Benchmark,
    ours: list[dict],
    plain: list[dict],
    conditional,
    truncated: dict,
    reference: dict,
) -> str:
    header = (
        "| | "
        + " | ".join(_columns())
        + " | steps | batch |\n"
        + "|---" * (len(_columns()) + 3)
        + "|"
    )
    lines = [header, _mean_row(f"{ours[0]['name']} ({ours[0]['labels']})", ours)]
    lines += [
        _row(f"{ours[0]['name']} seed {ours[0]['seed']}, truncation {psi}", r)
        for psi, r in truncated.items()
    ]
    if plain:
        flags_ = " ".join(f"--config.{o}" for o in bench.plain)
        lines.append(_mean_row(f"{plain[0]['name']} `{flags_}` ({plain[0]['labels']})", plain))
    lines.append(_row("PyTorch reference (unsupervised, unconditional)", reference))
    if conditional:
        lines.append(_row(f"{conditional['name']} ({conditional['labels']})", conditional))
    return "\n".join(lines)


def targets(ours: list[dict], conditional: dict | None, reference: dict) -> list[str]:
    """Issue 18's done-when targets, each checked against this invocation's numbers."""
    ref = reference["scores"]
    checks = []
    for r in ours:
        s = r["scores"]
        checks += [
            (
                f"seed {r['seed']}: FID {s['fid']:.1f} <= 0.1 x the reference's {ref['fid']:.1f}",
                s["fid"] <= 0.1 * ref["fid"],
            ),
            (
                f"seed {r['seed']}: precision {s['precision']:.3f} >= reference "
                f"{ref['precision']:.3f} + 0.05",
                s["precision"] >= ref["precision"] + 0.05,
            ),
            (f"seed {r['seed']}: recall {s['recall']:.3f} >= 0.5", s["recall"] >= 0.5),
            (
                f"seed {r['seed']}: {s['classes_covered']}/10 classes covered",
                s["classes_covered"] == 10,
            ),
        ]
    if conditional:
        fid = conditional["scores"]["fid"]
        checks.append((f"{conditional['name']}: FID {fid:.1f} <= 8", fid <= 8))
    return [f"- {'met' if ok else '**not met**'}: {text}" for text, ok in checks]


def save_grids(
    out: Path, dataset: str, ours: list[dict], conditional: dict | None, reference: dict
) -> list[str]:
    """8x8 of our first seed's scored samples, a white column, 8x8 of the reference's; the
    conditional model's own grid. Returns the file names."""
    shape = reference["samples"].shape[1:]
    blank = np.ones((8, 1, *shape), np.float32)
    pair = [
        ours[0]["samples"][:64].reshape(8, 8, *shape),
        blank,
        reference["samples"][:64].reshape(8, 8, *shape),
    ]
    names = [f"samples_{dataset}.png"]
    images.save_grid(np.concatenate(pair, axis=1).reshape(-1, *shape), out / names[0], columns=17)
    if conditional:
        names.append(f"samples_{dataset}_conditional.png")
        images.save_grid(conditional["samples"][:100], out / names[1], columns=10)
    return names


def run_benchmark(name: str, out: Path) -> tuple[str, dict]:
    bench = BENCHMARKS[name]
    seeds = [int(s) for s in FLAGS.seeds] if name == "fashion" else [0]
    ours = [train_ours(bench, bench.headline, seed) for seed in seeds]
    plain = (
        [train_ours(bench, bench.headline, seed, plain=True) for seed in seeds]
        if bench.plain
        else []
    )
    conditional = train_ours(bench, bench.conditional, 0) if bench.conditional else None
    reference = train_reference(bench, FLAGS.inception)
    first = ours[0]["run"]
    truncated = {}
    for psi in FLAGS.truncations if name == "fashion" else []:
        scores = dcgan_jax.evaluate(sample(first, float(psi)), dataset=bench.dataset)
        truncated[psi] = {**ours[0], "scores": scores}
    grids = save_grids(out, bench.dataset, ours, conditional, reference)
    runs = [*ours, *plain, *([conditional] if conditional else [])]
    lines = [
        f"## {bench.dataset}",
        "",
        table(bench, ours, plain, conditional, truncated, reference),
        "",
    ]
    if name == "fashion":
        lines += ["Targets (issue 18):", "", *targets(ours, conditional, reference), ""]
    lines += [f"Our runs, each `python launch.py` for {FLAGS.seconds:g} s:", ""]
    lines += [
        f"- `{r['command']}`{' (reused from an earlier invocation)' if r['reused'] else ''}"
        for r in runs
    ]
    lines += ["", *[f"![{g}]({g})" for g in grids], ""]
    keep = ("name", "seed", "steps", "seconds", "batch", "reused", "command", "scores")
    record = {
        "ours": [{k: r[k] for k in keep} for r in runs],
        "reference": {k: reference[k] for k in keep if k in reference},
    }
    return "\n".join(lines), record


# Lucic et al. 2018, Fashion-MNIST, Inception FID of 10,000 samples against the 10,000 test images,
# best of a 100-setting search, mean +- sd over seeds (as reproduced in Dai & Wipf 2019, Table 1).
LUCIC_ROWS = (
    ("MM GAN", "29.6 +- 1.6"),
    ("NS GAN", "26.5 +- 1.6"),
    ("LSGAN", "30.7 +- 2.2"),
    ("WGAN", "21.5 +- 1.6"),
    ("WGAN-GP", "24.5 +- 2.1"),
    ("DRAGAN", "27.7 +- 1.2"),
    ("BEGAN", "22.9 +- 0.9"),
)
# The best Fashion-MNIST Inception FID found in that protocol (PA-GAN, longer training).
LUCIC_TARGET = 15.8


def floor_row(bench: Benchmark) -> dict:
    """10,000 real training images (a fixed random choice) scored like samples: the best any
    generator can read in this protocol."""
    config = _dataset_config(bench)
    config.split = "train"
    pixels = data.load_dataset(config)[0]
    chosen = np.sort(np.random.default_rng(0).choice(len(pixels), NUM_SAMPLES, replace=False))
    samples = data.to_model_range(pixels[chosen])
    cache = Path(FLAGS.workdir) / f"floor_{bench.dataset}_scores.json"
    return {
        "name": "10,000 real training images (the floor)",
        "steps": "-",
        "batch": "-",
        "seed": 0,
        "scores": score(samples, bench.dataset, cache, True),
    }


LUCIC_COLUMNS = ("inception_fid", "fid", "precision", "recall", "coverage")


def _lucic_cell(runs: list[dict], key: str) -> str:
    """The mean +- sd over the seeds and each seed's value, at the precision the metric has."""
    values = [r["scores"].get(key, r.get(key)) for r in runs]  # None: not scored.
    digits = 1 if key in ("inception_fid", "fid", "minutes") else 3
    if None in values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    each = ", ".join(f"{v:.{digits}f}" for v in values)
    mean, sd = statistics.mean(values), statistics.stdev(values)
    return f"**{mean:.{digits}f} +- {sd:.{digits}f}** ({each})"


def lucic_text(groups: list[tuple[str, list[dict]]]) -> str:
    """The published table beside ours, each of our rows with the runs done so far."""
    names = ("Inception FID", "classifier FID", "precision", "recall", "coverage")
    lines = [
        f"| | {' | '.join(names)} | training minutes | G steps | batch | seeds |",
        "|---" * (len(names) + 5) + "|",
    ]
    for label, runs in groups:
        for run in runs:
            run["minutes"] = run["seconds"] / 60 if "seconds" in run else None
        cells = " | ".join(_lucic_cell(runs, key) for key in (*LUCIC_COLUMNS, "minutes"))
        seeds = ", ".join(str(r["seed"]) for r in runs)
        lines.append(f"| {label} | {cells} | {runs[0]['steps']} | {runs[0]['batch']} | {seeds} |")
    quoted = "| | | | | | ~15.6k | 64 | best of 100 settings |"
    lines += [f"| Lucic et al. 2018: {name} | {fid} {quoted}" for name, fid in LUCIC_ROWS]
    return "\n".join(lines)


def run_lucic(out: Path) -> None:
    """Lucic et al.'s protocol (Inception FID, 10,000 samples against the 10,000 test images, 15,600
    steps at batch 64): each of ``--lucic_experiments`` for each of ``--lucic_seeds``, and with
    ``--lucic_comparisons`` the floor, the PyTorch reference and the plain DCGAN, one row after
    another; ``lucic.md`` is rewritten after each, so a stopped invocation keeps what it finished
    and a rerun reuses it."""
    bench, steps = BENCHMARKS["fashion"], FLAGS.lucic_steps
    seeds = [int(s) for s in FLAGS.lucic_seeds]
    groups: dict[str, list[dict]] = {}

    def publish(label: str, run: dict) -> None:
        groups.setdefault(label, []).append(run)
        header = (
            f"# Inception FID in Lucic et al.'s protocol\n\n{time.strftime('%Y-%m-%d')}, "
            f"{platform.machine()}, {jax.devices()[0].platform}; "
            "`DCGAN_JAX_DATA_DIR=../shared/data python "
            f"benchmarks/quality.py {shlex.join(sys.argv[1:])}`\n\n"
        )
        text = lucic_text(list(groups.items()))
        (out / "lucic.md").write_text(header + text + "\n")
        print(text, flush=True)

    if FLAGS.lucic_comparisons:
        publish("10,000 real training images against the test split (the floor)", floor_row(bench))
    for experiment in FLAGS.lucic_experiments:
        for average in map(int, FLAGS.lucic_average):
            mean = f", G averaged over its last {average} checkpoints" if average > 1 else ""
            for seed in seeds:
                run = train_ours(bench, experiment, seed, steps=steps, average=average)
                publish(f"`{experiment}`, {steps} steps{mean} ({run['labels']})", run)
    if FLAGS.lucic_comparisons:
        reference = train_reference(bench, True)
        publish(f"PyTorch reference after {FLAGS.seconds:g} s (unconditional)", reference)
        flags_ = " ".join(f"--config.{o}" for o in bench.plain)
        plain = train_ours(bench, bench.headline, seeds[0], True, steps)
        publish(f"plain DCGAN: `{bench.headline}` `{flags_}`, {steps} steps", plain)


def main(argv):
    if not FLAGS.seconds > 0:  # Checked before any training: a child's traceback otherwise.
        raise app.UsageError(f"--seconds={FLAGS.seconds}: a training budget must be > 0")
    if FLAGS.benchmarks == ["lucic"]:
        Path(FLAGS.out).mkdir(parents=True, exist_ok=True)
        return run_lucic(Path(FLAGS.out))
    unknown = [b for b in FLAGS.benchmarks if b not in BENCHMARKS]
    if unknown:
        raise app.UsageError(
            f"--benchmarks: {', '.join(unknown)} not among {', '.join(BENCHMARKS)}"
        )
    if FLAGS.references_only:
        for name in FLAGS.benchmarks:
            print(
                name,
                {
                    k: v
                    for k, v in train_reference(BENCHMARKS[name], FLAGS.inception).items()
                    if k != "samples"
                },
            )
        return
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d")
    sections, records = [], {}
    for name in FLAGS.benchmarks:
        text, records[name] = run_benchmark(name, out)
        sections.append(text)
    machine = (
        f"{platform.machine()}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"jax {jax.__version__}"
    )
    text = (
        f"# Quality after {FLAGS.seconds:g} s of wall clock: ours against the PyTorch reference\n\n"
        f"{started}, {machine}; each run alone, one after another. Scores: `dcgan_jax.evaluate`, "
        f"{NUM_SAMPLES} samples against the test split.\n\n"
        "Benchmark: `DCGAN_JAX_DATA_DIR=../shared/data python benchmarks/quality.py "
        f"{shlex.join(sys.argv[1:])}`\n\n" + "\n".join(sections)
    )
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(records, indent=2, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    app.run(main)
