"""The training loop: data, model, compiled step, logging, samples and checkpoints.

Rerunning in the same workdir resumes from the newest checkpoint. Because the
batch order and the step's random keys are functions of (seed, step), a resumed
run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import json
import logging as std_logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from dcgan_jax import checkpoints, data, evaluation, images, models, parallel, run_lock, writers
from dcgan_jax import config as config_lib
from dcgan_jax.train_step import (
    TrainState,
    compile_lowered,
    compile_train_steps,
    components,
    eval_labels,
    eval_latents,
    fixed_latents,
    grid_labels,
    init_state,
    learning_rates,
    make_train_step,
    make_train_steps,
    nonfinite_networks,
    put_dataset,
    with_learning_rates,
)


def _log_to_file(workdir: Path) -> std_logging.Handler:
    handler = std_logging.FileHandler(workdir / "train.log")
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    writers.quiet_library_info(handler)
    logging.get_absl_logger().addHandler(handler)
    return handler


def _config_changes(stored: ml_collections.ConfigDict, current: ml_collections.ConfigDict) -> str:
    old, new = config_lib.flatten(stored), config_lib.flatten(current)
    return ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in sorted(new.items()) if old.get(k) != v)


class TrainingDiverged(RuntimeError):
    """Non-finite losses or parameters; the message names the step, networks and metrics, and what was kept."""


class _Diverged(Exception):
    def __init__(self, step: int, problems: list[str], rates: dict[str, float]):
        super().__init__(f"step {step}: non-finite {'; '.join(problems)}")
        self.step, self.problems, self.learning_rates = step, problems, rates


def _network(metric: str) -> str:
    return {"d": "discriminator", "g": "generator"}.get(metric.split("_")[0], "model")


@contextlib.contextmanager
def _stop_requests():
    """Turns SIGTERM (schedulers, ``kill``) and SIGINT (Ctrl-C) into a request the loop honours at
    the end of a step, so that it can write a final checkpoint. Yields the list of signal names
    received (empty off the main thread, where Python cannot install handlers)."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def request_stop(signum, frame):
        received.append(signal.Signals(signum).name)
        logging.warning("%s received: stopping with a final checkpoint.", received[-1])

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _agreed_stop(signals: list[str], out_of_time: bool) -> tuple[str | None, bool]:
    """(signal, out of time) as every process sees it: one process's signal or clock stops them all
    at the same step; a process stopping alone would leave the others waiting in a collective."""
    if jax.process_count() == 1:
        return (signals[0] if signals else None), out_of_time
    local = np.array([signal.Signals[signals[0]].value if signals else 0, out_of_time], np.int32)
    everyone = np.asarray(multihost_utils.process_allgather(local))
    received = [(process, int(sig)) for process, (sig, _) in enumerate(everyone) if sig]
    name = f"{signal.Signals(received[0][1]).name} (to process {received[0][0]})" if received else None
    return name, bool(everyone[:, 1].any())


class _Trainer:
    """What a run builds once (data, models, compiled step, writers, checkpoints) and its loop."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, is_main: bool):
        self.config, self.workdir, self.is_main = config, workdir, is_main
        self.mesh = parallel.make_mesh()
        parallel.check_batch_size(config.train.batch_size, self.mesh)
        self.train_images, train_labels = data.load_dataset(config.dataset, config.seed)
        self.image_shape = tuple(int(d) for d in self.train_images.shape[1:])
        try:
            models.num_resolution_steps(self.image_shape[0])
        except ValueError as e:
            raise config_lib.ConfigError(f"dataset {config.dataset.name}: {e}") from e
        num_classes = config.model.num_classes
        if num_classes and int(train_labels.max()) >= num_classes:
            raise config_lib.ConfigError(
                f"--config.model.num_classes={num_classes}: {config.dataset.name} has labels up to "
                f"{int(train_labels.max())}; use --config.model.num_classes={int(train_labels.max()) + 1}"
            )
        self.generator, self.discriminator, self.optimizers, self.game = components(config, self.image_shape)
        self.checkpointer = checkpoints.Checkpointer(workdir, keep=config.train.keep_checkpoints)
        self.batches = data.BatchOrder(self.train_images, config.train.batch_size, config.seed, train_labels)
        # The whole training set lives on the devices; each dispatch sends only the batches' indices.
        self.dataset = put_dataset(self.train_images, self.batches.labels, self.mesh)
        self.sample = models.make_sampler(self.generator)
        self.nonfinite = jax.jit(nonfinite_networks)
        replicated = parallel.replicated(self.mesh)
        # The grids' latents and (conditional) labels: one row per class.
        self.grid_columns, self.grid_labels = None, None
        num_grid = config.train.num_samples
        if num_classes:
            self.grid_columns, labels = grid_labels(num_grid, num_classes)
            self.grid_labels, num_grid = jax.device_put(labels, replicated), len(labels)
        self.latents = jax.device_put(
            np.asarray(fixed_latents(config.seed, num_grid, config.model.latent_dim)), replicated
        )
        self.writer: writers.MetricsWriter | None = None
        self.step_fn = make_train_step(self.generator, self.discriminator, self.optimizers, self.game)
        self.train_steps: dict[int, Callable] = {}  # Compiled, by steps per dispatch.
        self.evaluator, self.best, self.best_fid = None, None, float("inf")
        if config.eval.every:
            self.evaluator = evaluation.Evaluator(config.dataset.name, config.eval.split, config.dataset.data_dir)
            self.eval_latents = eval_latents(config.seed, config.eval.num_samples, config.model.latent_dim)
            self.eval_labels = eval_labels(config.eval.num_samples, num_classes) if num_classes else None
            self.best = checkpoints.Checkpointer(workdir, keep=1, subdir=checkpoints.BEST_SUBDIR)
            if self.best.all_steps():
                self.best_fid = self.best.restore_config()[2].get("fid", float("inf"))

    def log_setup(self) -> None:
        mesh, config = self.mesh, self.config
        logging.info(
            "Data: %s/%s, %d images of shape %s. Devices: %d (%s), %d images each per step (global batch %d); "
            "process %d of %d.",
            config.dataset.name, config.dataset.split, len(self.train_images), self.image_shape, mesh.size,
            jax.devices()[0].platform, config.train.batch_size // mesh.size, config.train.batch_size,
            jax.process_index(), jax.process_count(),
        )  # fmt: skip
        if config.dataset.name not in config_lib.EVAL_DATASETS:
            logging.info(
                "No built-in evaluation for %s: FID/KID/precision-recall here use classifiers trained on the 28x28 "
                "grey datasets, and FID with Inception features needs weights this package does not download. "
                "Judge the sample grids, or score samples from dcgan_jax.load(...).sample() with your own tools.",
                config.dataset.name,
            )

    def initial_state(self) -> TrainState:
        config = self.config
        # Created inside jit so that it is born replicated over the whole mesh, every process included.
        return jax.jit(
            lambda: init_state(
                self.generator, self.discriminator, self.optimizers, config.seed, self.image_shape,
                config.model.latent_dim, ema=config.train.ema_decay > 0,
            ),
            out_shardings=parallel.replicated(self.mesh),
        )()  # fmt: skip

    def restore_or_init(self) -> TrainState:
        """The newest good checkpoint; a model-shape mismatch also names the config fields that changed."""
        state = self.initial_state()
        if not self.checkpointer.all_steps():
            return state
        try:
            state = self.checkpointer.restore(state, set_aside_damaged=True)
        except checkpoints.CheckpointMismatchError as e:
            _, stored_config, _ = self.checkpointer.restore_config()
            raise checkpoints.CheckpointMismatchError(
                f"{e} Changed fields: {_config_changes(stored_config, self.config)}"
            ) from e
        step = int(parallel.to_host(state.step))
        _, stored_config, _ = self.checkpointer.restore_config(step)
        if changes := _config_changes(stored_config, self.config):
            logging.warning("Resuming with a config that differs from the checkpoint's: %s", changes)
        logging.info("Resumed from %s at step %d.", self.checkpointer.directory, step)
        return state

    def start_writing(self, step: int) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = writers.MetricsWriter(self.workdir, resume_step=step, enabled=self.is_main)

    def dispatch_indices(self, step: int, num_steps: int) -> jax.Array:
        """The dataset rows of steps ``step .. step + num_steps - 1``, each step's ``d_steps``
        batches: (num_steps, d_steps, batch). Every process computes the same global indices."""
        indices = self.batches.step_indices(step, num_steps, self.config.train.d_steps)
        return parallel.global_array(indices, parallel.replicated(self.mesh), indices.shape)

    def steps_to_next_event(self, step: int) -> int:
        """Steps in the next dispatch: at most ``train.steps_per_dispatch``, ending at the next log,
        sample, checkpoint or evaluation step or at ``train.num_steps``."""
        cfg = self.config.train
        intervals = [cfg.log_every, cfg.sample_every, cfg.checkpoint_every]
        if self.evaluator is not None:
            intervals.append(self.config.eval.every)
        return min([cfg.steps_per_dispatch, cfg.num_steps - step] + [k - step % k for k in intervals])

    def dispatch(self, state: TrainState, step: int, num_steps: int) -> tuple[TrainState, dict, float]:
        """Runs steps ``step .. step + num_steps - 1``: (state, stacked metrics, seconds spent compiling).
        Compiles the first dispatch of each length (a shorter one only where an event falls between
        multiples of ``steps_per_dispatch``)."""
        indices = self.dispatch_indices(step, num_steps)
        compile_start = time.monotonic()
        if num_steps not in self.train_steps:
            steps_fn = make_train_steps(self.step_fn, self.mesh, num_steps)
            compiled = compile_lowered(compile_train_steps(steps_fn, self.mesh).lower(state, self.dataset, indices))
            self.train_steps[num_steps] = compiled
            logging.info("Compiled the train step (%d per dispatch) in %.1f s.", num_steps,
                         time.monotonic() - compile_start)  # fmt: skip
        compile_s = time.monotonic() - compile_start
        return (*self.train_steps[num_steps](state, self.dataset, indices), compile_s)

    def save_samples(self, state: TrainState, step: int) -> None:
        """The grid of fixed latents (with the EMA generator when kept; one row per class when conditional)."""
        grid_images = parallel.to_host(self.sample(state.generator_variables(ema=True), self.latents, self.grid_labels))
        if self.is_main:
            path = images.save_grid(
                grid_images, self.workdir / "samples" / f"step_{step:07d}.png", columns=self.grid_columns
            )
            self.writer.write_image(step, "samples", images.make_grid(grid_images, columns=self.grid_columns))
            logging.info("Wrote %s", path)

    def evaluate(self, state: TrainState, step: int) -> None:
        """Scores ``eval.num_samples`` samples of fixed latents; a new lowest FID replaces best_checkpoint/."""
        started = time.monotonic()
        replicated = parallel.replicated(self.mesh)
        variables = state.generator_variables(ema=True)
        chunks = []
        for i in range(0, self.config.eval.num_samples, 1000):
            z = jax.device_put(self.eval_latents[i : i + 1000], replicated)
            labels = None if self.eval_labels is None else jax.device_put(self.eval_labels[i : i + 1000], replicated)
            chunks.append(parallel.to_host(self.sample(variables, z, labels)))
        scores = self.evaluator(np.concatenate(chunks), labels=self.eval_labels)
        self.writer.write_scalars(step, evaluation.scalar_metrics(scores))
        logging.info(
            "eval step %d: FID %.3f | KID %.4f +- %.4f | precision %.3f recall %.3f | IS %.2f | "
            "classes covered %d/10 (KL %.3f) | %.1f s",
            step, scores["fid"], scores["kid"], scores["kid_std"], scores["precision"], scores["recall"],
            scores["inception_score"], scores["classes_covered"], scores["class_kl"], time.monotonic() - started,
        )  # fmt: skip
        if "class_agreement" in scores:
            logging.info("eval step %d: the classifier agrees with the requested class for %.1f%% of samples (%s)",
                         step, 100 * scores["class_agreement"],
                         " ".join(f"{a:.2f}" for a in scores["class_agreement_per_class"]))  # fmt: skip
        if scores["fid"] < self.best_fid:
            self.best_fid = scores["fid"]
            self.check_finite(state, step)
            self.best.save(state, self.config, {"image_shape": list(self.image_shape), "fid": scores["fid"]})
            logging.info("New best FID %.3f: %s", scores["fid"], self.best.directory / str(step))

    def check_finite(self, state: TrainState, step: int, stacked: dict[str, np.ndarray] | None = None) -> None:
        """Raises _Diverged, naming the first bad step and what went bad, for non-finite metrics (of the
        steps since ``step - len(stacked)``) or parameters."""
        problems, first_bad = [], step
        if stacked:
            bad_rows = ~np.all([np.isfinite(v) for v in stacked.values()], axis=0)
            if bad_rows.any():
                row = int(np.argmax(bad_rows))
                first_bad = step - len(bad_rows) + row + 1
                problems += [
                    f"{name}={values[row]} ({_network(name)})"
                    for name, values in stacked.items()
                    if not np.isfinite(values[row])
                ]
        bad_networks = parallel.to_host(self.nonfinite(state))
        problems += [
            f"{name} parameters" for name, bad in zip(("generator", "discriminator"), bad_networks, strict=True) if bad
        ]
        if problems:
            raise _Diverged(first_bad, problems, learning_rates(state))

    def save_checkpoint(self, state: TrainState, step: int) -> None:
        self.check_finite(state, step)  # Never save a diverged state over the last good one.
        self.checkpointer.save(state, self.config, {"image_shape": list(self.image_shape)})
        logging.info("Saving checkpoint %s (in the background).", self.checkpointer.directory / str(step))

    def run(self, state: TrainState, started: float) -> tuple[TrainState, int, str | None]:
        """Trains from ``state`` until ``train.num_steps``, the time limit or a stop signal; raises
        _Diverged at the first log or save that sees non-finite values. Returns (state, step, the
        signal that stopped it or None)."""
        cfg = self.config.train
        step = int(parallel.to_host(state.step))
        self.start_writing(step)
        logging.info("Training from step %d to %d.", step, cfg.num_steps)
        pending: list[tuple[dict, int]] = []  # (stacked metrics of a dispatch, steps it ran)
        interval_start, interval_step = time.monotonic(), step
        single_process = jax.process_count() == 1
        stopped_by = None
        with _stop_requests() as stop_signals:
            while step < cfg.num_steps:
                num_steps = self.steps_to_next_event(step)
                state, metrics, compile_s = self.dispatch(state, step, num_steps)
                interval_start += compile_s  # Not counted in steps/s.
                for value in jax.tree.leaves(metrics):
                    value.copy_to_host_async()  # Ready by the next log line, which then waits on nothing else.
                pending.append((metrics, num_steps))
                step += num_steps
                at_log = step % cfg.log_every == 0
                stopped_by, out_of_time = None, False
                if single_process or at_log:  # Several processes agree on stopping only at logs.
                    out_of_time = cfg.max_seconds > 0 and time.monotonic() - started >= cfg.max_seconds
                    stopped_by, out_of_time = _agreed_stop(stop_signals, out_of_time)
                last = step == cfg.num_steps or out_of_time or stopped_by is not None
                if at_log or last:
                    # The only wait on the device between logs: the interval's metrics, fetched at once.
                    fetched = [(parallel.to_host(metrics), n) for metrics, n in pending]
                    stacked = {
                        name: np.concatenate([metrics[name][:n] for metrics, n in fetched]) for name in fetched[0][0]
                    }
                    self.check_finite(state, step, stacked)
                    rate = (step - interval_step) / (time.monotonic() - interval_start)
                    means = {name: float(np.mean(values)) for name, values in stacked.items()}
                    means.update(steps_per_sec=rate, images_per_sec=rate * cfg.batch_size)
                    seconds_left = cfg.max_seconds - (time.monotonic() - started) if cfg.max_seconds > 0 else None
                    logging.info(writers.format_log_line(step, cfg.num_steps, means, seconds_left))
                    self.writer.write_scalars(step, means)
                    pending, interval_start, interval_step = [], time.monotonic(), step
                # Also at the end of a run, but not when a signal asks it to stop quickly.
                at_eval = self.evaluator is not None and (step % self.config.eval.every == 0 or last)
                if at_eval and not stopped_by:
                    eval_started = time.monotonic()
                    self.evaluate(state, step)
                    interval_start += time.monotonic() - eval_started  # Not counted in steps/s.
                if step % cfg.sample_every == 0 or last:
                    self.save_samples(state, step)
                if step % cfg.checkpoint_every == 0 or last:
                    self.save_checkpoint(state, step)
                if out_of_time:
                    logging.info("Stopping at step %d: train.max_seconds=%s reached.", step, cfg.max_seconds)
                    break
                if stopped_by:
                    logging.info("Stopped by %s at step %d; writing the final checkpoint.", stopped_by, step)
                    break
        return state, step, stopped_by

    def recover(self, diverged: _Diverged, restores_done: int) -> TrainState:
        """The last good state with lower learning rates, or TrainingDiverged when the config says stop."""
        cfg = self.config.train
        self.checkpointer.wait()
        steps = self.checkpointer.all_steps()
        kept = (
            f"The newest checkpoint, {self.checkpointer.directory / str(steps[-1])}, is the last good state."
            if steps
            else "No checkpoint had been written yet."
        )
        if cfg.on_divergence == "stop" or restores_done >= cfg.max_divergence_restores:
            why = (
                "" if cfg.on_divergence == "stop"
                else f" after {restores_done} restores (train.max_divergence_restores={cfg.max_divergence_restores})"
            )  # fmt: skip
            raise TrainingDiverged(
                f"training diverged at {diverged}{why}. {kept} Lower --config.optimizer.learning_rate, or set "
                "--config.train.on_divergence=restore to go on from the last good checkpoint with lower "
                "learning rates."
            )
        state = self.restore_or_init() if steps else self.initial_state()
        # Lower than both the checkpoint's rates and those that diverged (a checkpoint may predate an
        # earlier restore of this run).
        stored = learning_rates(state)
        rates = {k: min(v, diverged.learning_rates[k]) * cfg.divergence_lr_factor for k, v in stored.items()}
        state = with_learning_rates(state, rates["g_learning_rate"], rates["d_learning_rate"])
        state = jax.device_put(state, parallel.replicated(self.mesh))
        logging.warning(
            "Diverged at %s. %s Going on from step %d with learning rates G %.3g, D %.3g (restore %d of %d).",
            diverged, kept, int(parallel.to_host(state.step)), rates["g_learning_rate"], rates["d_learning_rate"],
            restores_done + 1, cfg.max_divergence_restores,
        )  # fmt: skip
        return state

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.checkpointer.close()
        if self.best is not None:
            self.best.close()


STATUS_FILE = "status.json"


def _write_status(workdir: Path, config, step: int, stopped_by: str | None, seconds: float) -> None:
    """``status.json``: where the run stopped and why, and its wall time over all its sessions (what a
    sweep reads to skip finished runs and to tabulate)."""
    path = workdir / STATUS_FILE
    earlier = json.loads(path.read_text()).get("wall_seconds", 0.0) if path.exists() else 0.0
    status = {
        "step": step,
        "num_steps": config.train.num_steps,
        # A run stopped by its time budget is finished too: rerunning it would only spend another budget.
        "finished": step >= config.train.num_steps or stopped_by is None,
        "stopped_by": stopped_by,
        "wall_seconds": earlier + seconds,
    }
    path.write_text(json.dumps(status, indent=2) + "\n")


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
    """Trains (or resumes) the run in ``workdir`` and returns its final state."""
    started = time.monotonic()
    config_lib.validate(config)
    config = config_lib.resolved(config)
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    workdir.mkdir(parents=True, exist_ok=True)
    if not is_main:  # Process 0 speaks for the run; the others report only problems.
        logging.set_verbosity(logging.WARNING)
    elif not logging.level_info():  # Called from Python rather than launch.py: still show progress.
        logging.set_verbosity(logging.INFO)
    file_handler = _log_to_file(workdir) if is_main else None
    try:
        # Process 0 holds the lock for a multi-process run; the others share its workdir.
        with run_lock.hold(workdir) if is_main else contextlib.nullcontext():
            return _train(config, workdir, started, is_main)
    except OSError as e:  # Logs, metrics or sample grids on a full disk.
        if checkpoints.out_of_space(e):
            raise checkpoints.DiskFullError(
                f"disk full while writing to {workdir}: {e}. Checkpoints already written are complete; free some "
                "space and rerun the same command to resume from the newest."
            ) from e
        raise
    finally:
        if file_handler is not None:
            logging.get_absl_logger().removeHandler(file_handler)
            file_handler.close()


def _train(config: ml_collections.ConfigDict, workdir: Path, started: float, is_main: bool) -> TrainState:
    trainer = _Trainer(config, workdir, is_main)
    trainer.log_setup()
    try:
        state = trainer.restore_or_init()
        start_step = int(parallel.to_host(state.step))
        if start_step >= config.train.num_steps:
            logging.info(
                "Nothing to do: the checkpoint is at step %d of train.num_steps=%d.", start_step, config.train.num_steps
            )
            return state
        if is_main:
            resolved = json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True)
            (workdir / "config.json").write_text(resolved + "\n")
            logging.info("Config:\n%s", config)
        restores_done = 0
        while True:
            try:
                state, step, stopped_by = trainer.run(state, started)
                break
            except _Diverged as diverged:
                state = trainer.recover(diverged, restores_done)
                restores_done += 1
        trainer.checkpointer.wait()
        if trainer.best is not None:
            trainer.best.wait()
        trainer.writer.close()
        if is_main:
            _write_status(workdir, config, step, stopped_by, time.monotonic() - started)
            curves = images.plot_curves(trainer.writer.metrics_path, workdir / "curves.png")
            logging.info(
                "Done at step %d in %.0f s. Checkpoints: %s; curves: %s",
                step, time.monotonic() - started, trainer.checkpointer.directory, curves,
            )  # fmt: skip
        return state
    finally:
        trainer.close()
