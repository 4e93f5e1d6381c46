"""Bad inputs and faults end the right way: one ``error:`` line (exit 2), a signal's status, nothing
lost.

One test per row of the probe in issue 21; the corruption tests change real bytes of real
checkpoints, the read-only tests use a real read-only mount (skipped, saying why, where this machine
cannot mount).
"""

import ctypes
import errno
import gzip
import importlib.util
import io
import json
import logging as std_logging
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import logging as absl_logging
from conftest import (
    REPO,
    python,
    shared_dataset_dir,
    tiny_config,
    tiny_flags,
    tmpfs,
    trees_equal,
)

import dcgan_jax
from dcgan_jax import evaluation
from dcgan_jax.evaluation import inception
from dcgan_jax.gan import ConfigError, data, loop, models
from dcgan_jax.gan import config as config_lib
from dcgan_jax.run import checkpoints, control, preflight, resume, writers
from dcgan_jax.tools import analysis, scoring, slurm, sweep
from dcgan_jax.tools import trained as trained_lib

LAUNCH = [sys.executable, str(REPO / "launch.py"), "--experiment=fashion_dcgan"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short synthetic run with checkpoints at steps 3 and 6."""
    workdir = tmp_path_factory.mktemp("trained")
    dcgan_jax.train(tiny_config(), workdir)
    return workdir


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    """Where a run of 8 steps ends: what every resume after damage must reach."""
    return dcgan_jax.train(tiny_config(num_steps=8), tmp_path_factory.mktemp("unbroken"))


def _launch(*args, timeout=300, **kwargs):
    return subprocess.run(
        [*LAUNCH, *args], capture_output=True, text=True, cwd=REPO, timeout=timeout, **kwargs
    )


def _one_error_line(result, *parts):
    """Exit 2, no traceback, and an ``error:`` line holding every one of ``parts``."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(p in errors[0] for p in parts), result.stderr[-3000:]


def _copy_run(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    return workdir, checkpoints.checkpoint_dir(workdir)


def _overwrite_4k(checkpoint):
    """4 KiB of the largest array file of ``checkpoint`` replaced by other bytes (each byte
    flipped)."""
    files = [p for p in (checkpoint / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    target = max(files, key=lambda p: p.stat().st_size)
    raw = bytearray(target.read_bytes())
    start = max(0, len(raw) // 2 - 2048)
    raw[start : start + 4096] = bytes(b ^ 0xFF for b in raw[start : start + 4096])
    target.write_bytes(bytes(raw))


def _resume_and_match(workdir, unbroken):
    """The run resumes from step 3 with checkpoint 6 set aside, and ends where an unbroken run
    ends."""
    resumed = dcgan_jax.train(tiny_config(num_steps=8), workdir)
    ckpt_dir = checkpoints.checkpoint_dir(workdir)
    assert (ckpt_dir / "6.damaged").is_dir()
    assert (
        f"Using checkpoint {ckpt_dir / '3'}; damaged newer ones renamed to 6.damaged"
        in (workdir / "train.log").read_text()
    )
    assert trees_equal(resumed, unbroken)


def test_overwritten_bytes_are_caught_by_the_saved_hashes_in_load_and_train(
    trained, unbroken, tmp_path, caplog
):
    workdir, ckpt_dir = _copy_run(trained, tmp_path)
    _overwrite_4k(ckpt_dir / "6")
    with pytest.raises(checkpoints.CheckpointError, match=str(ckpt_dir / "6")):
        dcgan_jax.load(workdir, step=6)
    assert dcgan_jax.load(workdir).step == 3  # A reader skips it, naming it.
    assert f"Damaged checkpoint {ckpt_dir / '6'}" in caplog.text
    _resume_and_match(workdir, unbroken)


def test_a_checkpoint_saves_a_hash_of_every_array():
    state = {"g": {"w": np.arange(4, dtype=np.float32)}, "step": np.int32(3)}
    hashes = checkpoints.array_hashes(state)
    assert sorted(hashes) == ["g/w", "step"] and all(len(h) == 64 for h in hashes.values())
    checkpoints.verify(state, hashes, "here")
    changed = {"g": {"w": np.array([0, 1, 2, 4], np.float32)}, "step": np.int32(3)}
    with pytest.raises(checkpoints.CheckpointError, match="here: g/w does not match the SHA-256"):
        checkpoints.verify(changed, hashes, "here")
    # Pre-release.
    with pytest.raises(checkpoints.CheckpointError, match="old: g/w has no SHA-256 saved with it"):
        checkpoints.verify({"g": {"w": np.array([np.nan], np.float32)}}, {}, "old")


# JSON items; Orbax array metadata.
@pytest.mark.parametrize("metadata", ["meta/metadata", "state/_METADATA"])
def test_a_deleted_metadata_file_makes_load_and_train_agree_on_the_previous_checkpoint(
    trained, unbroken, tmp_path, metadata
):
    workdir, ckpt_dir = _copy_run(trained, tmp_path)
    (ckpt_dir / "6" / metadata).unlink()
    assert dcgan_jax.load(workdir).step == 3
    _resume_and_match(workdir, unbroken)


def test_a_signal_during_a_restore_stops_it_and_sets_aside_nothing(trained, tmp_path, monkeypatch):
    """SIGTERM while the newest checkpoint is read (the handler raises before training): the
    restore stops with Interrupted, and the healthy checkpoint is not called damaged."""
    workdir, ckpt_dir = _copy_run(trained, tmp_path)
    original = ocp.CheckpointManager.restore

    def signalled(manager, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(manager, *args, **kwargs)

    config = tiny_config()
    target = loop.initial_state(config, models.build(config.model, (28, 28, 1)), (28, 28, 1))
    manager = checkpoints.Checkpointer(workdir, create=False)
    monkeypatch.setattr(ocp.CheckpointManager, "restore", signalled)
    with control.stop_requests(), pytest.raises(control.Interrupted, match="SIGTERM received"):
        manager.restore(target, set_aside_damaged=True)  # As a resuming run restores.
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["3", "6"]


def test_a_truncated_array_file_costs_one_warning_line_on_resume_and_load(trained, tmp_path):
    workdir, ckpt_dir = _copy_run(trained, tmp_path)
    for path in (ckpt_dir / "6" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = _launch(f"--workdir={workdir}", *tiny_flags(num_steps=8))
    assert result.returncode == 0, result.stderr[-3000:]
    before = result.stderr.split("Resumed from")[0]
    # absl's console lines: I... INFO; the run asks for 8 steps where the checkpoint's config said
    # 6.
    noisy = [
        line
        for line in before.splitlines()
        if not line.startswith("I") and "Resuming with a config" not in line
    ]
    assert (
        len(noisy) == 2 and "Damaged checkpoint" in noisy[0] and "Using checkpoint" in noisy[1]
    ), noisy
    assert "Traceback" not in result.stderr and "Why" not in result.stderr
    assert "Why " in (workdir / "train.log").read_text()  # The full text, in the log file.
    shutil.copytree(ckpt_dir / "6.damaged", ckpt_dir / "9")  # Damaged again, as the newest.
    code = "import dcgan_jax, sys; print(dcgan_jax.load(sys.argv[1]).step)"
    for _ in range(4):  # Orbax's callbacks into its closed loop came in about one load of three.
        loaded = subprocess.run(
            [sys.executable, "-c", code, str(workdir)], capture_output=True, text=True, timeout=120
        )
        assert loaded.stdout.split() == ["8"] and len(loaded.stderr.strip().splitlines()) <= 2, (
            loaded.stderr
        )


def test_every_checkpoint_damaged_is_one_error_line(trained, tmp_path):
    workdir, ckpt_dir = _copy_run(trained, tmp_path)
    for step in (3, 6):
        _overwrite_4k(ckpt_dir / str(step))
    result = _launch(f"--workdir={workdir}", *tiny_flags(num_steps=8))
    _one_error_line(
        result, f"no restorable checkpoint in {ckpt_dir}", "steps [3, 6] are all damaged"
    )
    assert len(result.stderr.splitlines()) < 15, result.stderr


def test_a_workdir_that_is_a_file_is_one_error_line(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    _one_error_line(
        _launch(f"--workdir={tmp_path / 'run'}", *tiny_flags()),
        f"--workdir={tmp_path / 'run'}",
        "file",
    )


def test_a_folder_of_runs_given_as_the_workdir_is_refused_and_left_as_it_is(trained, tmp_path):
    """A sweep's folder (or runs/) named as a run's --workdir, as when the sweep's command is run
    again without --sweep: a run trained at its root, beside its runs, and load() of the folder
    then found that run, not the hint that it holds runs."""
    runs = tmp_path / "sweep"
    shutil.copytree(trained, runs / "seed=0")
    before = sorted(runs.rglob("*"))
    _one_error_line(
        _launch(f"--workdir={runs}", *tiny_flags()),
        f"--workdir={runs} is a folder of runs (1, e.g. seed=0), such as a sweep's",
    )
    with pytest.raises(control.WorkdirError, match="is a folder of runs"):
        dcgan_jax.train(tiny_config(), runs)
    assert sorted(runs.rglob("*")) == before
    with pytest.raises(checkpoints.CheckpointError, match="is a folder of runs"):
        dcgan_jax.load(runs)


@pytest.fixture
def mount(tmp_path):
    """A small tmpfs of its own, remountable read-only (needs the right to mount, as root has
    here)."""
    with tmpfs(tmp_path / "mount", "64m") as point:
        yield point, lambda: subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)


def test_a_read_only_workdir_is_one_error_line(mount):
    point, read_only = mount
    read_only()
    result = _launch(f"--workdir={point / 'run'}", *tiny_flags())
    _one_error_line(result, f"--workdir={point / 'run'}", "Read-only file system")


def _changed_mid_run(workdir: Path, change) -> subprocess.CompletedProcess:
    """A long tiny run in ``workdir``, ``change()`` done to it after its checkpoint 40 is written;
    the run's result (it must end by itself within two minutes of the change)."""
    flags = [f"--workdir={workdir}", *tiny_flags(num_steps=100_000, checkpoint_every=20)]
    run = subprocess.Popen(
        [*LAUNCH, *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    deadline = time.monotonic() + 240
    while not (checkpoints.checkpoint_dir(workdir) / "40").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        change()
        stdout, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    return subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)


def test_a_workdir_gone_read_only_mid_run_is_one_error_line_and_the_rerun_resumes(tmp_path):
    """The folder turns read-only while the run writes (a bind mount of it remounted read-only:
    files already open stay writable, as after a real remount they would fail too): one error line
    naming the write that failed, no hang; made writable again, the same command resumes past the
    lock the first run could not remove."""
    with tmpfs(tmp_path / "mount", "64m") as point:
        workdir = point / "run"

        def read_only():
            subprocess.run(["mount", "--bind", str(workdir), str(workdir)], check=True)
            remount = ["mount", "-o", "remount,bind,ro", str(workdir)]
            for _ in range(100):  # Refused (busy) while a file opened through it is written.
                if subprocess.run(remount, capture_output=True).returncode == 0:
                    return
                time.sleep(0.05)
            subprocess.run(remount, check=True)

        try:
            result = _changed_mid_run(workdir, read_only)
        finally:
            subprocess.run(["umount", str(workdir)], check=True)
        _one_error_line(result, str(workdir), "Read-only file system")
        assert f"{control.LOCK_NAME}'" not in result.stderr  # The first failure, not the lock's.
        assert (workdir / control.LOCK_NAME).exists()  # Stale: its process is gone.
        saved = checkpoints.checkpoint_dir(workdir).iterdir()
        newest = max(int(path.name) for path in saved if path.name.isdigit())
        more = tiny_flags(num_steps=newest + 2, checkpoint_every=20)
        resumed = _launch(f"--workdir={workdir}", *more)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"at step {newest}." in resumed.stderr, resumed.stderr[-3000:]


def _swap(a: Path, b: Path) -> None:
    """Exchanges two paths atomically (Linux renameat2 with RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_cwd, exchange = -100, 2
    if libc.renameat2(at_cwd, bytes(a), at_cwd, bytes(b), exchange):
        raise OSError(ctypes.get_errno(), "renameat2", str(a))


@pytest.mark.parametrize("in_its_place", [None, "file", "folder"])
def test_a_workdir_removed_mid_run_is_one_error_line(tmp_path, in_its_place):
    """The run ends, whichever it meets first: a failed write, or a folder that is not its own at
    the path (one put in its place, or the one Orbax's save makes anew where the run's is gone),
    which it never goes on writing into."""
    workdir = tmp_path / "run"

    def remove():  # Moved away at once, then deleted: the run still writes into it meanwhile.
        removed = tmp_path / "removed"
        if in_its_place == "file":  # Swapped in one step, so no write can fall between the two.
            removed.write_text("x")
        if in_its_place == "folder":
            removed.mkdir()
        if in_its_place:
            _swap(workdir, removed)
        else:
            workdir.rename(removed)
        shutil.rmtree(removed, ignore_errors=True)

    result = _changed_mid_run(workdir, remove)
    replaced = "is no longer the folder the run started in"
    why = {None: "No such file", "file": "Not a directory", "folder": replaced}[in_its_place]
    if replaced in result.stderr:  # Seen before a write failed (or Orbax's save made it anew).
        why = replaced
    _one_error_line(result, str(workdir), why)


@pytest.mark.parametrize("when", ["wait_until_finished", "close"])
def test_a_file_system_error_tensorstore_reports_as_another_type_is_the_workdir_error(
    tmp_path, monkeypatch, when
):
    """TensorStore, which writes Orbax's arrays in the background, reports a failed write as a
    ValueError with the error number in its text (seen when the workdir became a file mid-run):
    it ends the run as any other failed write to the workdir does, whether the run waits for the
    save or closes the checkpointer; a ValueError without one is not taken for the disk's."""
    workdir = tmp_path / "run"
    broken = f'Error writing local file "{workdir}/checkpoints/3": Not a directory'

    def fail(*args, **kwargs):
        raise ValueError(f"FAILED_PRECONDITION: {broken} [os_error_code='20']")

    monkeypatch.setattr(ocp.CheckpointManager, when, fail)
    with pytest.raises(control.WorkdirError, match="cannot write the run's files in") as error:
        dcgan_jax.train(tiny_config(), workdir)
    assert broken in str(error.value) and error.value.__cause__.errno == errno.ENOTDIR
    monkeypatch.setattr(ocp.CheckpointManager, when, lambda *args: int("a"))
    with pytest.raises(ValueError, match="invalid literal"):
        dcgan_jax.train(tiny_config(), tmp_path / "other")


def test_analysis_of_a_read_only_run_checks_before_the_work_and_takes_an_output_dir(
    trained, mount, tmp_path
):
    point, read_only = mount
    shutil.copytree(trained, point / "run")
    read_only()
    command = [
        sys.executable,
        "-m",
        "dcgan_jax.analysis",
        f"--workdir={point / 'run'}",
        "--metrics=g_loss",
    ]
    refused = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    _one_error_line(
        refused, f"--output_dir={point / 'run' / 'analysis'}", "(Read-only file system)"
    )
    result = subprocess.run(
        [*command, f"--output_dir={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "training_grid_step6.png").exists()


@pytest.mark.parametrize("damaged", ['{"model": ', "[]", "null"])
def test_an_invalid_config_json_names_the_file(trained, tmp_path, damaged):
    """Invalid JSON, or JSON that is not an object (ml_collections raised AttributeError)."""
    workdir, _ = _copy_run(trained, tmp_path)
    (workdir / "config.json").write_text(damaged)
    with pytest.raises(
        ConfigError, match=f"{workdir / 'config.json'}: cannot read the run's config"
    ):
        dcgan_jax.load(workdir, experiment="fashion_dcgan")
    with pytest.raises(ConfigError, match="cannot read the run's config"):
        sweep.results(tmp_path)
    command = [
        sys.executable,
        "-m",
        "dcgan_jax.analysis",
        f"--workdir={workdir}",
        "--experiment=fashion_dcgan",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    _one_error_line(result, str(workdir / "config.json"))


def test_a_batch_that_does_not_fit_in_memory_names_the_batch_and_a_smaller_one(tmp_path):
    """A real out-of-memory: the run's address space is capped at 4 GiB (a JAX process here takes
    about 2 GiB), and the tiny model's step at batch 65536 needs 3.4 GiB more (XLA's memory
    analysis: 53 KiB an image)."""
    flags = [f for f in tiny_flags(num_steps=1, batch_size=65536) if "num_synthetic" not in f]
    limit = (
        "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
    )
    code = limit + "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    args = [
        sys.executable,
        "-c",
        code,
        str(REPO / "launch.py"),
        "--experiment=fashion_dcgan",
        f"--workdir={tmp_path}",
    ]
    result = subprocess.run(
        [*args, *flags, "--config.dataset.num_synthetic=65536"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    _one_error_line(
        result,
        "--config.train.batch_size=65536",
        "does not fit",
        "try --config.train.batch_size=32768",
    )


def test_an_empty_sweep_is_an_error_even_as_a_dry_run(tmp_path):
    result = _launch(
        f"--workdir={tmp_path / 'sweep'}", "--sweep=", "--sweep_dry_run", *tiny_flags()
    )
    _one_error_line(result, "--sweep is empty")
    assert not (tmp_path / "sweep").exists()


def test_a_field_given_twice_in_a_sweep_is_an_error():
    with pytest.raises(ConfigError, match="seed is given twice"):
        sweep.expand("seed=0,1 seed=2", tiny_config())
    # Swept and also a --config flag of the command: each run's value would override the flag.
    with pytest.raises(ConfigError, match="seed is swept and also given as --config.seed"):
        sweep.expand("seed=0,1", tiny_config(), ["seed"])
    # A value listed twice, also as two spellings of one number or bool: two runs of one config,
    # in one folder (a SLURM array would run them at once, one locked out).
    for spec in (
        "seed=1,1",
        "optimizer.learning_rate=1e-4,0.0001",
        "model.spectral_norm=true,True",
    ):
        with pytest.raises(ConfigError, match="lists one value twice"):
            sweep.expand(spec, tiny_config())


def test_a_conditional_model_on_an_image_folder_without_classes_names_both_fixes(tmp_path):
    from PIL import Image

    for i in range(20):
        Image.fromarray(np.full((28, 28), 10 * i, np.uint8)).save(tmp_path / f"{i}.png")
    config = tiny_config()
    config.dataset.update(name="image_folder", data_dir=str(tmp_path), image_size=28)
    config.model.num_classes = 10
    with pytest.raises(ConfigError) as error:
        dcgan_jax.train(config, tmp_path / "run")
    assert "has no class sub-folders" in str(error.value)
    assert "--config.model.num_classes=0" in str(error.value) and "sub-folder of its own" in str(
        error.value
    )


def test_a_conditional_model_needs_images_of_each_of_its_classes(tmp_path):
    """``model.num_classes=20`` on a dataset of 10 classes trained without a word, G drawing classes
    10 to 19 that no real image has (D saw them only as fakes); its first evaluation then failed on
    them, maybe hours in. Fewer classes than the labels was refused already."""
    config = tiny_config()  # The synthetic set: labels 0 to 9.
    for num_classes in (20, 5):
        config.model.num_classes = num_classes
        with pytest.raises(ConfigError) as error:
            dcgan_jax.train(config, tmp_path / str(num_classes))
        assert str(error.value).startswith(f"--config.model.num_classes={num_classes}: G draws")
        assert "have 10 classes, labelled 0 to 9: a model of them needs" in str(error.value)
        assert "--config.model.num_classes=10 and labels 0 to 9" in str(error.value)


def test_a_corrupt_label_byte_is_reported_as_a_corrupt_file(tmp_path):
    images = np.zeros((20, 28, 28), np.uint8)
    labels = np.arange(20, dtype=np.uint8) % 10
    labels[7] = 200
    for name, array in (
        ("train-images-idx3-ubyte.gz", images),
        ("train-labels-idx1-ubyte.gz", labels),
    ):
        header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(
            f">{array.ndim}I", *array.shape
        )
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(header + array.tobytes())
    with pytest.raises(data.DataError) as error:
        data.load_idx_folder(tmp_path, "train")
    message = str(error.value)
    assert str(tmp_path / "train-labels-idx1-ubyte.gz") in message and "200 at index 7" in message
    assert "corrupt" in message and "num_classes" not in message


def test_evaluate_validates_its_split_and_labels():
    images = np.zeros((1000, 28, 28, 1), np.float32)
    with pytest.raises(evaluation.EvaluationError, match="split='validation'.* train, test"):
        evaluation.evaluate(images, split="validation")
    with pytest.raises(evaluation.EvaluationError, match="dataset='cifar10'"):
        evaluation.evaluate(images, dataset="cifar10")
    shared_dataset_dir("fashion_mnist")
    with pytest.raises(
        evaluation.EvaluationError, match=r"class indices in \[0, 10\) expected, got \[12\]"
    ):
        evaluation.evaluate(images, labels=np.full(1000, 12))


def _start(workdir, **overrides):
    args = [*LAUNCH, f"--workdir={workdir}", *tiny_flags(**overrides)]
    return subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO
    )


def test_sigterm_while_the_step_compiles_exits_143_with_a_checkpoint(tmp_path):
    process = _start(tmp_path, num_steps=100_000, checkpoint_every=1000)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "Training from step 0" in line:  # The first dispatch compiles next.
            break
    process.send_signal(signal.SIGTERM)
    try:
        log = "".join(lines) + process.communicate(timeout=180)[1]
    finally:  # One that ignored the signal would train on for 100,000 steps past the test.
        process.kill()
    assert process.returncode == 143, log[-3000:]
    step = checkpoints.Checkpointer(tmp_path, create=False).all_steps()
    assert (
        step == [control.read_status(tmp_path)["step"]]
        and control.read_status(tmp_path)["ended"] == "signal"
    )


def test_sigterm_during_initialisation_logs_one_line_releases_the_lock_and_exits_143(tmp_path):
    process = _start(tmp_path)
    deadline = time.monotonic() + 120
    while not (tmp_path / control.LOCK_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    # Set-up has begun: the lock is held, the data not yet loaded.
    process.send_signal(signal.SIGTERM)
    log = process.communicate(timeout=120)[1]
    assert process.returncode == 143, log[-3000:]
    warnings = [line for line in log.splitlines() if line.startswith(("W", "E"))]
    assert (
        len(warnings) == 1
        and "SIGTERM received before training started; nothing was trained" in warnings[0]
    )
    assert not (tmp_path / control.LOCK_NAME).exists() and "Traceback" not in log
    assert not checkpoints.checkpoint_dir(tmp_path).exists() or not list(
        checkpoints.checkpoint_dir(tmp_path).iterdir()
    )


def test_status_records_a_time_limit_and_a_divergence_and_the_sweep_table_shows_them(
    tmp_path, monkeypatch
):
    from test_training import _adam_that_diverges_above

    from dcgan_jax.gan import state as state_lib

    dcgan_jax.train(tiny_config(num_steps=100_000, max_seconds=1e-3), tmp_path / "limited")
    monkeypatch.setattr(state_lib, "make_optimizer", _adam_that_diverges_above(1e-4))
    with pytest.raises(control.TrainingDiverged):
        dcgan_jax.train(tiny_config(num_steps=8, log_every=1), tmp_path / "diverged")
    assert control.read_status(tmp_path / "limited")["ended"] == "time_limit"
    diverged = control.read_status(tmp_path / "diverged")
    assert (
        diverged["ended"] == "diverged"
        and "non-finite" in diverged["detail"]
        and diverged["finished"]
    )
    rows = {row["run"]: row["status"] for row in sweep.results(tmp_path)}
    assert rows == {"diverged": "diverged", "limited": "time_limit"}


def test_an_experiment_outside_the_experiments_folder_is_refused(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    relative = os.path.relpath(tmp_path / "x", REPO / "experiments")
    result = subprocess.run(
        [sys.executable, "launch.py", f"--experiment={relative}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    _one_error_line(result, f"--experiment={relative}", "not a path")
    assert not marker.exists()


def test_an_exception_reported_at_garbage_collection_goes_to_the_log_file_not_the_console(
    absl_info,
):
    """Python prints such exceptions (an abandoned Orbax read of a damaged checkpoint) as a
    traceback on stderr at whatever moment it collects them; the commands route them to train.log
    only."""
    import logging as std_logging
    import types

    from dcgan_jax.run import writers

    records = []
    handler = std_logging.Handler()
    handler.emit = records.append
    std_logging.getLogger("absl").addHandler(handler)
    try:
        unraisable = types.SimpleNamespace(
            err_msg=None, object="<coroutine read>", exc_value=RuntimeError("shard")
        )
        writers.unraisable_to_log(unraisable)
    finally:
        std_logging.getLogger("absl").removeHandler(handler)
    (record,) = records
    assert "Exception ignored in '<coroutine read>': RuntimeError('shard')" in record.getMessage()
    assert not writers.ConsoleFilter().filter(record)  # Not for the console.
    code = (
        "import sys; from dcgan_jax.run import cli; cli.run(lambda argv: "
        "print(sys.unraisablehook.__name__))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "unraisable_to_log", result.stderr[-2000:]


# Issue 33: a probe of 232 bad inputs, the 28 not handled.


def _rates_in_state(workdir, config):
    from conftest import restore_full_state

    state = restore_full_state(workdir, config)
    return float(state.g.learning_rate), float(state.d.learning_rate)


def test_a_resume_with_a_new_learning_rate_applies_it_and_records_from_which_step(tmp_path):
    workdir = tmp_path / "run"
    dcgan_jax.train(tiny_config(num_steps=3), workdir)
    config = tiny_config(num_steps=6)
    config.optimizer.d_learning_rate = 1e-4  # D's rate changed; G's stays at the config's 2e-4.
    changed = dcgan_jax.train(config, workdir)
    assert float(changed.d.learning_rate) == pytest.approx(1e-4) and float(
        changed.g.learning_rate
    ) == pytest.approx(2e-4)
    plain = dcgan_jax.train(tiny_config(num_steps=6), tmp_path / "plain_a")
    assert not trees_equal(changed.d.params, plain.d.params)  # The new rate was used.
    rows = [
        json.loads(line) for line in (workdir / "learning_rates.jsonl").read_text().splitlines()
    ]
    assert [(r["step"], r["d"]) for r in rows] == [
        (0, pytest.approx(2e-4)),
        (3, pytest.approx(1e-4)),
    ]
    assert "user" in rows[1]["why"]
    assert dcgan_jax.load(workdir).config.optimizer.d_learning_rate == pytest.approx(1e-4)


def test_a_resume_drops_the_rate_records_of_the_steps_it_redoes(tmp_path):
    # A divergence lowered the rates from step 3, and from 5, and the process died before a
    # checkpoint held them: the resumed run goes on at the checkpoint's rates, and says so.
    workdir = tmp_path / "run"
    dcgan_jax.train(tiny_config(num_steps=3), workdir)
    records = workdir / "learning_rates.jsonl"
    for step in (3, 5):
        resume.record_rates(workdir, step, (1e-5, 1e-5), "lowered after divergence")
    dcgan_jax.train(tiny_config(num_steps=6), workdir)

    def rows():
        return [(r["step"], r["g"], r["d"], r["why"]) for r in map(json.loads, records.open())]

    assert rows() == [(0, 2e-4, 2e-4, "the config's")]
    records.unlink()  # A run from before the records: the rates it goes on with are recorded.
    dcgan_jax.train(tiny_config(num_steps=9), workdir)
    assert rows() == [(6, pytest.approx(2e-4), pytest.approx(2e-4), "the checkpoint's")]


def test_a_resume_that_changes_nothing_keeps_a_rate_the_divergence_policy_lowered(tmp_path):
    workdir = tmp_path / "run"
    dcgan_jax.train(tiny_config(num_steps=3), workdir)
    ckpt = checkpoints.Checkpointer(workdir, create=False)
    from conftest import restore_full_state

    state = restore_full_state(workdir, tiny_config())
    lowered = state.replace(g=state.g.with_learning_rate(5e-5))  # As _recover leaves it.
    ckpt.save(
        lowered.replace(step=lowered.step + 1),
        tiny_config(num_steps=6),
        {"image_shape": [28, 28, 1]},
    )
    ckpt.wait()
    resumed = dcgan_jax.train(tiny_config(num_steps=6), workdir)
    assert float(resumed.g.learning_rate) == pytest.approx(5e-5)


@pytest.mark.parametrize(
    "field, value", [("seed", 3), ("dataset.num_synthetic", 256), ("train.ema_decay", 0.9)]
)
def test_a_resume_that_changes_the_seed_the_data_or_the_ema_is_refused_naming_the_field(
    tmp_path, field, value
):
    workdir = tmp_path / "run"
    dcgan_jax.train(tiny_config(num_steps=3), workdir)
    flags = tiny_flags(num_steps=6)
    result = subprocess.run(
        [*LAUNCH, f"--workdir={workdir}", *flags, f"--config.{field}={value}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert (
        len(errors) == 1 and f"--config.{field}={value}" in errors[0] and "resume" in errors[0]
    ), errors


def test_a_synthetic_run_resumed_on_fashion_mnist_is_refused(tmp_path):
    folder = shared_dataset_dir("fashion_mnist")
    workdir = tmp_path / "run"
    dcgan_jax.train(tiny_config(num_steps=3), workdir)
    config = tiny_config(num_steps=6)
    config.dataset.update(name="fashion_mnist", data_dir=str(folder))
    with pytest.raises(
        checkpoints.CheckpointMismatchError,
        match=r"--config.dataset.name='fashion_mnist'.*'synthetic'",
    ):
        dcgan_jax.train(config, workdir)


@pytest.mark.parametrize(
    "args, message",
    [
        ([*LAUNCH, "--workdir="], "--workdir is empty"),
        ([*LAUNCH, "--workdir=", "--sweep=seed=0,1"], "--workdir is empty"),
        ([sys.executable, "-m", "dcgan_jax.evaluation", "--workdir="], "--workdir is empty"),
        (
            [*LAUNCH, "--experiment=mnist_dcgan", "--workdir=/tmp/never"],
            "--experiment is given 2 times (fashion_dcgan, mnist_dcgan)",
        ),
    ],
)
def test_an_empty_workdir_or_a_second_experiment_is_one_error_line(args, message, tmp_path):
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith(f"error: {message}"), result.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # Neither runs/ nor eval/ in the current folder.


def test_an_empty_or_missing_workdir_in_python_is_refused_not_the_current_folder(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    calls = [
        lambda: dcgan_jax.train(tiny_config(num_steps=1), ""),
        lambda: dcgan_jax.train(tiny_config(num_steps=1), None),
        lambda: dcgan_jax.load(" "),
        lambda: scoring.evaluate_run(""),
    ]
    for call in calls:
        with pytest.raises(control.WorkdirError, match="--workdir is empty"):
            call()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["--no_such_flag=1", "--sweep_max_parallel=many"])
def test_an_unknown_or_mistyped_flag_exits_2_like_every_usage_error(flag, tmp_path):
    result = subprocess.run(
        [*LAUNCH, f"--workdir={tmp_path}", flag], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_load_takes_a_step_given_as_a_string_and_names_a_step_that_is_not_a_number(trained):
    assert dcgan_jax.load(trained, step="3").step == 3
    with pytest.raises(
        checkpoints.CheckpointError, match=r"step='latest': a checkpoint's step number"
    ):
        dcgan_jax.load(trained, step="latest")


def test_a_relative_data_dir_is_recorded_absolute_so_the_run_is_read_from_any_folder(
    tmp_path, monkeypatch
):
    from PIL import Image

    (tmp_path / "data" / "pics").mkdir(parents=True)
    for i in range(32):
        Image.fromarray(np.full((28, 28), 8 * i, np.uint8)).save(tmp_path / f"data/pics/{i}.png")
    monkeypatch.chdir(tmp_path)
    config = tiny_config(num_steps=3)
    config.dataset.update(name="image_folder", data_dir="data/pics", image_size=28)
    dcgan_jax.train(config, "run")
    monkeypatch.chdir(tmp_path / "run")  # Elsewhere: "data/pics" is no folder here.
    folder = str(tmp_path / "data" / "pics")
    assert json.loads(Path("config.json").read_text())["dataset"]["data_dir"] == folder
    assert dcgan_jax.load(".").config.dataset.data_dir == folder


def test_a_data_folder_found_through_the_variable_is_recorded_so_the_run_is_read_without_it(
    tmp_path, monkeypatch
):
    """DCGAN_JAX_DATA_DIR set relative, as the README's command sets it: the run's records name the
    folder it read absolutely, so its evaluation and analysis find the images from another folder
    with the variable unset. Before, they kept data_dir '' and went to TFDS (offline: an error)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fashion_mnist").symlink_to(shared_dataset_dir("fashion_mnist").resolve())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(data.DATA_DIR_ENV, "data")
    config = tiny_config(num_steps=2)
    config.dataset.name = "fashion_mnist"
    dcgan_jax.train(config, "run")
    monkeypatch.delenv(data.DATA_DIR_ENV)
    monkeypatch.chdir(tmp_path / "run")
    folder = str(tmp_path / "data" / "fashion_mnist")
    assert json.loads(Path("config.json").read_text())["dataset"]["data_dir"] == folder
    assert analysis.training_images(dcgan_jax.load(".")).shape == (60000, 28, 28, 1)


def test_an_image_folder_with_images_beside_its_class_folders_is_refused_naming_them(tmp_path):
    from PIL import Image

    for where in ("cats/a.png", "dogs/b.png", "loose1.png", "loose2.png"):
        (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / where)
    with pytest.raises(
        data.DataError, match=r"also 2 images beside them \(loose1.png, loose2.png\)"
    ):
        data.load_image_folder(tmp_path)


@pytest.mark.parametrize(
    "flag, message",
    [
        (
            "--config.loss.r1_gamma=1e30",
            "--config.loss.r1_gamma=1e+30: at most 10000 (0.1 to 100 is usual)",
        ),
        (
            "--config.train.max_seconds=nan",
            "--config.train.max_seconds=nan: must be a finite number",
        ),
        ("--config.model.num_classes=200", "--config.model.num_classes=200 clusters of 128 images"),
    ],
)
def test_an_out_of_range_field_is_one_error_line(flag, message, tmp_path):
    flags = [f for f in tiny_flags(num_steps=2) if not f.startswith("--config.model.num_classes")]
    flags += ["--config.dataset.labels=clusters"] if "num_classes" in flag else []
    result = subprocess.run(
        [*LAUNCH, f"--workdir={tmp_path}", *flags, flag], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"error: {message}" in result.stderr, result.stderr[-2000:]


def test_divergence_advice_names_the_field_at_fault_and_no_policy_already_in_force():
    config = tiny_config()
    config.loss.r1_gamma = 5000.0
    config.train.on_divergence = "restore"
    divergence = control.Divergence(4, ["d_loss=nan (discriminator)"], (2e-4, 2e-4))
    advice = control.divergence_advice(config, divergence)
    assert "--config.loss.r1_gamma (now 5000" in advice and "learning_rate" not in advice
    assert "on_divergence=restore" not in advice and "max_divergence_restores" in advice
    config.loss.r1_gamma, config.train.on_divergence = 0.0, "stop"
    advice = control.divergence_advice(config, divergence)
    assert (
        "--config.optimizer.learning_rate" in advice
        and "--config.train.on_divergence=restore" in advice
    )


def test_analysis_with_a_missing_comparison_run_is_one_error_line(trained, tmp_path):
    command = [
        sys.executable,
        "-m",
        "dcgan_jax.analysis",
        f"--workdir={trained}",
        f"--output_dir={tmp_path}",
    ]
    result = subprocess.run(
        [*command, f"--compare={tmp_path / 'nowhere'}"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"error: --compare: no run's metrics.jsonl in {tmp_path / 'nowhere'}" in result.stderr


@pytest.mark.parametrize("where", ["folder", "read_only_parent"])
def test_a_sweep_slurm_path_that_cannot_be_written_is_one_error_line_before_any_work(
    where, tmp_path, mount
):
    point, read_only = mount
    read_only()
    script = tmp_path if where == "folder" else point / "a.sbatch"
    args = [
        f"--workdir={tmp_path / 'sweep'}",
        "--sweep=seed=0,1",
        f"--sweep_slurm={script}",
        *tiny_flags(num_steps=2),
    ]
    result = subprocess.run([*LAUNCH, *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    named = script if where == "folder" else point  # The folder it would be written in.
    assert result.stderr.startswith(f"error: --sweep_slurm={named}"), result.stderr[-2000:]
    assert not (tmp_path / "sweep").exists() or not any((tmp_path / "sweep").iterdir())


@pytest.mark.parametrize("damage", ["truncated", "older_layout", "other_width"])
def test_a_damaged_reference_cache_is_rebuilt_with_one_warning(damage, tmp_path, caplog):
    folder = shared_dataset_dir("fashion_mnist")
    first = evaluation.Evaluator(
        evaluation.reference_config("fashion_mnist", "test", folder),
        cache_dir=tmp_path,
        memorisation=False,
    )
    (cache,) = tmp_path.glob("reference_fashion_mnist_test_*.npz")
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:1000])
    elif damage == "other_width":  # Every key right, the features of another network.
        with np.load(cache) as stored:
            arrays = dict(stored)
        arrays["features"] = arrays["features"][:, :64]
        np.savez(cache, **arrays)
    else:  # As an older version wrote it: other names, features of another width.
        np.savez(cache, features=np.zeros((10, 64), np.float32), images_sha256=np.array("x"))
    with caplog.at_level("WARNING"):
        again = evaluation.Evaluator(
            evaluation.reference_config("fashion_mnist", "test", folder),
            cache_dir=tmp_path,
            memorisation=False,
        )
    assert "Rebuilding the reference features" in caplog.text and str(cache) in caplog.text
    np.testing.assert_array_equal(again.real_features, first.real_features)


def test_a_stop_signal_while_a_cache_is_written_leaves_no_partial_file(tmp_path, monkeypatch):
    from dcgan_jax.evaluation import references

    def stopped(path, **arrays):
        Path(path).write_bytes(b"half a file")
        raise control.Interrupted("SIGTERM", 15, "SIGTERM received: stopped")

    monkeypatch.setattr(np, "savez", stopped)
    with pytest.raises(control.Interrupted):
        references.save_npz(tmp_path / "cache" / "reference.npz", features=np.zeros(3))
    assert not list(tmp_path.rglob("*.npz"))


def test_a_cache_folder_that_cannot_be_written_is_one_warning_and_the_scores_stand(
    tmp_path, caplog
):
    folder, blocked = shared_dataset_dir("fashion_mnist"), tmp_path / "a_file"
    # As a read-only home: no folder can be made.
    blocked.write_text("a file where the cache folder would go")
    with caplog.at_level("WARNING"):
        uncached = evaluation.Evaluator(
            evaluation.reference_config("fashion_mnist", "test", folder),
            cache_dir=blocked / "cache",
            memorisation=False,
        )
    assert "Could not write the cache" in caplog.text and str(blocked / "cache") in caplog.text
    assert not list(tmp_path.rglob("*.npz"))  # No partial file left behind.
    cached = evaluation.Evaluator(
        evaluation.reference_config("fashion_mnist", "test", folder),
        cache_dir=tmp_path / "cache",
        memorisation=False,
    )
    np.testing.assert_array_equal(uncached.real_features, cached.real_features)


def test_without_a_home_folder_the_caches_go_to_the_temporary_folder(tmp_path, monkeypatch):
    """No $HOME and a user the system does not list (a container run as an arbitrary user):
    Path.home() raises RuntimeError, which was a traceback at every evaluation's start."""
    import pwd
    import tempfile

    def unlisted(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    references = evaluation.references
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv(references.CACHE_ENV, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unlisted)
    assert references.default_cache_dir() == Path(tempfile.gettempdir()) / "dcgan_jax_cache"
    monkeypatch.setenv(references.CACHE_ENV, "")  # Exported but empty: not the current folder.
    assert references.default_cache_dir().is_absolute()
    monkeypatch.setenv(references.CACHE_ENV, str(tmp_path))
    assert references.default_cache_dir() == tmp_path


def test_a_checkpoint_pruned_while_it_is_read_is_not_called_damaged(
    trained, tmp_path, caplog, absl_info
):
    """A reader racing a run that saves and prunes: the checkpoint it was reading is gone (the run
    removed it), which is re-listed, not reported as damage."""
    shutil.copytree(trained, tmp_path / "run")
    ckpt = checkpoints.Checkpointer(tmp_path / "run", create=False)

    def restore(step):
        if step == 6 and (ckpt.directory / "6").exists():
            shutil.rmtree(ckpt.directory / "6")  # Pruned by the run in the middle of the read.
            raise checkpoints.CheckpointError("cannot restore: a file vanished")
        return step

    with caplog.at_level("INFO"):
        assert ckpt.newest_good(restore) == 3
    assert "Damaged" not in caplog.text and "removed while it was read" in caplog.text


def test_a_reader_racing_a_run_that_saves_then_prunes_goes_on_to_the_newer_checkpoint(
    trained, tmp_path, caplog, monkeypatch, absl_info
):
    """As a live run does it (``load`` in a notebook, a run checkpointing): while step 6 is read,
    the run saves 9 and starts removing 6, still listed half removed; the listing meets a folder
    that vanishes under it. Before: 'steps [6] are all damaged' (or 3 taken, 6 called damaged), or
    a NotADirectoryError from the listing."""
    shutil.copytree(trained, tmp_path / "run")
    ckpt = checkpoints.Checkpointer(tmp_path / "run", create=False)
    reload = ocp.CheckpointManager.reload
    vanishing = ["once"]

    def listing_meets_a_vanished_folder(manager):
        if vanishing and vanishing.pop():
            raise NotADirectoryError(f"Path is not a directory: {ckpt.directory / '6'}")
        return reload(manager)

    def restore(step):
        if step == 6 and not (ckpt.directory / "9").exists():
            shutil.copytree(ckpt.directory / "6", ckpt.directory / "9")  # Saved by the run.
            shutil.rmtree(ckpt.directory / "6" / "state")  # Being pruned: still listed.
            raise checkpoints.CheckpointError("cannot restore: a file vanished")
        return step

    monkeypatch.setattr(ocp.CheckpointManager, "reload", listing_meets_a_vanished_folder)
    with caplog.at_level("INFO"):
        assert ckpt.newest_good(restore) == 9
    assert "Damaged" not in caplog.text and "removed while it was read" in caplog.text


def test_opening_a_run_whose_listing_meets_a_pruned_folder_lists_again(
    trained, tmp_path, monkeypatch
):
    """The library lists the steps when a reader opens the run; a running run's pruning can remove
    one in the middle (a raw FileNotFoundError from ``load()`` in a probe of a live run)."""
    shutil.copytree(trained, tmp_path / "run")
    manager = ocp.CheckpointManager
    vanishing = ["once"]

    def opening(*args, **kwargs):
        if vanishing and vanishing.pop():
            raise FileNotFoundError(f"No such file or directory: '{tmp_path / 'run' / '4'}'")
        return manager(*args, **kwargs)

    monkeypatch.setattr(ocp, "CheckpointManager", opening)
    assert dcgan_jax.load(tmp_path / "run").step == 6


def test_the_progress_grid_and_an_average_of_a_running_run_leave_out_what_it_prunes(
    trained, tmp_path, monkeypatch, caplog, absl_info
):
    """While they read step 3, the run saves 9 and prunes 3 (half removed, then gone). Before: the
    progress grid failed (`no checkpoint for step 3`), load(average=2) was a ValueError."""
    shutil.copytree(trained, tmp_path / "run")
    folder = tmp_path / "run" / "checkpoints"

    def run_saves_and_prunes():
        if not (folder / "9").exists():
            shutil.copytree(folder / "6", folder / "9")
            shutil.rmtree(folder / "3" / "state")

    load = trained_lib.load

    def load_racing(workdir, step, **kwargs):
        if step == 3:
            run_saves_and_prunes()
            shutil.rmtree(folder / "3")
        return load(workdir, step, **kwargs)

    monkeypatch.setattr(trained_lib, "load", load_racing)
    with caplog.at_level("INFO"):
        grid = analysis.progress_grid(tmp_path / "run", tmp_path / "grid.png", num=4)
    from PIL import Image

    one_row = analysis.progress_grid(tmp_path / "run", tmp_path / "six.png", num=4, steps=[6])
    assert np.array_equal(np.asarray(Image.open(grid)), np.asarray(Image.open(one_row)))
    assert "Checkpoint 3 was removed by the running run" in caplog.text

    shutil.rmtree(tmp_path / "run")
    shutil.copytree(trained, tmp_path / "run")
    restore = checkpoints.Checkpointer.restore_generator

    def restore_racing(checkpointer, target, ema, step):
        if step == 3:
            run_saves_and_prunes()
        return restore(checkpointer, target, ema, step)

    monkeypatch.setattr(checkpoints.Checkpointer, "restore_generator", restore_racing)
    assert dcgan_jax.load(tmp_path / "run", average=2).step == 9


def test_a_stop_signal_during_an_evaluation_abandons_it_and_stops_at_once(
    tmp_path, monkeypatch, caplog
):
    """An evaluation with Inception takes minutes on a CPU; before, a Ctrl-C or a scheduler's
    SIGTERM during it waited for its end (a probe: over 4 minutes). Its step is checkpointed."""
    config = tiny_config(num_steps=100)
    config.dataset.update(name="fashion_mnist", data_dir=str(shared_dataset_dir("fashion_mnist")))
    config.eval.update(every=3, num_samples=1000)

    def minutes_long(evaluator, images, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(120)

    monkeypatch.setattr(evaluation.Evaluator, "__call__", minutes_long)
    started = time.monotonic()
    with caplog.at_level("INFO"), pytest.raises(control.Interrupted):
        dcgan_jax.train(config, tmp_path)
    assert time.monotonic() - started < 60
    assert "The evaluation of step 3 is abandoned." in caplog.text
    assert checkpoints.Checkpointer(tmp_path, create=False).all_steps() == [3, 4]
    assert not any("eval/fid" in row for row in writers.read_metrics(tmp_path / "metrics.jsonl"))


def _default_stop_signals():
    """A child's stop signals at their defaults, as a terminal gives them: a suite started under
    nohup, or as a shell's background job, ignores SIGHUP or SIGINT, and its children inherit that
    (and rightly keep ignoring them)."""
    for sig in control.STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_sigterm_ctrl_c_and_sighup_stop_cleanly_with_a_final_checkpoint_and_a_signal_status(
    tmp_path, sig
):
    args = [
        *LAUNCH,
        f"--workdir={tmp_path}",
        *tiny_flags(num_steps=100_000, checkpoint_every=1000, log_every=1),
    ]
    process = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=_default_stop_signals,
    )
    lines = []
    for line in process.stderr:  # Wait until training is under way.
        lines.append(line)
        if " step 3/100000 " in line:
            break
    process.send_signal(sig)
    try:
        _, rest = process.communicate(timeout=120)
    finally:  # One that ignored the signal would train on for 100,000 steps past the test.
        process.kill()
    log = "".join(lines) + rest
    # 143 for SIGTERM, 130 for Ctrl-C, as a shell says.
    assert process.returncode == 128 + sig, log[-3000:]
    stopped = re.search(rf"Stopped by {sig.name} at step (\d+); writing the final checkpoint", log)
    assert stopped, log[-3000:]
    step = int(stopped.group(1))
    assert checkpoints.Checkpointer(tmp_path, create=False).all_steps() == [step]
    assert (
        not list((tmp_path / "checkpoints").glob("*tmp*"))
        and not (tmp_path / control.LOCK_NAME).exists()
    )
    assert dcgan_jax.load(tmp_path).step == step
    status = control.read_status(tmp_path)
    assert (status["ended"], status["step"], status["finished"]) == ("signal", step, False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_to_any_command_outside_training_is_no_traceback_and_the_shells_status(sig):
    """The evaluation, analysis, sweep and classifier commands too: Ctrl-C one line, not a
    KeyboardInterrupt traceback; SIGTERM and SIGHUP end them at once (even in a native wait)."""
    command = (
        "import os, signal, time\nfrom dcgan_jax.run import cli\n\n\ndef main(argv):\n"
        f"    os.kill(os.getpid(), signal.{sig.name})\n    time.sleep(60)\n\n\ncli.run(main)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_default_stop_signals,
    )
    assert result.returncode in (128 + sig, -sig), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert ("SIGINT received: stopped" in result.stderr) == (sig == signal.SIGINT)


@pytest.mark.parametrize("platform", ["cpux", "cuda"])
def test_jax_platforms_naming_a_backend_this_machine_lacks_is_one_error_line(tmp_path, platform):
    """JAX_PLATFORMS=cuda on a login node without GPUs, or a typo: JAX's RuntimeError (a typo) or
    bare AssertionError (cuda without its plugin) was a traceback of some 60 lines; now one line
    naming the backend, which says how to fix it."""
    plugins = [f"jax_cuda{version}_plugin" for version in (12, 13)]
    if platform == "cuda" and any(map(importlib.util.find_spec, plugins)):
        pytest.skip("this machine's JAX has a cuda backend")
    env = {**os.environ, "JAX_PLATFORMS": platform}
    result = _launch(f"--workdir={tmp_path / 'run'}", *tiny_flags(), env=env)
    _one_error_line(result, platform, "JAX_PLATFORMS=''")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB filesystem of its own (tmpfs; needs the right to mount, as root in a container
    has)."""
    with tmpfs(tmp_path / "disk", "4m") as mount_point:
        yield mount_point


def test_disk_full_during_a_save_says_so_and_keeps_the_previous_checkpoint(small_disk, monkeypatch):
    # Orbax leaves its failed write tasks to the garbage collector, and asyncio logs each one at
    # exit.
    std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
    workdir = small_disk / "run"
    dcgan_jax.train(tiny_config(num_steps=3), workdir)
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 64 * 1024))
    ckpt_dir = checkpoints.checkpoint_dir(workdir)
    intact = f"the newest complete checkpoint, {ckpt_dir / '3'}, is intact"
    # Seen before the save starts: the free space is smaller than the last checkpoint.
    with pytest.raises(
        checkpoints.DiskFullError,
        match=r"disk full: no space to write checkpoint 6 in .* needs about",
    ):
        dcgan_jax.train(tiny_config(num_steps=6), workdir)
    # The same when the disk fills up during the save itself (the space check is told it fits).
    monkeypatch.setattr(checkpoints, "_bytes_needed", lambda *args: 0)
    console = std_logging.Handler()  # What the console would show: writers.ConsoleFilter's records.
    console.addFilter(writers.ConsoleFilter())
    shown = []
    console.emit = shown.append
    std_logging.getLogger().addHandler(console)
    try:
        with pytest.raises(
            checkpoints.DiskFullError, match="no space to write checkpoint 6"
        ) as error:
            dcgan_jax.train(tiny_config(num_steps=6), workdir)
    finally:
        std_logging.getLogger().removeHandler(console)
    noise = [r.getMessage()[:200] for r in shown if "dcgan_jax" not in r.pathname]
    assert not noise, noise  # Orbax's errors and tracebacks went to train.log only.
    assert intact in str(error.value) and writers.out_of_space(error.value.__cause__)
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["3"]  # The partial save was removed.
    assert dcgan_jax.load(workdir).step == 3
    ballast.unlink()
    assert int(dcgan_jax.train(tiny_config(num_steps=6), workdir).step) == 6


def test_a_failed_save_made_again_by_a_write_still_running_is_removed(tmp_path):
    """On a full disk Orbax's first failed write ends the save while its other writes still run
    and may make the save's folder again after it was removed (seen in a CI run): the folder is
    removed until it stays away, so the space comes back and no partial save is left."""
    checkpointer = checkpoints.Checkpointer(tmp_path)
    partial = checkpointer.directory / "6.orbax-checkpoint-tmp"
    partial.mkdir()

    def late_write():
        time.sleep(0.3)
        (partial / "state.orbax-checkpoint-tmp").mkdir(parents=True)

    writer = threading.Thread(target=late_write)
    writer.start()
    checkpointer._saving = 6
    with pytest.raises(checkpoints.DiskFullError, match="no space to write checkpoint 6"):
        with checkpointer._writing():
            raise OSError(errno.ENOSPC, "No space left on device")
    writer.join()
    assert not partial.exists()
    checkpointer.close()


@pytest.mark.parametrize(
    "command",
    [
        ["launch.py", "--experiment=fashion_dcgan", "--sweep_dry_run"],
        ["launch.py", "--experiment=fashion_dcgan", "--sweep_slurm=array.sh"],
        ["-m", "dcgan_jax.sweep", "--task=0"],
        ["-m", "dcgan_jax.sweep", "--runs=RUNS", "--manifest=RUNS/manifest.json", "--task=0"],
        ["-m", "dcgan_jax.sweep", "--runs=RUNS/missing"],
        ["-m", "dcgan_jax.sweep", "--runs=RUNS/a_file"],
        ["-m", "dcgan_jax.sweep", "--manifest=RUNS/manifest.json", "--task=0", "--metric=g_loss"],
        ["launch.py", "--experiment=fashion_dcgan", "--config.loss.gp_weight=5"],
        ["launch.py", "--experiment=fashion_dcgan", "--config.loss.r1_every=2", "--sweep=seed=0"],
        ["launch.py", "--experiment=fashion_dcgan", "--sweep=seed=0", "--sweep_submit"],
        ["launch.py", "--experiment=fashion_dcgan", "--sweep=seed=0", "--sweep_max_parallel=2"],
        [
            "launch.py",
            "--experiment=fashion_dcgan",
            "--sweep=seed=0",
            "--sweep_slurm=RUNS/sweep.sh",
            "--sweep_metric=g_loss",
        ],
    ],
    ids=[
        "dry_run_alone",
        "slurm_alone",
        "task_alone",
        "runs_and_manifest",
        "no_folder",
        "a_file",
        "metric_without_runs",
        "setting_read_only_with_another",
        "sweep_setting_no_run_reads",
        "submit_without_slurm",
        "max_parallel_without_slurm",
        "metric_of_a_slurm_sweep",
    ],
)
def test_contradictory_or_dangling_command_flags_are_one_error_line(command, tmp_path):
    """A flag that acts only with another, or two jobs at once, or --runs that is no folder: one
    error line and exit 2, never a training run started or a flag silently ignored."""
    (tmp_path / "a_file").write_text("")
    (tmp_path / "done").mkdir()  # A manifest's task whose run has finished: it would be skipped.
    control.write_status(tmp_path / "done", 2, 2, "finished", 1.0)
    task = {"workdir": str(tmp_path / "done"), "name": "done", "argv": []}
    (tmp_path / "manifest.json").write_text(json.dumps({"tasks": [task]}))
    argv = [arg.replace("RUNS", str(tmp_path)) for arg in command]
    if argv[0] == "launch.py":
        argv.append(f"--workdir={tmp_path / 'run'}")
    result = python(*argv, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # No training run started.


def test_output_its_reader_stops_reading_ends_quietly_as_a_shell_tool_does(tmp_path):
    """``launch.py --sweep=... --sweep_dry_run | head -1``: before, a BrokenPipeError traceback;
    now exit 141 (128 + SIGPIPE), as a shell tool the pipe's reader left. Every command's output
    goes through the same ``cli.run``."""
    seeds = ",".join(map(str, range(3000)))  # Far more than a pipe holds.
    command = [*LAUNCH, f"--sweep=seed={seeds}", "--sweep_dry_run", f"--workdir={tmp_path}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert process.stdout.readline().startswith(sys.executable.encode())
    process.stdout.close()
    process.wait(timeout=120)
    stderr = process.stderr.read().decode()
    assert process.returncode == 128 + signal.SIGPIPE and "Traceback" not in stderr, stderr[-2000:]


@pytest.mark.parametrize("num", [0, 1, 2, 5])
def test_too_few_images_for_the_metrics_are_one_error_naming_the_real_bound(num):
    """The k-nearest-neighbour metrics need k + 1 samples: fewer is an EvaluationError saying how
    many, whatever min_samples was asked for, never top_k's or numpy's own error."""
    images = np.zeros((num, 28, 28, 1), np.float32)
    with pytest.raises(
        evaluation.EvaluationError, match=f"pass at least {evaluation.FEWEST_SCORED}"
    ):
        evaluation.evaluate(images, min_samples=0)


@pytest.mark.parametrize("num", ["0", "-5", "999", "100001", "99999999999999999999"])
def test_the_evaluation_command_refuses_a_sample_count_outside_its_bounds_before_any_work(
    num, tmp_path
):
    (tmp_path / "checkpoints").mkdir()
    result = python(
        "-m", "dcgan_jax.evaluation", f"--workdir={tmp_path}", f"--num_samples={num}", timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    bounds = f"flag --num_samples={num}: {num} is not an integer in the range [1000, 100000]"
    assert bounds in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["dcgan_jax.evaluation", "dcgan_jax.analysis"])
@pytest.mark.parametrize("seed", ["-1", "2147483648", "99999999999999999999"])
def test_a_seed_jax_or_numpy_cannot_take_is_refused_by_the_commands(command, seed, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    result = python("-m", command, f"--workdir={tmp_path}", f"--seed={seed}", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"flag --seed={seed}: {seed} is not an integer in the range [0, 2147483647]" in (
        result.stderr
    )


@pytest.mark.parametrize(
    "given, message",
    [
        ({"steps": [2], "all_steps": True}, "--step=2 and --all_steps: give one of them"),
        (
            {"truncation": float("inf")},
            "truncation must be a finite number > 0 (1 = none), got inf",
        ),
        ({"seed": 2147483647, "draws": 2}, "--seed=2147483647, --draws=2: seeds past 2147483647"),
    ],
)
def test_the_evaluation_refuses_options_that_contradict_or_cannot_scale_before_any_work(
    given, message, tmp_path
):
    """``evaluate_run``'s checks, which the evaluation command's flags reach (its error line)."""
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        scoring.evaluate_run(tmp_path, **given)
    assert not (tmp_path / "eval").exists()


def test_a_path_flag_written_with_equals_and_a_tilde_is_under_home_not_a_folder_named_tilde(
    tmp_path, monkeypatch
):
    """The shell expands ``--workdir ~/x`` but not ``--workdir=~/x``: a command does, so no folder
    named ``~`` appears where it runs; so do ``dcgan_jax.train`` and ``load`` from Python."""
    home = tmp_path / "home"
    (home / "run" / "checkpoints").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home)}
    argv = ["-m", "dcgan_jax.evaluation", "--workdir=~/run", "--output_dir=~/scores"]
    result = python(*argv, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"no checkpoint in {home / 'run' / 'checkpoints'}" in result.stderr
    assert (home / "scores").is_dir() and not (tmp_path / "~").exists()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    dcgan_jax.train(tiny_config(num_steps=1), "~/api_run")
    assert dcgan_jax.load("~/api_run").step == 1 and (home / "api_run" / "checkpoints").is_dir()
    assert not (tmp_path / "~").exists()


def test_a_lock_held_by_an_unrelated_live_process_says_it_may_be_stale_and_how_to_clear_it(
    tmp_path,
):
    lock = tmp_path / control.LOCK_NAME
    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started": "earlier"}))
    with pytest.raises(control.WorkdirLockedError) as error:
        with control.hold(tmp_path, control.StopRequests()):
            pass
    assert "stale" in str(error.value) and f"delete {lock}" in str(error.value)


@pytest.mark.parametrize(
    "command",
    [
        ["launch.py", "--experiment=fashion_dcgan", "--workdir=WORK\ntouch INJECTED"],
        [
            "launch.py",
            "--experiment=fashion_dcgan",
            "--workdir=WORK",
            "--sweep=seed=0,1",
            "--sweep_slurm=WORK/array\n.sh",
        ],
        ["-m", "dcgan_jax.evaluation", "--workdir=WORK\r"],
        ["-m", "dcgan_jax.sweep", "--runs=WORK\x1b[2J"],
    ],
    ids=["workdir_newline", "slurm_newline", "carriage_return", "escape"],
)
def test_control_characters_in_a_path_are_refused_before_anything_reads_them(command, tmp_path):
    argv = [
        arg.replace("WORK", str(tmp_path / "w")).replace("INJECTED", str(tmp_path / "x"))
        for arg in command
    ]
    result = python(*argv, timeout=120)
    assert result.returncode == 2 and "control characters are not allowed" in result.stderr
    assert not (tmp_path / "w").exists() and not (tmp_path / "x").exists()


def test_a_sweep_folder_with_spaces_and_quotes_is_quoted_in_the_slurm_script(tmp_path):
    """The script's #SBATCH values are quoted: running its lines in a shell executes nothing."""
    sweep_dir = tmp_path / "it's a $(touch pwned) sweep"
    runs = sweep.expand("seed=0,1", tiny_config())
    argvs = sweep.commands("fashion_dcgan", sweep_dir, runs, {}, REPO / "launch.py")
    script = slurm.write_array(tmp_path / "array.sh", runs, argvs, sweep_dir, 2)
    header = [
        line[len("#SBATCH ") :]
        for line in script.read_text().splitlines()
        if line.startswith("#SBATCH")
    ]
    subprocess.run(
        ["bash", "-c", "\n".join(f"echo {line}" for line in header)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert not (tmp_path / "pwned").exists()
    assert any(
        str(sweep_dir) in shlex.split(line)[0] for line in header if line.startswith("--output")
    )


@pytest.mark.parametrize(
    "change, named",
    [
        ({"ema_decay": 0.0}, "train.ema_decay"),
        ({"num_classes": 10}, "model.num_classes"),
        ({"spectral_norm": True}, "model.spectral_norm"),
        ({"first_classes": 10}, "model.num_classes"),
    ],
    ids=["ema_off", "labels_on", "spectral_norm_on", "labels_off"],
)
def test_a_checkpoint_that_does_not_fit_the_config_is_named_not_called_damaged(
    change, named, tmp_path
):
    """A resume whose config drops or adds arrays (the EMA, a label embedding, spectral-norm
    vectors) names the changed field; the intact checkpoints stay where they are."""
    first = tiny_config(ema_decay=0.99)
    first.model.num_classes = change.get("first_classes", 0)
    dcgan_jax.train(first, tmp_path)
    changed = tiny_config(ema_decay=change.get("ema_decay", 0.99), num_steps=9)
    changed.model.num_classes = change.get("num_classes", 0)
    changed.model.spectral_norm = change.get("spectral_norm", False)
    with pytest.raises(checkpoints.CheckpointMismatchError) as error:
        dcgan_jax.train(changed, tmp_path)
    assert named in str(error.value) and "damaged" not in str(error.value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3", "6"]


def test_links_in_a_workdir_are_replaced_or_refused_never_written_through(tmp_path):
    """config.json as a link to a file outside the run: replaced by the run's own file, the
    outside one untouched. metrics.jsonl as a link, or checkpoints/ linked outside the run: one
    RunError naming the path, nothing written through."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").symlink_to(outside)
    dcgan_jax.train(tiny_config(num_steps=3), workdir)
    assert outside.read_text() == "precious\n" and not (workdir / "config.json").is_symlink()
    cases = [("metrics.jsonl", control.WorkdirError), ("checkpoints", checkpoints.CheckpointError)]
    for name, error in cases:
        other = tmp_path / f"other_{name}"
        linked = tmp_path / f"linked_{name}"
        linked.mkdir()
        if name == "checkpoints":
            other.mkdir()
        else:
            other.write_text("")
        (linked / name).symlink_to(other)
        with pytest.raises(error, match=name):
            dcgan_jax.train(tiny_config(num_steps=3), linked)
        written = list(other.iterdir()) if other.is_dir() else other.read_text()
        assert not written, written
        assert not (linked / control.LOCK_NAME).exists()  # The lock released.


def _torchscript_zip(path, size: int, numel: int, stored_floats: int):
    """A TorchScript-like archive whose one tensor declares ``size`` elements over a storage that
    declares ``numel`` and holds ``stored_floats`` float32s: pickle opcodes written by hand."""

    def text(s: str) -> bytes:
        return b"X" + struct.pack("<I", len(s)) + s.encode()

    storage_id = b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu")
    storage_id += b"J" + struct.pack("<i", numel) + b"tQ"
    size_tuple = b"(J" + struct.pack("<i", size) + b"t"
    pickled = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(" + storage_id + b"K\x00"
    pickled += size_tuple + b"(K\x01tt" + b"R."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/data/0", np.zeros(stored_floats, np.float32).tobytes())
    return path


@pytest.mark.parametrize(
    "size, numel, stored, why",
    [(4, 4, 4, None), (1_000_000, 4, 4, "reaches element"), (4, 1_000_000, 4, "bytes for")],
    ids=["honest", "tensor_past_its_storage", "storage_past_its_bytes"],
)
def test_the_torchscript_reader_checks_every_tensor_against_its_bytes(
    size, numel, stored, why, tmp_path
):
    """A crafted archive whose tensor or storage claims more than its bytes hold is refused as one
    InceptionError; nothing is read past the buffer."""
    path = _torchscript_zip(tmp_path / "crafted.pt", size, numel, stored)
    if why is None:
        np.testing.assert_array_equal(inception.read_torchscript(path), np.zeros(4, np.float32))
        return
    with pytest.raises(inception.InceptionError, match=why):
        inception.read_torchscript(path)


@pytest.mark.parametrize(
    "flag, value",
    [("dataset.image_size", 4096), ("model.kernel_size", 1000), ("train.d_steps", 1_000_000)],
)
def test_structural_sizes_past_their_bound_are_refused_before_any_work(flag, value):
    config = tiny_config()
    config.update_from_flattened_dict({flag: value})
    with pytest.raises(ConfigError, match=rf"--config.{flag}={value}: at most"):
        config_lib.validate(config)


def test_a_run_that_would_not_fit_the_memory_is_refused_with_the_estimate(monkeypatch, tmp_path):
    """The estimate (parameters, optimizer state, activations traced at the batch size) against
    the machine's memory, before anything is allocated: here a machine of 1 MiB."""
    monkeypatch.setattr(preflight, "machine_memory", lambda: 2**20)
    with pytest.raises(
        ConfigError, match=r"needs about [\d.]+ GiB .* more than this machine's 0.0 GiB"
    ):
        dcgan_jax.train(tiny_config(), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_an_export_path_that_cannot_be_written_is_refused_before_the_scoring(
    where, trained, tmp_path
):
    (tmp_path / "file").write_text("")
    export = tmp_path / "file" / "features.npz" if where == "under_a_file" else tmp_path
    workdir = f"--workdir={trained}"
    result = python("-m", "dcgan_jax.evaluation", workdir, f"--export_features={export}")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert (
        len(errors) == 1 and "--export_features" in errors[0] and "Traceback" not in result.stderr
    )


def test_a_log_record_the_full_disk_cannot_take_is_dropped_quietly(tmp_path, capfd):
    """Once train.log cannot be written (ENOSPC on every flush), each record is dropped without
    Python's "--- Logging error ---" traceback: a full disk is one error line, not a flood."""

    class FullDisk(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    with writers.logging_to(tmp_path):
        (run_log,) = [
            h for h in absl_logging.get_absl_logger().handlers if hasattr(h, "baseFilename")
        ]
        run_log.stream = FullDisk()
        for step in range(3):
            absl_logging.info("step %d", step)
    assert "Logging error" not in capfd.readouterr().err


@pytest.mark.parametrize("call", [1, 2, 3])
@pytest.mark.parametrize("read", ["item_metadata", "restore"])
def test_load_racing_a_run_that_prunes_goes_to_the_previous_checkpoint_at_every_read(
    read, call, trained, tmp_path, monkeypatch, capfd
):
    """Whichever of the library's reads the pruning run's rmtree lands in, load() re-lists and
    returns the previous checkpoint: no traceback, no damage reported."""
    shutil.copytree(trained, tmp_path / "run")
    newest = tmp_path / "run" / "checkpoints" / "6"
    original = getattr(ocp.CheckpointManager, read)
    calls = []

    def pruned_meanwhile(manager, step, *args, **kwargs):
        calls.append(step)
        if calls.count(6) == call and newest.exists():
            shutil.rmtree(newest)
            raise FileNotFoundError(f"{newest}: removed")
        return original(manager, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, read, pruned_meanwhile)
    assert dcgan_jax.load(tmp_path / "run").step == 3
    assert "Traceback" not in capfd.readouterr().err


def test_tfds_offline_fails_within_seconds_naming_the_variable_and_the_flag(monkeypatch):
    """TFDS retrying a download it cannot make (here: a call that would take a minute) against a
    host that cannot be reached: one DataError after the grace period, not minutes of retries."""
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(tfds, "data_source", lambda *args, **kwargs: time.sleep(60))
    monkeypatch.setattr(data, "_online", lambda: False)
    monkeypatch.setattr(data, "TFDS_GRACE_SECONDS", 0.2)
    started = time.monotonic()
    with pytest.raises(
        data.DataError, match=r"cannot be reached.*\n.*data_dir.*DCGAN_JAX_DATA_DIR"
    ):
        data.load_tfds("fashion_mnist", "train")
    assert time.monotonic() - started < 5


def test_a_stop_signal_ends_a_tfds_download_at_once(monkeypatch):
    """Online, TFDS may download for up to an hour; SIGTERM meanwhile stops the set-up at once
    (nothing was trained, nothing is lost), not after the download."""
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(tfds, "data_source", lambda *args, **kwargs: time.sleep(60))
    monkeypatch.setattr(data, "_online", lambda: True)
    monkeypatch.setattr(data, "TFDS_GRACE_SECONDS", 0.2)
    threading.Timer(1.0, os.kill, [os.getpid(), signal.SIGTERM]).start()
    started = time.monotonic()
    with control.stop_requests(), pytest.raises(control.Interrupted, match="SIGTERM received"):
        data.load_tfds("fashion_mnist", "train")
    assert time.monotonic() - started < 10


def test_a_command_that_fails_exits_at_once_whatever_threads_a_library_left(tmp_path):
    """The error line, then exit 2 without waiting for a library's worker threads (TFDS's
    downloads would hold the process for minutes)."""
    code = (
        "import concurrent.futures, time; from dcgan_jax.run import cli\n"
        "pool = concurrent.futures.ThreadPoolExecutor(1); pool.submit(time.sleep, 60)\n"
        "cli.fail('offline')"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50
    )
    assert result.returncode == 2 and result.stderr.strip() == "error: offline"
    assert time.monotonic() - started < 30


def test_a_metrics_line_cut_short_and_a_damaged_status_stop_neither_a_resume_nor_a_sweep(
    tmp_path, caplog
):
    """A crash or a full disk can leave metrics.jsonl's last line cut short (it is appended to);
    status.json damaged from outside stopped a sweep, and values of other types than the run writes
    (valid JSON) stopped its end or the sweep's table. Each is skipped or taken as absent, with a
    warning; the resumed run rewrites both whole."""
    run = tmp_path / "train.num_steps=6"
    dcgan_jax.train(tiny_config(num_steps=3), run)
    with (run / "metrics.jsonl").open("ab") as f:
        f.write(b'{"step": 4, "d_lo\n\xff\x00 not json\n[1, 2]\n{"step": 5, "d_loss": "x"}\n5\n')
    (run / "status.json").write_text("junk")
    with caplog.at_level("WARNING"):
        assert control.read_status(run) == {}
        (run / "status.json").write_text('{"step": "x", "wall_seconds": "y"}')
        assert control.read_status(run) == {}
        dcgan_jax.train(tiny_config(num_steps=6), run)
    assert "skipped 5 lines that are not metrics rows" in caplog.text
    assert "status.json is damaged (not the JSON object the run writes)" in caplog.text
    assert [r["step"] for r in writers.read_metrics(run / "metrics.jsonl")] == [2, 3, 4, 6]
    assert control.read_status(run)["finished"]
    (run / "status.json").write_text("[]")
    assert sweep.results(tmp_path)[0]["steps"] == 6 and (run / "curves.png").exists()
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "provenance.json").write_text('{"reference": 3}')
    with caplog.at_level("WARNING"):
        assert sweep.write_results(tmp_path)[0]["steps"] == 6
    assert "eval/provenance.json is damaged" in caplog.text
