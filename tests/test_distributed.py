"""Data parallelism: 8 devices in one process, and two processes joined by jax.distributed
(gloo collectives on the CPU), train like one device at the same global batch."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, restore_full_state, tiny_config, tiny_flags

import dcgan_jax
from dcgan_jax.run import checkpoints, distributed, writers

# Sums over 8 shards or 2 processes round differently from one device (measured: 2.7e-6 after
# 5 steps); Adam's early steps, about lr * sign(g), bound what a flipped sign could add.
PARAM_ATOL = 1e-4
ONE_DEVICE_ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, *extra):
    return [
        sys.executable,
        str(REPO / "launch.py"),
        "--experiment=fashion_dcgan",
        f"--workdir={workdir}",
        *extra,
    ]


def _max_param_difference(a, b) -> float:
    import jax

    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
    return max(jax.tree.leaves(diffs))


def test_eight_devices_match_one_device_and_the_run_loads_on_one(tmp_path):
    """In a process with 8 (simulated) devices: 8 devices vs 1 at the same global batch, and a run
    trained there, without TensorFlow, that this 1-device process then loads."""
    code = """
import jax, numpy as np
from conftest import tiny_config
from dcgan_jax.gan import loop, parallel
finals = []
for devices in (jax.devices()[:1], jax.devices()):
    run = loop.assemble(tiny_config(), parallel.make_mesh(devices))
    state = run.init()
    for i in range(5):
        state, metrics, _ = run.train_steps(state, i, 1)
    finals.append(jax.device_get((state.g, state.d)))
diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), *finals)))
import sys, dcgan_jax
dcgan_jax.train(tiny_config(num_steps=2), sys.argv[1])  # For the parent to load on one device.
print(len(jax.devices()), diff, "tensorflow" in sys.modules)
"""
    env = {
        **ONE_DEVICE_ENV,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "PYTHONPATH": str(REPO / "tests"),
    }
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    devices, difference, imported_tensorflow = result.stdout.split()
    assert devices == "8" and imported_tensorflow == "False"
    assert float(difference) < PARAM_ATOL
    assert (
        "Devices: 8 (cpu), 2 images each per step (global batch 16)"
        in (tmp_path / "train.log").read_text()
    )
    run = dcgan_jax.load(tmp_path)
    assert run.step == 2 and run.sample(4).shape == (4, 28, 28, 1)


def test_two_processes_train_like_one_and_stop_together_on_sigterm(tmp_path):
    """Two processes train until SIGTERM reaches one of them: both stop at the same step with one
    final checkpoint, whose parameters match a one-process run of that many steps."""
    flags = tiny_flags(num_steps=100_000, checkpoint_every=1000)
    port = _free_port()
    logs = [tmp_path / f"process_{i}.log" for i in range(2)]
    processes = [
        subprocess.Popen(
            _launch(
                tmp_path / "two",
                *flags,
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
                "--distributed_timeout_s=60",
            ),
            stdout=subprocess.DEVNULL,
            stderr=logs[i].open("w"),
            text=True,
            cwd=REPO,
            env=ONE_DEVICE_ENV,
        )
        for i in range(2)
    ]
    metrics = tmp_path / "two" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (
            metrics.exists() and len(metrics.read_text().splitlines()) >= 2
        ):
            time.sleep(0.05)
        processes[1].send_signal(signal.SIGTERM)  # Only the second process is told.
        for p in processes:
            p.wait(timeout=120)
    finally:
        for p in processes:
            p.kill()
    outputs = [log.read_text() for log in logs]
    for p, output in zip(processes, outputs, strict=True):
        # Both stopped by process 1's signal.
        assert p.returncode == 128 + signal.SIGTERM, output[-3000:]
    stopped = re.search(
        r"Stopped by SIGTERM \(to process 1\) at step (\d+); writing the final checkpoint",
        outputs[0],
    )
    assert stopped, outputs[0][-3000:]
    steps = int(stopped.group(1))
    assert steps >= 4 and steps % 2 == 0  # Processes agree on stopping at a log step (log_every=2).
    config = tiny_config(num_steps=steps)
    single = dcgan_jax.train(config, tmp_path / "one")
    two = restore_full_state(tmp_path / "two", config)
    assert int(two.step) == int(single.step) == steps
    assert checkpoints.Checkpointer(tmp_path / "two", create=False).all_steps() == [steps]
    difference = _max_param_difference(
        (two.g.params, two.d.params), (single.g.params, single.d.params)
    )
    print(f"two processes vs one after {steps} steps: max |parameter difference| {difference:.2e}")
    assert difference < PARAM_ATOL
    # Process 0 alone wrote the log, metrics and samples.
    log = (tmp_path / "two" / "train.log").read_text()
    assert "Devices: 2 (cpu), 8 images each per step (global batch 16); process 0 of 2." in log
    assert [r["step"] for r in writers.read_metrics(metrics)] == list(range(2, steps + 1, 2))
    assert f"step {steps}/100000" not in outputs[1]  # Process 1 logs warnings only.


def _join_alone(tmp_path, process_id: int) -> tuple[subprocess.CompletedProcess, int]:
    """Process ``process_id`` of 2 given a 5 s limit and a coordinator address nobody else uses:
    (its result, the port)."""
    port = _free_port()
    result = subprocess.run(
        _launch(
            tmp_path,
            *tiny_flags(),
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={process_id}",
            "--distributed_timeout_s=5",
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ONE_DEVICE_ENV,
        timeout=180,
    )
    return result, port


def test_unreachable_coordinator_fails_in_bounded_time_with_a_clear_message(tmp_path):
    started = time.monotonic()
    result, port = _join_alone(tmp_path, 1)  # Nobody listens at the port.
    assert result.returncode != 0
    assert (
        f"process 1 could not join the run coordinated at 127.0.0.1:{port} within 5 s"
        in result.stderr
    )
    assert time.monotonic() - started < 90


def test_a_coordinator_left_alone_gives_the_timeout_line_not_an_abort(tmp_path):
    """Process 0 of 2 with nobody joining: XLA would abort it (exit 134, a native stack); the
    watchdog's error line comes first."""
    result, port = _join_alone(tmp_path, 0)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    late = f"error: process 0 could not join the run coordinated at 127.0.0.1:{port} within 5 s"
    assert len(errors) == 1 and errors[0].startswith(late), result.stderr[-3000:]
    assert "not all 2 processes came" in errors[0]
    assert "Fatal Python error" not in result.stderr and "Traceback" not in result.stderr


def test_partial_distributed_flags_are_an_error():
    with pytest.raises(
        distributed.DistributedError, match="needs all of --coordinator_address, --num_processes"
    ):
        distributed.initialize_distributed(num_processes=2)
    assert distributed.initialize_distributed() is False  # Single process: nothing to join.


def test_processes_started_with_different_flags_are_told_which(monkeypatch, tmp_path):
    """A second process whose --config.seed differs (simulated: its values come through the
    allgather): one error naming the flag, before anything starts; before, a JAX AssertionError
    traceback at the first device_put (seen with two real processes)."""
    import jax
    from jax.experimental import multihost_utils

    from dcgan_jax.gan.config import flatten

    config = tiny_config()
    flags = ["--workdir", *(f"--config.{field}" for field in flatten(config))]

    def allgather(hashes):
        other = hashes.copy()
        other[flags.index("--config.seed")] += 1
        return np.stack([hashes, other])

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    message = r"different --config.seed \(process 0: --config.seed=0\); start every process"
    with pytest.raises(distributed.DistributedError, match=message):
        dcgan_jax.train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda h: np.stack([h, h]))
    distributed.check_same_run(config, tmp_path / "run")  # The same flags everywhere: no error.


@pytest.mark.parametrize("process_id, num_processes", [(2, 2), (-1, 2), (0, 0)])
def test_a_process_number_outside_the_run_is_an_error_at_once(process_id, num_processes):
    """Not a wait for a coordinator that has no place for it."""
    started = time.monotonic()
    with pytest.raises(
        distributed.DistributedError, match=f"--process_id={process_id}: a process of"
    ):
        distributed.initialize_distributed("127.0.0.1:1", num_processes, process_id, timeout_s=60)
    assert time.monotonic() - started < 5


def test_batch_not_divisible_by_devices_stops_at_start_with_the_nearest_sizes(tmp_path):
    env = {**ONE_DEVICE_ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(
        _launch(tmp_path, *tiny_flags(), "--config.train.batch_size=60"),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        "error: --config.train.batch_size=60 does not split over 8 devices; use 56 or 64"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
