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
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from dcgan_jax import checkpoints, data, images, models, parallel, run_lock, writers
from dcgan_jax import config as config_lib
from dcgan_jax.train_step import (
    TrainState,
    compile_train_step,
    fixed_latents,
    init_state,
    make_optimizer,
    make_train_step,
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


def _restore(checkpointer: checkpoints.Checkpointer, state: TrainState, config) -> TrainState:
    """The newest good checkpoint; a model-shape mismatch also names the config fields that changed."""
    try:
        state = checkpointer.restore(state, set_aside_damaged=True)
    except checkpoints.CheckpointMismatchError as e:
        _, stored_config, _ = checkpointer.restore_config()
        changes = _config_changes(stored_config, config)
        raise checkpoints.CheckpointMismatchError(f"{e} Changed fields: {changes}") from e
    _, stored_config, _ = checkpointer.restore_config(int(parallel.to_host(state.step)))
    if changes := _config_changes(stored_config, config):
        logging.warning("Resuming with a config that differs from the checkpoint's: %s", changes)
    return state


@contextlib.contextmanager
def _stop_requests():
    """Turns SIGTERM (schedulers, ``kill``) and SIGINT (Ctrl-C) into a request the loop honours at
    the end of the current step, so that it can write a final checkpoint. Yields the list of
    signal names received. Only in a single-process run on the main thread: with several
    processes one of them stopping alone would leave the others waiting in a collective."""
    received: list[str] = []
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def request_stop(signum, frame):
        received.append(signal.Signals(signum).name)
        logging.warning("%s received: stopping after this step with a final checkpoint.", received[-1])

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interval_means(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Means of the metrics of the steps since the last log: stacked on the device, fetched once."""
    stacked = parallel.to_host(jax.tree.map(lambda *values: jnp.stack(values), *pending))
    return {name: float(np.mean(values)) for name, values in stacked.items()}


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
    """Trains (or resumes) the run in ``workdir`` and returns its final state."""
    started = time.monotonic()
    config_lib.validate(config)
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
    finally:
        if file_handler is not None:
            logging.get_absl_logger().removeHandler(file_handler)
            file_handler.close()


def _train(config: ml_collections.ConfigDict, workdir: Path, started: float, is_main: bool) -> TrainState:
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    train_images, _ = data.load_dataset(config.dataset, config.seed)
    image_shape = tuple(int(d) for d in train_images.shape[1:])
    try:
        models.num_resolution_steps(image_shape[0])
    except ValueError as e:
        raise config_lib.ConfigError(f"dataset {config.dataset.name}: {e}") from e
    logging.info(
        "Data: %s/%s, %d images of shape %s. Devices: %d (%s), %d images each per step (global batch %d); "
        "process %d of %d.",
        config.dataset.name,
        config.dataset.split,
        len(train_images),
        image_shape,
        mesh.size,
        jax.devices()[0].platform,
        config.train.batch_size // mesh.size,
        config.train.batch_size,
        jax.process_index(),
        jax.process_count(),
    )

    generator, discriminator = models.build(config.model, image_shape)
    optimizer = make_optimizer(config.optimizer)
    # Created inside jit so that it is born replicated over the whole mesh, every process included.
    state = jax.jit(
        lambda: init_state(generator, discriminator, optimizer, config.seed, image_shape, config.model.latent_dim),
        out_shardings=parallel.replicated(mesh),
    )()
    checkpointer = checkpoints.Checkpointer(workdir, keep=config.train.keep_checkpoints)
    try:
        if checkpointer.all_steps():
            state = _restore(checkpointer, state, config)
        start_step = int(parallel.to_host(state.step))
        if start_step:
            logging.info("Resumed from %s at step %d.", checkpointer.directory, start_step)
        if start_step >= config.train.num_steps:
            logging.info(
                "Nothing to do: the checkpoint is at step %d of train.num_steps=%d.", start_step, config.train.num_steps
            )
            return state
        meta = {"image_shape": list(image_shape)}
        if is_main:
            resolved = json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True)
            (workdir / "config.json").write_text(resolved + "\n")
            logging.info("Config:\n%s", config)

        train_step = compile_train_step(
            make_train_step(generator, discriminator, optimizer, config.loss.generator, config.model.latent_dim), mesh
        )
        sample = models.make_sampler(generator)
        latents = jax.device_put(
            np.asarray(fixed_latents(config.seed, config.train.num_samples, config.model.latent_dim)),
            parallel.replicated(mesh),
        )
        batches = data.BatchOrder(train_images, config.train.batch_size, config.seed)
        d_steps, num_steps, cfg = config.train.d_steps, config.train.num_steps, config.train
        batch_shape = (d_steps, config.train.batch_size, *image_shape)
        batch_sharding = parallel.batch_sharded(mesh, leading_axes=1)
        my_rows = parallel.process_rows(batch_sharding, batch_shape, axis=1)
        writer = writers.MetricsWriter(workdir, resume_step=start_step, enabled=is_main)

        def save_samples(step: int) -> None:
            grid_images = parallel.to_host(sample(state.generator_variables(), latents))
            if is_main:
                path = images.save_grid(grid_images, workdir / "samples" / f"step_{step:07d}.png")
                writer.write_image(step, "samples", images.make_grid(grid_images))
                logging.info("Wrote %s", path)

        def real_batches(step: int) -> jax.Array:
            """This process's rows of the step's ``d_steps`` global batches, as one global array."""
            local = np.stack([batches.batch(step * d_steps + i, my_rows) for i in range(d_steps)])
            return parallel.global_array(local, batch_sharding, batch_shape)

        compile_start = time.monotonic()
        train_step = train_step.lower(state, real_batches(start_step)).compile()
        logging.info("Compiled the train step in %.1f s.", time.monotonic() - compile_start)

        pending: list[dict] = []
        interval_start, interval_step = time.monotonic(), start_step
        step = start_step
        logging.info("Training from step %d to %d.", start_step, num_steps)
        with _stop_requests() as stop_signals:
            while step < num_steps:
                state, metrics = train_step(state, real_batches(step))
                pending.append(metrics)
                step += 1
                out_of_time = cfg.max_seconds > 0 and time.monotonic() - started >= cfg.max_seconds
                stop_requested = bool(stop_signals)  # Read once: a signal may arrive at any point below.
                last = step == num_steps or out_of_time or stop_requested
                if step % cfg.log_every == 0 or last:
                    means = _interval_means(pending)  # The only wait on the device between logs.
                    elapsed = time.monotonic() - interval_start
                    rate = (step - interval_step) / elapsed
                    means.update(steps_per_sec=rate, images_per_sec=rate * config.train.batch_size)
                    if not all(np.isfinite(v) for v in means.values()):
                        logging.warning("Non-finite metrics at step %d: %s", step, means)
                    logging.info(writers.format_log_line(step, num_steps, means))
                    writer.write_scalars(step, means)
                    pending, interval_start, interval_step = [], time.monotonic(), step
                if step % cfg.sample_every == 0 or last:
                    save_samples(step)
                if step % cfg.checkpoint_every == 0 or last:
                    checkpointer.save(state, config, meta)
                    logging.info("Saving checkpoint %s (in the background).", checkpointer.directory / str(step))
                if out_of_time:
                    logging.info("Stopping at step %d: train.max_seconds=%s reached.", step, cfg.max_seconds)
                    break
                if stop_requested:
                    logging.info("Stopped by %s at step %d; writing the final checkpoint.", stop_signals[0], step)
                    break

        checkpointer.wait()
        writer.close()
        if is_main:
            curves = images.plot_curves(writer.metrics_path, workdir / "curves.png")
            logging.info(
                "Done at step %d in %.0f s. Checkpoints: %s; curves: %s",
                step,
                time.monotonic() - started,
                checkpointer.directory,
                curves,
            )
        return state
    finally:
        checkpointer.close()
