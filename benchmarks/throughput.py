"""Training throughput of the compiled step, beside an sgemm and (when available) the PyTorch
reference.

    DCGAN_JAX_DATA_DIR=../shared/data python benchmarks/throughput.py \\
        [--experiment=fashion_dcgan] [--batch_sizes=64,256] [--steps=30] [--rounds=2] \\
        [--torch_python=/tmp/torch-ref/bin/python]

For each batch size: compile time (apart), steady-state images/s of the training loop's step (the
median of --rounds timed rounds of --steps steps, alternating with the PyTorch reference's rounds
when --torch_python is given), FLOPs per step from XLA's cost analysis, achieved GFLOP/s and its
fraction of a float32 4096^3 matmul measured in the same run, and the peak resident memory. Prints a
Markdown table.

Two FLOP counts: "model", XLA's count for the step with plain convolutions
(model.conv_algorithm=direct), the work the model's mathematics takes and what a direct
implementation such as PyTorch's does; and "executed", the count for the step as it runs, lower
where Fourier convolutions replace taps by products per frequency. Achieved GFLOP/s is model FLOPs
per second, the convention for FFT and Winograd convolutions: it can exceed what the machine
executes.

The PyTorch reference (../shared/bench/torch_reference.py) runs in its own virtualenv: python3 -m
venv /tmp/torch-ref && /tmp/torch-ref/bin/pip install torch==2.13.0 numpy
"""

from __future__ import annotations

import functools
import json
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import yaml
from absl import app, flags

from dcgan_jax.gan import config as config_lib
from dcgan_jax.gan import data, loop, models, parallel, step
from dcgan_jax.run import cli

REPO = Path(__file__).resolve().parent.parent
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"

flags.DEFINE_string("experiment", "fashion_dcgan", "Experiment whose model and step to time.")
flags.DEFINE_list("batch_sizes", ["64", "256"], "Global batch sizes.")
flags.DEFINE_integer("steps", 30, "Timed steps per round.")
flags.DEFINE_integer("rounds", 2, "Timed rounds (ours and the reference's alternate).")
flags.DEFINE_bool("reuse_fake", None, "Override train.reuse_fake (G trains on D's fake batch).")
flags.DEFINE_multi_string(
    "set", [], "FIELD=VALUE config overrides, e.g. --set=model.conv_algorithm=direct."
)
flags.DEFINE_string(
    "torch_python", None, "Python of a virtualenv with torch, to time the reference too."
)
FLAGS = flags.FLAGS


def sgemm_gflops(n: int = 4096, repeats: int = 5) -> float:
    """The machine's float32 matmul rate: the better of NumPy's BLAS and XLA's, (n x n) @ (n x
    n)."""
    a = np.random.default_rng(0).standard_normal((n, n), np.float32)
    on_device = jnp.asarray(a)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(on_device, on_device).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        matmul(on_device, on_device).block_until_ready()
        best = min(best, time.perf_counter() - started)
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def time_ours(config, batch_size: int, steps: int):
    """(compile seconds, a function timing ``steps`` steps -> images/s, model FLOPs per step,
    executed FLOPs per step), for the training loop's own run (``loop.assemble``) and dispatch:
    ``train.steps_per_dispatch`` steps per call, batches gathered from the device-resident dataset.

    Model FLOPs: XLA's cost analysis of the step with plain convolutions
    (``model.conv_algorithm=direct``), the work the model's mathematics needs. Executed FLOPs: the
    same analysis of the step as run, whose Fourier convolutions do fewer."""
    config.train.batch_size = batch_size
    run = loop.assemble(config)
    per_dispatch = run.config.train.steps_per_dispatch
    holder = {"state": run.init(), "step": 0}
    started = time.perf_counter()
    holder["state"], metrics, _ = run.train_steps(holder["state"], 0, per_dispatch)  # Compiles.
    compile_s = time.perf_counter() - started
    holder["step"] = per_dispatch

    def one_step_flops(nets) -> float:
        # Costs of one step without a loop (XLA counts a loop's body once, whatever its trip count).
        rows = run.batches.step_indices(0, 1, run.config.train.d_steps)
        indices = parallel.global_array(rows, parallel.replicated(run.mesh), rows.shape)
        lowered = step.jit_train_steps(step.make_update(nets, run.config), run.mesh).lower(
            holder["state"], run.dataset, indices
        )
        return _flops(parallel.compile_lowered(lowered, step.CPU_COMPILER_OPTIONS))

    executed_flops = one_step_flops(run.nets)
    direct = ml_collections.ConfigDict(run.config.to_dict())
    direct.model.conv_algorithm = "direct"
    model_flops = one_step_flops(
        models.build(direct.model, run.image_shape, direct.train.compute_dtype)
    )

    def advance(num_steps):
        for _ in range(0, num_steps, per_dispatch):
            holder["state"], metrics, _ = run.train_steps(
                holder["state"], holder["step"], per_dispatch
            )
            holder["step"] += per_dispatch
        jax.block_until_ready(metrics)

    advance(max(per_dispatch, 3))  # Warm-up.

    def timed() -> float:
        started = time.perf_counter()
        advance(steps)
        return steps * batch_size / (time.perf_counter() - started)

    return compile_s, timed, model_flops, executed_flops


def time_torch(batch_size: int, steps: int) -> float:
    data_dir = data.resolve_data_dir(
        cli.load_experiment(FLAGS.experiment, REPO / "experiments").dataset
    )
    result = subprocess.run(
        [
            FLAGS.torch_python,
            str(TORCH_REFERENCE),
            "--data",
            str(data_dir),
            "--batch",
            str(batch_size),
            "--steps",
            str(steps),
            "--threads",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1])["images_per_second"])


def main(argv):
    config = cli.load_experiment(FLAGS.experiment, REPO / "experiments")
    if FLAGS.reuse_fake is not None:
        config.train.reuse_fake = FLAGS.reuse_fake
    for override in FLAGS.set:
        field, _, value = override.partition("=")
        *parents, name = field.split(".")
        node = functools.reduce(lambda c, part: c[part], parents, config)
        node[name] = type(node[name])(yaml.safe_load(value))
    gemm = sgemm_gflops()
    rows = []
    for batch_size in (int(b) for b in FLAGS.batch_sizes):
        compile_s, timed, flops, executed_flops = time_ours(config, batch_size, FLAGS.steps)
        ours, theirs = [], []
        for _ in range(FLAGS.rounds):
            ours.append(timed())
            if FLAGS.torch_python:
                theirs.append(time_torch(batch_size, FLAGS.steps))
        images_per_s = statistics.median(ours)
        gflops = flops * images_per_s / batch_size / 1e9
        rows.append(
            {
                "batch": batch_size,
                "compile_s": compile_s,
                "images_per_s": images_per_s,
                "torch_images_per_s": statistics.median(theirs) if theirs else None,
                "gflop_per_step": flops / 1e9,
                "executed_gflop_per_step": executed_flops / 1e9,
                "gflops": gflops,
                "sgemm_fraction": gflops / gemm,
                "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            }
        )
    devices = f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
    print(
        f"Machine: {platform.machine()}, {devices}, jax {jax.__version__}; sgemm 4096^3: "
        f"{gemm:.0f} GFLOP/s; "
        f"experiment {FLAGS.experiment}, train.reuse_fake={config.train.reuse_fake}, "
        f"steps per dispatch {config_lib.resolved(config).train.steps_per_dispatch}"
    )
    header = (
        "batch",
        "compile s",
        "images/s",
        "PyTorch images/s",
        "ratio",
        "model GFLOP/step",
        "executed GFLOP/step",
        "model GFLOP/s",
        "of sgemm",
        "peak RSS GiB",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        torch_cell = f"{r['torch_images_per_s']:.0f}" if r["torch_images_per_s"] else "-"
        ratio = (
            f"{r['images_per_s'] / r['torch_images_per_s']:.2f}x"
            if r["torch_images_per_s"]
            else "-"
        )
        cells = (
            r["batch"],
            f"{r['compile_s']:.1f}",
            f"{r['images_per_s']:.0f}",
            torch_cell,
            ratio,
            f"{r['gflop_per_step']:.2f}",
            f"{r['executed_gflop_per_step']:.2f}",
            f"{r['gflops']:.1f}",
            f"{r['sgemm_fraction']:.0%}",
            f"{r['peak_rss_gib']:.2f}",
        )
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    app.run(main)
