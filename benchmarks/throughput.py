"""Training throughput of the compiled step, beside an sgemm and (when available) the PyTorch reference.

    DCGAN_JAX_DATA_DIR=../shared/data python benchmarks/throughput.py \\
        [--experiment=fashion_dcgan] [--batch_sizes=64,256] [--steps=30] [--rounds=2] \\
        [--torch_python=/tmp/torch-ref/bin/python]

For each batch size: compile time (apart), steady-state images/s of our step (the
median of --rounds timed rounds of --steps steps, alternating with the PyTorch
reference's rounds when --torch_python is given), FLOPs per step from XLA's cost
analysis, achieved GFLOP/s and its fraction of a float32 4096^3 matmul measured
in the same run, and the peak resident memory. Prints a Markdown table.

The PyTorch reference (../shared/bench/torch_reference.py) runs in its own
virtualenv: python3 -m venv /tmp/torch-ref && /tmp/torch-ref/bin/pip install torch==2.13.0 numpy
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dcgan_jax import config as config_lib
from dcgan_jax import data, parallel
from dcgan_jax.train_step import compile_train_step, components, init_state, make_train_step

REPO = Path(__file__).resolve().parent.parent
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"

flags.DEFINE_string("experiment", "fashion_dcgan", "Experiment whose model and step to time.")
flags.DEFINE_list("batch_sizes", ["64", "256"], "Global batch sizes.")
flags.DEFINE_integer("steps", 30, "Timed steps per round.")
flags.DEFINE_integer("rounds", 2, "Timed rounds (ours and the reference's alternate).")
flags.DEFINE_bool("reuse_fake", None, "Override train.reuse_fake (G trains on D's fake batch).")
flags.DEFINE_string("torch_python", None, "Python of a virtualenv with torch, to time the reference too.")
FLAGS = flags.FLAGS


def sgemm_gflops(n: int = 4096, repeats: int = 5) -> float:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def time_ours(config, batch_size: int, steps: int):
    """(compile seconds, a function timing ``steps`` steps -> images/s, FLOPs per step)."""
    config.train.batch_size = batch_size
    config = config_lib.resolved(config)
    mesh = parallel.make_mesh()
    images, labels = data.load_dataset(config.dataset, config.seed)
    batches = data.BatchOrder(images, batch_size, config.seed, labels)
    shape = tuple(images.shape[1:])
    parts = components(config, shape)
    state = jax.jit(
        lambda: init_state(parts.generator, parts.discriminator, parts.optimizers, config.seed, shape,
                           config.model.latent_dim, ema=config.train.ema_decay > 0),
        out_shardings=parallel.replicated(mesh),
    )()  # fmt: skip
    step_fn = compile_train_step(make_train_step(*parts), mesh)
    sharding = parallel.batch_sharded(mesh, leading_axes=1)

    def real(i):
        indices = [i * config.train.d_steps + j for j in range(config.train.d_steps)]
        return (
            jax.device_put(np.stack([batches.batch(k) for k in indices]), sharding),
            jax.device_put(np.stack([batches.labels_of(k) for k in indices]), sharding),
        )

    started = time.perf_counter()
    compiled = step_fn.lower(state, *real(0)).compile()
    compile_s = time.perf_counter() - started
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))
    holder = {"state": state, "step": 0}
    for _ in range(3):  # Warm-up.
        holder["state"], metrics = compiled(holder["state"], *real(holder["step"]))
        holder["step"] += 1
    jax.block_until_ready(metrics)

    def timed() -> float:
        started = time.perf_counter()
        for _ in range(steps):
            holder["state"], metrics = compiled(holder["state"], *real(holder["step"]))
            holder["step"] += 1
        jax.block_until_ready(metrics)
        return steps * batch_size / (time.perf_counter() - started)

    return compile_s, timed, flops


def time_torch(batch_size: int, steps: int) -> float:
    data_dir = data.resolve_data_dir(config_lib.load_experiment(FLAGS.experiment, REPO / "experiments").dataset)
    result = subprocess.run(
        [FLAGS.torch_python, str(TORCH_REFERENCE), "--data", str(data_dir), "--batch", str(batch_size),
         "--steps", str(steps), "--threads", "2"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(json.loads(result.stdout.strip().splitlines()[-1])["images_per_second"])


def main(argv):
    config = config_lib.load_experiment(FLAGS.experiment, REPO / "experiments")
    if FLAGS.reuse_fake is not None:
        config.train.reuse_fake = FLAGS.reuse_fake
    gemm = sgemm_gflops()
    rows = []
    for batch_size in (int(b) for b in FLAGS.batch_sizes):
        compile_s, timed, flops = time_ours(config, batch_size, FLAGS.steps)
        ours, theirs = [], []
        for _ in range(FLAGS.rounds):
            ours.append(timed())
            if FLAGS.torch_python:
                theirs.append(time_torch(batch_size, FLAGS.steps))
        images_per_s = statistics.median(ours)
        gflops = flops * images_per_s / batch_size / 1e9
        rows.append({
            "batch": batch_size, "compile_s": compile_s, "images_per_s": images_per_s,
            "torch_images_per_s": statistics.median(theirs) if theirs else None,
            "gflop_per_step": flops / 1e9, "gflops": gflops, "sgemm_fraction": gflops / gemm,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        })  # fmt: skip
    devices = f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
    print(f"Machine: {platform.machine()}, {devices}, jax {jax.__version__}; sgemm 4096^3: {gemm:.0f} GFLOP/s; "
          f"experiment {FLAGS.experiment}, train.reuse_fake={config.train.reuse_fake}")  # fmt: skip
    header = ("batch", "compile s", "images/s", "PyTorch images/s", "ratio", "GFLOP/step", "GFLOP/s", "of sgemm",
              "peak RSS GiB")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        torch_cell = f"{r['torch_images_per_s']:.0f}" if r["torch_images_per_s"] else "-"
        ratio = f"{r['images_per_s'] / r['torch_images_per_s']:.2f}x" if r["torch_images_per_s"] else "-"
        cells = (r["batch"], f"{r['compile_s']:.1f}", f"{r['images_per_s']:.0f}", torch_cell, ratio,
                 f"{r['gflop_per_step']:.2f}", f"{r['gflops']:.1f}", f"{r['sgemm_fraction']:.0%}",
                 f"{r['peak_rss_gib']:.2f}")  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    app.run(main)
