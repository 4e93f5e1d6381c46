"""Sample quality after equal wall-clock training: our experiment against the PyTorch reference.

    DCGAN_JAX_DATA_DIR=../shared/data python benchmarks/quality.py \\
        --torch_python=/tmp/torch-ref/bin/python [--experiment=fashion_dcgan] [--seconds=600] \\
        [--out=benchmarks/quality] [--reference_samples=ref.npz]

One after the other, alone on the machine: trains ``--experiment`` for ``--seconds`` of wall clock
(``train.max_seconds``: data loading and compilation count against it), then runs
``../shared/bench/torch_reference.py --seconds S --samples ref.npz`` (its clock starts after its
data loading). Both are scored with ``dcgan_jax.evaluate`` on 10,000 samples against the
Fashion-MNIST test split. Writes ``results.md`` (the table and the commands), ``results.json``,
and the two 8x8 sample grids side by side (``samples.png``) into ``--out``.
``--reference_samples`` scores an existing reference .npz instead of training the reference.
``--truncations`` adds rows for our generator sampled with its latents scaled toward 0 (the
truncation trick): points on its precision/recall trade-off, labelled as such; the headline row
is always the plain sampling, as the reference is sampled.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

import dcgan_jax
from dcgan_jax import config as config_lib
from dcgan_jax import data, images

REPO = Path(__file__).resolve().parent.parent
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"
NUM_SAMPLES = 10_000
ROWS = ("fid", "kid", "precision", "recall", "classes_covered", "inception_score")

flags.DEFINE_string("experiment", "fashion_dcgan", "Our experiment to train.")
flags.DEFINE_float("seconds", 600, "Wall-clock training budget of each side.")
flags.DEFINE_string("torch_python", None, "Python of a virtualenv with torch (see benchmarks/throughput.py).")
flags.DEFINE_string("reference_samples", None, "Score this reference .npz instead of training the reference.")
flags.DEFINE_string("workdir", None, "Our run's folder (default: a new temporary folder).")
flags.DEFINE_string("out", str(REPO / "benchmarks" / "quality"), "Where the table and the grids go.")
flags.DEFINE_list("overrides", [], "FIELD=VALUE config overrides of our run, e.g. train.ema_decay=0.999.")
flags.DEFINE_list("truncations", ["0.9", "0.8"], "Also score ours with its latents times each of these.")
FLAGS = flags.FLAGS


def train_ours(workdir: Path) -> tuple[dcgan_jax.TrainedGenerator, dict, list[str]]:
    """(the trained generator, facts of the run, the flags that reproduce it)."""
    config = config_lib.load_experiment(FLAGS.experiment, REPO / "experiments")
    flags_used = [f"--config.train.max_seconds={FLAGS.seconds:g}", "--config.train.num_steps=100000000"]
    for item in FLAGS.overrides:
        field, _, value = item.partition("=")
        flags_used.append(f"--config.{field}={value}")
    # The same parser as launch.py, so the flags above reproduce the run.
    command = [sys.executable, str(REPO / "launch.py"), f"--experiment={FLAGS.experiment}", f"--workdir={workdir}"]
    shown = ["launch.py", *command[2:]]
    started = time.monotonic()
    subprocess.run(command + flags_used, check=True)
    wall = time.monotonic() - started
    run = dcgan_jax.load(workdir)
    status = json.loads((workdir / "status.json").read_text())
    facts = {
        "steps": status["step"],
        "seconds": round(wall, 1),
        "batch": config.train.batch_size,
        "ema": run.ema,
        "num_classes": run.num_classes,
    }
    return run, facts, shown + flags_used


def sample(run: dcgan_jax.TrainedGenerator, truncation: float = 1.0) -> np.ndarray:
    return np.concatenate([run.sample(1000, seed=i, truncation=truncation) for i in range(NUM_SAMPLES // 1000)])


def train_reference(out: Path) -> tuple[np.ndarray, dict]:
    samples_path = out / "reference_samples.npz"
    data_dir = data.resolve_data_dir(config_lib.default_config().dataset)
    result = subprocess.run(
        [
            FLAGS.torch_python,
            str(TORCH_REFERENCE),
            "--data",
            str(data_dir),
            "--seconds",
            f"{FLAGS.seconds:g}",
            "--samples",
            str(samples_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return _read_npz(samples_path), {"steps": report["steps"], "seconds": report["seconds"], "batch": report["batch"]}


def _read_npz(path: str | Path) -> np.ndarray:
    pixels = np.load(path)["images"]
    return data.to_model_range(pixels[..., None] if pixels.ndim == 3 else pixels)


def _table(ours: dict, reference: dict) -> str:
    lines = ["| | FID | KID | precision | recall | classes covered | IS | steps | batch |", "|---" * 9 + "|"]
    name = "dcgan_jax " + FLAGS.experiment + (" (class-conditional)" if ours["num_classes"] else "")
    rows = [(name, ours["scores"], ours)]
    rows += [(f"ours, truncation {psi:g}", scores, ours) for psi, scores in ours["truncated"].items()]
    rows.append(("PyTorch reference", reference["scores"], reference))
    for name, s, row in rows:
        lines.append(
            f"| {name} | {s['fid']:.1f} | {s['kid']:.2f} ± {s['kid_std']:.2f} | {s['precision']:.3f} | "
            f"{s['recall']:.3f} | {s['classes_covered']}/10 | {s['inception_score']:.2f} | {row['steps']} | "
            f"{row['batch']} |"
        )
    return "\n".join(lines)


def main(argv):
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    if not FLAGS.reference_samples and not FLAGS.torch_python:
        raise app.UsageError("give --torch_python (to train the reference) or --reference_samples=ref.npz")
    workdir = Path(FLAGS.workdir or tempfile.mkdtemp(prefix="dcgan_jax_quality_"))
    truncations = [float(t) for t in FLAGS.truncations]
    run, ours, command = train_ours(workdir)
    ours_samples = sample(run)
    if FLAGS.reference_samples:
        reference_samples = _read_npz(FLAGS.reference_samples)
        reference = {"steps": "?", "seconds": "?", "batch": 64}
    else:
        reference_samples, reference = train_reference(out)
    ours["scores"] = dcgan_jax.evaluate(ours_samples, dataset="fashion_mnist")
    ours["truncated"] = {psi: dcgan_jax.evaluate(sample(run, psi), dataset="fashion_mnist") for psi in truncations}
    reference["scores"] = dcgan_jax.evaluate(reference_samples, dataset="fashion_mnist")
    # 8 rows: 8 of ours, a white column, 8 of the reference's.
    blank = np.ones((8, 1, *ours_samples.shape[1:]), np.float32)
    side_by_side = np.concatenate(
        [
            ours_samples[:64].reshape(8, 8, *ours_samples.shape[1:]),
            blank,
            reference_samples[:64].reshape(8, 8, *reference_samples.shape[1:]),
        ],
        axis=1,
    )
    images.save_grid(side_by_side.reshape(-1, *ours_samples.shape[1:]), out / "samples.png", columns=17)
    (out / "results.json").write_text(json.dumps({"ours": ours, "reference": reference}, indent=2, default=str) + "\n")
    table = _table(ours, reference)
    machine = f"{platform.machine()}, {jax.device_count()} {jax.devices()[0].platform} device(s), jax {jax.__version__}"
    text = (
        f"Wall-clock budget {FLAGS.seconds:g} s each, one after the other; {machine}. Scores: "
        f"dcgan_jax.evaluate, {NUM_SAMPLES} samples vs the Fashion-MNIST test split.\n\n{table}\n\n"
        f"Benchmark: `DCGAN_JAX_DATA_DIR=../shared/data python benchmarks/quality.py {shlex.join(sys.argv[1:])}`; "
        f"our run inside it: `python {' '.join(command)}`.\n\n"
        f"Left: ours, right: the reference (`samples.png`).\n"
    )
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    app.run(main)
