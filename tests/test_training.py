import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import (
    REPO,
    restore_full_state,
    shared_dataset_dir,
    tiny_config,
    tiny_flags,
    trees_equal,
)
from tensorboardX.proto import event_pb2

import dcgan_jax
from dcgan_jax.gan import state as state_lib
from dcgan_jax.gan.state import GanState
from dcgan_jax.run import checkpoints, control, writers


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short synthetic run shared by the tests that only read its outputs."""
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config(top_k_min=0.3)  # Unread without train.top_k_decay: a warning says so.
    state = dcgan_jax.train(config, workdir)
    return workdir, state


def test_run_writes_config_samples_metrics_curves_and_checkpoints(trained_run):
    workdir, state = trained_run
    assert int(state.step) == 6
    assert json.loads((workdir / "config.json").read_text())["model"]["base_width"] == 8
    assert sorted(p.name for p in (workdir / "samples").iterdir()) == [
        "step_0000003.png",
        "step_0000006.png",
    ]
    rows = writers.read_metrics(workdir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6]
    for key in (
        "d_loss",
        "g_loss",
        "d_real_acc",
        "d_fake_acc",
        "d_real",
        "d_fake",
        "steps_per_sec",
        "images_per_sec",
    ):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert (workdir / "curves.png").stat().st_size > 1000
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert checkpoints.Checkpointer(workdir, create=False).all_steps() == [3, 6]
    log = (workdir / "train.log").read_text()
    assert "step 6/6" in log
    assert "WARNING train.top_k_min=0.3 changes nothing with train.top_k_decay=0.0" in log


def test_sample_grid_shows_the_fixed_latents(trained_run):
    workdir, _ = trained_run
    from PIL import Image

    grid = np.asarray(Image.open(workdir / "samples" / "step_0000006.png"))
    # 16 samples: a 4x4 grid of 28px tiles with 2px borders, scaled 2x.
    assert grid.shape == (2 * (4 * 30 + 2), 2 * (4 * 30 + 2))
    # The public call that remakes it, pixel for pixel.
    from dcgan_jax.tools import analysis

    remade = np.asarray(
        Image.open(analysis.training_grid(dcgan_jax.load(workdir), workdir / "remade.png"))
    )
    np.testing.assert_array_equal(remade, grid)


def test_load_returns_config_step_variables_and_samples(trained_run):
    workdir, state = trained_run
    run = dcgan_jax.load(workdir)
    assert run.step == 6 and run.config.model.base_width == 8
    assert trees_equal(run.variables["params"], state.g.params)
    assert trees_equal(run.variables["batch_stats"], state.g.batch_stats)
    samples = run.sample(10, seed=3)
    assert samples.shape == (10, 28, 28, 1) and samples.dtype == np.float32
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    np.testing.assert_array_equal(samples, run.sample(10, seed=3))
    assert not np.array_equal(samples, run.sample(10, seed=4))
    # Running-average BatchNorm: a sample does not depend on the rest of its batch.
    np.testing.assert_allclose(run.sample(1, seed=3), samples[:1], atol=1e-6)


def test_load_an_earlier_step_and_clear_errors(trained_run, tmp_path):
    workdir, _ = trained_run
    assert dcgan_jax.load(workdir, step=3).step == 3
    with pytest.raises(
        checkpoints.CheckpointError, match=r"no checkpoint for step 4 .*available steps: \[3, 6\]"
    ):
        dcgan_jax.load(workdir, step=4)
    with pytest.raises(checkpoints.CheckpointError, match=str(tmp_path / "nothing")):
        dcgan_jax.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoints.CheckpointError, match="no checkpoints folder"):
        dcgan_jax.load(tmp_path / "empty")
    # A run that never evaluated keeps no best checkpoint: said so, not only that a folder lacks.
    with pytest.raises(checkpoints.CheckpointError, match=r"keeps one only when it evaluates"):
        dcgan_jax.load(workdir, best=True)


def test_a_path_inside_a_run_or_a_folder_of_runs_is_answered_with_the_run(trained_run, tmp_path):
    """A step's folder, the checkpoints folder or a sweep's folder given for the run's."""
    workdir, _ = trained_run
    for inside in (workdir / "checkpoints" / "6", workdir / "checkpoints", workdir / "samples"):
        with pytest.raises(checkpoints.CheckpointError, match=f"inside the run folder {workdir};"):
            dcgan_jax.load(inside)
    (tmp_path / "seed=0").symlink_to(workdir)
    with pytest.raises(
        checkpoints.CheckpointError, match=r"a folder of runs \(1, e.g. seed=0\); name one"
    ):
        dcgan_jax.load(tmp_path)


def test_a_loaded_run_shows_its_step_not_its_arrays(trained_run):
    """A notebook cell ending in ``load(...)`` prints the repr: no config, no weights."""
    shown = repr(dcgan_jax.load(trained_run[0]))
    assert shown.startswith("TrainedGenerator(step=6, generator=Generator(") and len(shown) < 1000


def test_load_in_a_fresh_process_needs_only_the_workdir(trained_run):
    workdir, _ = trained_run
    code = (
        "import dcgan_jax, sys; run = dcgan_jax.load(sys.argv[1]); s = run.sample(3);"
        "print(run.step, s.shape, s.dtype, 'tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(workdir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert result.stdout.split() == ["6", "(3,", "28,", "28,", "1)", "float32", "False"], (
        result.stderr
    )


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    full = dcgan_jax.train(tiny_config(num_steps=6), tmp_path / "full")
    dcgan_jax.train(tiny_config(num_steps=3), tmp_path / "split")
    resumed = dcgan_jax.train(tiny_config(num_steps=6), tmp_path / "split")
    assert int(resumed.step) == int(full.step) == 6
    for field in ("g", "d", "g_ema", "step", "rng"):
        assert trees_equal(getattr(resumed, field), getattr(full, field)), field
    # Metrics were written once per step, not duplicated by the resume.
    assert [r["step"] for r in writers.read_metrics(tmp_path / "split" / "metrics.jsonl")] == [
        2,
        3,
        4,
        6,
    ]
    assert "Resumed from" in (tmp_path / "split" / "train.log").read_text()
    again = dcgan_jax.train(tiny_config(num_steps=6), tmp_path / "split")
    assert trees_equal(again, resumed)
    assert (
        "Nothing to do: the checkpoint is at step 6"
        in (tmp_path / "split" / "train.log").read_text()
    )


def _tensorboard_scalars(folder, tag):
    """[(step, value)] of ``tag`` as TensorBoard shows them: every event file's points in order, a
    session's START hiding the earlier sessions' points from its step on (its purge of orphaned
    data)."""
    shown = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        raw = path.read_bytes()
        while raw:  # TFRecords: length, its CRC, the event, its CRC.
            (length,) = struct.unpack("<Q", raw[:8])
            event = event_pb2.Event.FromString(raw[12 : 12 + length])
            raw = raw[16 + length :]
            if event.session_log.status == event.session_log.START:
                shown = [(step, value) for step, value in shown if step < event.step]
            shown += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return shown


def test_a_resume_from_an_earlier_checkpoint_shows_tensorboard_one_curve(tmp_path):
    """Steps 4 to 6 logged, then their checkpoint lost (a crash before it was written): the resume
    from step 3 redoes them. TensorBoard showed the abandoned and the redone points, interleaved."""
    dcgan_jax.train(tiny_config(num_steps=6, log_every=1), tmp_path)
    shutil.rmtree(checkpoints.checkpoint_dir(tmp_path) / "6")
    abandoned = [value for _, value in _tensorboard_scalars(tmp_path / "tensorboard", "d_loss")]
    config = tiny_config(num_steps=6, log_every=1)
    config.optimizer.learning_rate = 1e-3  # The redone steps differ from the abandoned ones.
    dcgan_jax.train(config, tmp_path)
    shown = _tensorboard_scalars(tmp_path / "tensorboard", "d_loss")
    rows = writers.read_metrics(tmp_path / "metrics.jsonl")
    assert [step for step, _ in shown] == [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert [value for _, value in shown] == pytest.approx([row["d_loss"] for row in rows])
    assert [value for _, value in shown][4:] != pytest.approx(abandoned[4:])


def test_several_steps_per_dispatch_train_like_one(trained_run, tmp_path):
    """Dispatches of up to 4 steps (scans of 2, then 1, 1 and 2 steps, ending at each log, sample
    and checkpoint) end where one step per dispatch (the shared run, on this CPU) ends, with the
    same samples and metrics written."""
    one_dir, one = trained_run
    four = dcgan_jax.train(tiny_config(steps_per_dispatch=4), tmp_path)
    assert int(four.step) == int(one.step) == 6
    for a, b in zip(
        jax.tree.leaves(jax.device_get(four)), jax.tree.leaves(jax.device_get(one)), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    metrics = [writers.read_metrics(workdir / "metrics.jsonl") for workdir in (one_dir, tmp_path)]
    assert [r["step"] for r in metrics[1]] == [r["step"] for r in metrics[0]] == [2, 4, 6]
    np.testing.assert_allclose(
        [r["d_loss"] for r in metrics[1]], [r["d_loss"] for r in metrics[0]], rtol=1e-4
    )
    for workdir in (one_dir, tmp_path):
        assert sorted(p.name for p in (workdir / "samples").glob("*.png")) == [
            "step_0000003.png",
            "step_0000006.png",
        ]
    assert "Compiled the train step (2 per dispatch)" in (tmp_path / "train.log").read_text()


def test_checkpoint_restores_identical_state(trained_run):
    workdir, state = trained_run
    checkpointer = checkpoints.Checkpointer(workdir, create=False)
    restored = checkpointer.restore(jax.tree.map(np.zeros_like, state))
    assert isinstance(restored, GanState)
    assert trees_equal(restored, state)


def test_a_checkpoint_of_another_layout_is_refused_in_one_line_naming_what_it_lacks(
    trained_run, tmp_path
):
    """A flat state (g_params, d_opt_state, ..., as no released version wrote) is neither restored
    nor taken for damage: train() and load() refuse it, naming the run folder and the arrays it
    lacks."""
    workdir, state = trained_run
    old = checkpoints.Checkpointer(tmp_path, create=True)
    host = jax.device_get(state)
    fields = {"g_params": host.g.params, "d_params": host.d.params, "step": host.step}
    old.manager.save(
        int(state.step),
        args=ocp.args.Composite(
            state=ocp.args.PyTreeSave(fields),
            config=ocp.args.JsonSave(json.loads((workdir / "config.json").read_text())),
            meta=ocp.args.JsonSave({"image_shape": [28, 28, 1], checkpoints.HASHES_KEY: {}}),
        ),
    )
    old.wait()
    for attempt in (
        lambda: dcgan_jax.load(tmp_path),
        lambda: dcgan_jax.train(tiny_config(num_steps=4), tmp_path),
    ):
        with pytest.raises(checkpoints.CheckpointMismatchError) as error:
            attempt()
        message = str(error.value)
        assert (
            str(tmp_path) in message
            and "another layout" in message
            and re.search(r"lacks (d, )?g\b", message)
        )
        assert "\n" not in message


def test_time_limit_stops_with_a_checkpoint(tmp_path):
    """The clock is read between dispatches: the run stops after its first one (2 steps, up to
    the first log) with a checkpoint there."""
    state = dcgan_jax.train(
        tiny_config(num_steps=100_000, max_seconds=1e-3, steps_per_dispatch=5), tmp_path
    )
    assert int(state.step) == 2
    assert checkpoints.Checkpointer(tmp_path, create=False).all_steps() == [2]


def test_log_line_eta_follows_the_time_limit_when_it_comes_first():
    scalars = {
        "d_loss": 0.5,
        "g_loss": 2.0,
        "d_real_acc": 0.9,
        "d_fake_acc": 0.8,
        "d_real": 0.7,
        "d_fake": 0.3,
        "steps_per_sec": 4.0,
        "images_per_sec": 256.0,
    }
    by_steps = writers.format_log_line(100, 2500, scalars)
    # 2400 steps at 4/s.
    assert "4.00 steps/s 256 img/s" in by_steps and by_steps.endswith("ETA 10m00s")
    assert writers.format_log_line(100, 10**8, scalars, seconds_left=290.5).endswith(
        "ETA 4m50s (time limit)"
    )
    assert writers.format_log_line(100, 2500, scalars, seconds_left=3600).endswith("ETA 10m00s")


@pytest.mark.parametrize("moment", ["during_a_save", "at_random"])
def test_killed_run_resumes_to_the_same_parameters_as_an_unbroken_one(tmp_path, moment):
    """SIGKILL inside a checkpoint save (its temporary folder exists), or at some moment while saves
    are in flight (one every step); the same command then resumes from the newest complete
    checkpoint and ends exactly where an unbroken run ends."""
    workdir = tmp_path / "run"
    overrides = dict(num_steps=20, checkpoint_every=1, keep_checkpoints=2, log_every=1)
    args = [
        sys.executable,
        str(REPO / "launch.py"),
        "--experiment=fashion_dcgan",
        f"--workdir={workdir}",
        *tiny_flags(**overrides),
    ]
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    ckpt_dir = checkpoints.checkpoint_dir(workdir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(ckpt_dir.glob("[0-9]"))) < 2:
        time.sleep(0.02)
    if moment == "during_a_save":
        while time.monotonic() < deadline and not list(ckpt_dir.glob("*.orbax-checkpoint-tmp*")):
            time.sleep(0.0005)
    else:
        time.sleep(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    if moment == "during_a_save":
        assert list(ckpt_dir.glob("*.orbax-checkpoint-tmp*")), (
            "the save finished before the kill landed"
        )
    assert (workdir / ".lock").exists()  # Stale: must not block the restart below.
    steps = checkpoints.Checkpointer(workdir, create=False).all_steps()
    assert steps and steps[-1] < 20, f"killed too late or no complete checkpoint: {steps}"
    run = dcgan_jax.load(workdir)
    assert run.step == steps[-1] and np.isfinite(run.sample(2)).all()

    resumed = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resumed from {ckpt_dir} at step {steps[-1]}" in resumed.stderr
    unbroken = dcgan_jax.train(tiny_config(**overrides), tmp_path / "unbroken")
    assert trees_equal(restore_full_state(workdir, tiny_config(**overrides)), unbroken)


def test_short_run_on_real_fashion_mnist(tmp_path):
    folder = shared_dataset_dir("fashion_mnist")
    config = tiny_config(num_steps=4)
    config.dataset.name = "fashion_mnist"
    config.dataset.data_dir = str(folder)
    state = dcgan_jax.train(config, tmp_path)
    assert int(state.step) == 4
    log = (tmp_path / "train.log").read_text()
    assert "fashion_mnist/train, 60000 images of shape (28, 28, 1)" in log
    assert all(np.isfinite(r["d_loss"]) for r in writers.read_metrics(tmp_path / "metrics.jsonl"))


def test_mnist_experiment_on_its_local_test_split(tmp_path):
    shared_dataset_dir("mnist")
    from dcgan_jax.run.cli import load_experiment

    config = load_experiment("mnist_dcgan", REPO / "experiments")
    config.dataset.split = "test"
    config.model.update(tiny_config().model)  # The tests' tiny model: its programs are cached.
    config.train.update(batch_size=16, num_steps=2, log_every=1)
    config.eval.every = 0  # Scored in test_evaluation.py.
    state = dcgan_jax.train(config, tmp_path)
    assert int(state.step) == 2
    assert "mnist/test, 10000 images" in (tmp_path / "train.log").read_text()


def _damage(checkpoint: Path, how: str) -> None:
    """Truncates or deletes the array data files of one checkpoint's state."""
    for path in sorted(Path(checkpoint, "state").rglob("*")):
        if path.is_file() and path.parent.name == "d":
            if how == "truncate":
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            else:
                path.unlink()


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_good_one(trained_run, tmp_path, how):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run[0], workdir)
    ckpt_dir = checkpoints.checkpoint_dir(workdir)
    _damage(ckpt_dir / "6", how)
    # A reader skips it and leaves the run folder as it is.
    assert dcgan_jax.load(workdir).step == 3
    assert (ckpt_dir / "6").is_dir()
    with pytest.raises(checkpoints.CheckpointError, match=str(ckpt_dir / "6")):
        dcgan_jax.load(workdir, step=6)
    # The run resumes from step 3, sets step 6 aside, and still ends where an unbroken run ends.
    resumed = dcgan_jax.train(tiny_config(num_steps=8), workdir)
    assert (ckpt_dir / "6.damaged").is_dir()
    log = (workdir / "train.log").read_text()
    assert f"Using checkpoint {ckpt_dir / '3'}; damaged newer ones renamed to 6.damaged" in log
    unbroken = dcgan_jax.train(tiny_config(num_steps=8), tmp_path / "unbroken")
    assert trees_equal(resumed, unbroken)


def test_all_checkpoints_damaged_is_a_clear_error(trained_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run[0], workdir)
    for step in (3, 6):
        _damage(checkpoints.checkpoint_dir(workdir) / str(step), "delete")
    message = r"no restorable checkpoint in .*checkpoints: steps \[3, 6\] are all damaged"
    with pytest.raises(checkpoints.CheckpointError, match=message):
        dcgan_jax.load(workdir)
    with pytest.raises(checkpoints.CheckpointError, match=message):
        dcgan_jax.train(tiny_config(num_steps=8), workdir)


def test_checkpoint_of_another_model_shape_names_the_differences(trained_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run[0], workdir)
    wider = tiny_config(num_steps=8)
    wider.model.base_width = 16
    with pytest.raises(checkpoints.CheckpointMismatchError) as error:
        dcgan_jax.train(wider, workdir)
    message = str(error.value)
    assert "holds a model of other shapes than this run's config" in message
    assert "d/params/down0/kernel: checkpoint (4, 4, 1, 8), this run (4, 4, 1, 16)" in message
    assert "model.base_width: 8 -> 16" in message


def _adam_that_diverges_above(threshold: float):
    """make_optimizer's Adam, except that from its 4th update on, while the learning rate is above
    ``threshold``, its updates are NaN: a run that diverges at that learning rate and not below."""
    import jax.numpy as jnp
    import optax

    def make_optimizer(optimizer_config, learning_rate):
        def adam(learning_rate):
            inner = optax.adam(learning_rate, b1=optimizer_config.beta1, b2=optimizer_config.beta2)

            def update(updates, state, params=None):
                updates, state = inner.update(updates, state, params)
                blow_up = (state[0].count >= 4) & (learning_rate > threshold)
                return jax.tree.map(lambda u: jnp.where(blow_up, jnp.nan, u), updates), state

            return optax.GradientTransformation(inner.init, update)

        return optax.inject_hyperparams(adam)(learning_rate=learning_rate)

    return make_optimizer


def test_divergence_stops_with_step_network_and_metric_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(state_lib, "make_optimizer", _adam_that_diverges_above(1e-4))
    config = tiny_config(num_steps=8, log_every=1, checkpoint_every=3)
    with pytest.raises(control.TrainingDiverged) as error:
        dcgan_jax.train(config, tmp_path)
    message = str(error.value)
    ckpt_dir = checkpoints.checkpoint_dir(tmp_path)
    # D's 4th update made its parameters NaN, then G's loss through that D and G's update.
    assert (
        "training diverged at step 4: non-finite g_loss=nan (generator); generator parameters; "
        "discriminator parameters" in message
    )
    assert f"The newest checkpoint, {ckpt_dir / '3'}, is the last good state" in message
    assert "--config.train.on_divergence=restore" in message
    assert checkpoints.Checkpointer(tmp_path, create=False).all_steps() == [3]
    assert np.isfinite(dcgan_jax.load(tmp_path).sample(4)).all()


def test_divergence_restores_the_last_good_checkpoint_with_a_lower_learning_rate(
    tmp_path, monkeypatch
):

    monkeypatch.setattr(state_lib, "make_optimizer", _adam_that_diverges_above(1e-4))
    config = tiny_config(num_steps=8, log_every=1, checkpoint_every=3)
    config.train.update(on_divergence="restore", divergence_lr_factor=0.25)
    state = dcgan_jax.train(config, tmp_path)
    assert int(state.step) == 8
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state))
    log = (tmp_path / "train.log").read_text()
    assert "Diverged at step 4: non-finite g_loss=nan (generator)" in log
    taken = (
        f"Going on from step 3 (checkpoint {checkpoints.checkpoint_dir(tmp_path) / '3'}) with "
        "learning rates"
    )
    assert f"{taken} G 5e-05, D 5e-05 (restore 1 of 3)" in log
    # The lowered rate is part of the state: a resumed run keeps it.
    assert float(restore_full_state(tmp_path, config).g.learning_rate) == pytest.approx(5e-5)
    # One metrics row per step: the rows of the abandoned steps 4 and beyond were replaced.
    assert [r["step"] for r in writers.read_metrics(tmp_path / "metrics.jsonl")] == list(
        range(1, 9)
    )


def test_training_from_python_shows_its_progress_but_not_orbaxs_and_restores_the_verbosity(
    tmp_path, caplog
):
    """A script's or notebook's own handlers (Python's basic one, which absl installs) showed every
    Orbax INFO line, some 40 a checkpoint; and ``train`` left the verbosity at INFO, so a
    ``load`` after it logged Orbax's reads."""
    from absl import logging

    before = logging.get_verbosity()
    with caplog.at_level("INFO"):
        dcgan_jax.train(tiny_config(num_steps=2), tmp_path / "run")
    absl_info = [r for r in caplog.records if r.name == "absl" and r.levelname == "INFO"]
    paths = {Path(r.pathname).parts[-3] for r in absl_info}
    assert "Training from step 0 to 2." in caplog.messages and paths <= {"dcgan_jax", "gan", "run"}
    assert logging.get_verbosity() == before


def test_a_package_installed_in_site_packages_keeps_its_own_log_lines(monkeypatch):
    """Installed without -e, dcgan_jax's own INFO lines were dropped with the libraries' (the
    filter left out anything under site-packages): the console and train.log showed nothing."""
    import logging as std_logging

    monkeypatch.setattr(writers.OwnInfoFilter, "_OWN", "/venv/site-packages/dcgan_jax/")

    def record(path):
        return std_logging.LogRecord("absl", std_logging.INFO, path, 1, "a line", None, None)

    own = writers.OwnInfoFilter()
    assert own.filter(record("/venv/site-packages/dcgan_jax/run/train.py"))
    assert not own.filter(record("/venv/site-packages/orbax/checkpoint/manager.py"))
