"""The training loop, :func:`train_and_evaluate`, read top to bottom. A rerun in the same workdir
resumes exactly: batch order and random keys are functions of (seed, step). The step itself is
:mod:`dcgan_jax.step`; holding and stopping a run, :mod:`dcgan_jax.control`."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging

from dcgan_jax import (
    assembly,
    checkpoints,
    control,
    data,
    evaluation,
    images,
    metrics,
    parallel,
    reports,
    resume,
    sampling,
    writers,
)
from dcgan_jax import config as config_lib
from dcgan_jax.state import GanState


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> GanState:
    """Trains (or resumes) the run of ``config`` in ``workdir``; returns the final state. A stop signal
    raises :class:`~dcgan_jax.control.Interrupted` after the final checkpoint."""
    started = time.monotonic()
    config_lib.validate(config)
    workdir = Path(workdir)
    with control.stop_requests() as stops, _session(workdir) as is_main:
        run = assembly.assemble(config)
        stops.check()  # A signal during set-up stops the run between its phases, releasing the lock.
        assembly.log_setup(run)
        cfg = run.config.train
        ckpt = checkpoints.Checkpointer(workdir, keep=cfg.keep_checkpoints)
        out = _Outputs(run, workdir, is_main, ckpt)
        try:
            stops.check()
            state = resume.restore_or_init(run, ckpt)
            step = int(parallel.to_host(state.step))
            if step >= cfg.num_steps:
                logging.info("Nothing to do: the checkpoint is at step %d of train.num_steps=%d.", step, cfg.num_steps)
                return state
            if is_main:
                resolved = json.dumps(json.loads(run.config.to_json()), indent=2, sort_keys=True)
                (workdir / "config.json").write_text(resolved + "\n")
                logging.info("Config:\n%s", run.config)
            state, step, stop = _train(run, out, state, started, stops)
            out.finish()
            seconds = time.monotonic() - started
            if is_main:
                control.write_status(workdir, cfg.num_steps, step, stop.ended, seconds, detail=stop.signal or "")
                curves = images.plot_curves(out.writer.metrics_path, workdir / "curves.png")
                logging.info(
                    "Done at step %d in %.0f s. Checkpoints: %s; curves: %s", step, seconds, ckpt.directory, curves
                )
            if stop.signal:
                resume_hint = "with a final checkpoint; rerun the same command to resume"
                raise control.Interrupted(
                    stop.signal, stop.signum, f"stopped by {stop.signal} at step {step} {resume_hint}"
                )
            return state
        except control.TrainingDiverged as e:
            if is_main:
                control.write_status(
                    workdir, cfg.num_steps, e.step, "diverged", time.monotonic() - started, detail=str(e)
                )
            raise
        finally:
            out.close()


train = train_and_evaluate  # dcgan_jax.train(config, workdir), the name the package exports.


def _train(run: assembly.Run, out: _Outputs, state: GanState, started: float, stops: control.StopRequests):
    """Steps until ``train.num_steps``, the time limit or a stop signal: (state, step, the Stop)."""
    config, cfg = run.config, run.config.train
    step, restores, stop = int(parallel.to_host(state.step)), 0, control.Stop()
    stops.start_training()
    interval = out.start_interval(step)
    while step < cfg.num_steps and not stop:
        state, metrics, compile_s = run.train_steps(state, step, num_steps := _steps_to_next_event(config, step))
        interval.add(metrics, num_steps, compile_s)
        step += num_steps
        if jax.process_count() == 1 or step % cfg.log_every == 0:  # Processes agree on stopping at logs.
            stop = control.agreed_stop(stops.received, started, cfg.max_seconds)
        last = step == cfg.num_steps or bool(stop)
        at_log = step % cfg.log_every == 0 or last
        at_eval = out.evaluator is not None and (step % config.eval.every == 0 or last) and not stop.signal
        at_samples, at_checkpoint = step % cfg.sample_every == 0 or last, step % cfg.checkpoint_every == 0 or last
        stacked = interval.flush() if at_log else None
        if at_log or at_eval or at_samples or at_checkpoint:  # Never log, score or save a diverged state.
            if divergence := resume.divergence(state, step, stacked):
                state, restores = resume.recover(run, out.checkpointer, divergence, restores), restores + 1
                step, stop = int(parallel.to_host(state.step)), control.Stop()
                interval = out.start_interval(step)
                continue
        if at_log:
            out.log_interval(state, step, stacked, interval.rate, started, with_diversity=at_samples)
        if at_eval:
            interval.exclude(out.evaluate(state, step))  # Not counted in steps/s.
        if at_samples:
            out.save_grid(state, step)
        if at_checkpoint:
            out.save_checkpoint(state, step)
    if stop.out_of_time:
        logging.info("Stopped at step %d: train.max_seconds=%s reached.", step, cfg.max_seconds)
    if stop.signal:
        logging.info("Stopped by %s at step %d; writing the final checkpoint.", stop.signal, step)
    return state, step, stop


def _steps_to_next_event(config, step: int) -> int:
    """Steps in the next dispatch: at most ``train.steps_per_dispatch``, ending at the next log,
    sample, checkpoint or evaluation step or at ``train.num_steps``."""
    cfg = config.train
    intervals = [cfg.log_every, cfg.sample_every, cfg.checkpoint_every] + [config.eval.every] * bool(config.eval.every)
    return min([cfg.steps_per_dispatch, cfg.num_steps - step] + [k - step % k for k in intervals])


@contextlib.contextmanager
def _session(workdir: Path) -> Iterator[bool]:
    """This process's part in the run (yields whether it is process 0, which speaks for the run):
    its log verbosity, ``train.log``, the workdir's lock, and a full disk as a DiskFullError."""
    is_main = jax.process_index() == 0
    control.check_writable_folder(workdir, "--workdir")
    try:
        # Process 0 holds the lock for a multi-process run; the others share its workdir.
        with writers.logging_to(workdir, is_main), control.hold(workdir) if is_main else contextlib.nullcontext():
            yield is_main
    except OSError as e:  # Logs, metrics or sample grids on a full disk.
        if checkpoints.out_of_space(e):
            raise checkpoints.DiskFullError(
                f"disk full while writing to {workdir}: {e}. Checkpoints already written are complete; free some "
                "space and rerun the same command to resume from the newest."
            ) from e
        raise


class _Interval:
    """The metrics of the dispatches since the last log line, and their time (compilation and evaluation
    excluded)."""

    def __init__(self):
        self.pending: list[tuple[dict, int]] = []  # (stacked metrics of a dispatch, steps it ran)
        self.start, self.steps, self.rate = time.monotonic(), 0, float("nan")

    def add(self, metrics: dict, num_steps: int, compile_s: float) -> None:
        for value in jax.tree.leaves(metrics):
            value.copy_to_host_async()  # Ready by the next log line, which then waits on nothing else.
        self.pending.append((metrics, num_steps))
        self.steps += num_steps
        self.exclude(compile_s)

    def exclude(self, seconds: float) -> None:
        self.start += seconds

    def flush(self) -> dict[str, np.ndarray]:
        """The interval's metrics, fetched at once (the only wait on the device between logs), stacked
        per step; sets :attr:`rate` (steps/s) and starts the next interval."""
        fetched = [(parallel.to_host(metrics), n) for metrics, n in self.pending]
        stacked = {name: np.concatenate([m[name][:n] for m, n in fetched]) for name in fetched[0][0]}
        self.rate = self.steps / (time.monotonic() - self.start)
        self.pending, self.start, self.steps = [], time.monotonic(), 0
        return stacked


class _Outputs:
    """What the loop writes: checkpoints (and the best one by FID), metrics, sample grids, evaluations."""

    def __init__(self, run: assembly.Run, workdir: Path, is_main: bool, ckpt: checkpoints.Checkpointer):
        config = run.config
        self.run, self.workdir, self.is_main, self.checkpointer = run, workdir, is_main, ckpt
        self.writer: writers.MetricsWriter | None = None
        self.sample = sampling.make_sampler(run.nets.generator)
        self.recompute_bn = None
        if config.train.recompute_bn:
            self.recompute_bn = sampling.make_bn_recomputer(run.nets.generator, config.model, config.train.batch_size)
        self._sampling_variables: tuple[int, dict] | None = None
        self.place = lambda x: jax.device_put(x, parallel.replicated(run.mesh))
        self.grid_columns, self.grid_z, self.grid_labels = sampling.grid_draw(config)
        reals = run.images[np.linspace(0, len(run.images) - 1, len(self.grid_z)).astype(int)]
        self.real_spread = metrics.mean_pairwise_distance(data.to_model_range(reals))
        self.evaluator, self.best, self.best_fid = None, None, float("inf")
        if config.eval.every:
            self.evaluator = evaluation.Evaluator(config.dataset.name, config.eval.split, config.dataset.data_dir)
            self.inception = None
            if config.eval.inception_fid:
                self.inception = evaluation.Evaluator(
                    config.dataset.name, config.eval.split, config.dataset.data_dir, feature_network="inception"
                )
            self.eval_z, self.eval_labels = sampling.eval_draw(config)
            if is_main:
                reports.write_training_provenance(self.evaluator, config, workdir, self.inception)
            self.best = checkpoints.Checkpointer(workdir, keep=1, subdir=checkpoints.BEST_SUBDIR)
            if self.best.all_steps():
                self.best_fid = self.best.restore_config()[2].get("fid", float("inf"))

    def start_interval(self, step: int) -> _Interval:
        """A fresh metrics writer from ``step`` (rows after it, from abandoned steps, are dropped)."""
        if self.writer is not None:
            self.writer.close()
        self.writer = writers.MetricsWriter(self.workdir, resume_step=step, enabled=self.is_main)
        logging.info("Training from step %d to %d.", step, self.run.config.train.num_steps)
        return _Interval()

    def log_interval(
        self, state: GanState, step: int, stacked: dict, rate: float, started: float, *, with_diversity: bool
    ) -> None:
        """The log line and metrics row of the steps since the last one; ``with_diversity`` (at sample
        steps only: with ``train.recompute_bn`` it costs a BatchNorm pass) adds the collapse alarm."""
        cfg = self.run.config.train
        means = {name: float(np.mean(values)) for name, values in stacked.items()}
        means.update(steps_per_sec=rate, images_per_sec=rate * cfg.batch_size)
        if with_diversity:
            means["diversity"] = self.diversity(state)
        seconds_left = cfg.max_seconds - (time.monotonic() - started) if cfg.max_seconds > 0 else None
        logging.info(writers.format_log_line(step, cfg.num_steps, means, seconds_left))
        if with_diversity and step >= cfg.collapse_warmup and means["diversity"] < cfg.collapse_threshold:
            why = f"the sample grid's diversity is {means['diversity']:.3f} of the real images'"
            look = "G may have collapsed to a few images; look at the newest samples/step_*.png."
            logging.warning("Step %d: %s (train.collapse_threshold=%g): %s", step, why, cfg.collapse_threshold, look)
        self.writer.write_scalars(step, means)

    def sampling_variables(self, state: GanState) -> dict:
        """G's variables as it samples (the EMA's when kept, BatchNorm statistics measured anew with
        ``train.recompute_bn``, once per step), as ``dcgan_jax.load`` gives them."""
        step = int(state.step)
        if self._sampling_variables is None or self._sampling_variables[0] != step:
            variables = state.generator_variables()
            if self.recompute_bn is not None:
                variables = self.recompute_bn(variables, self.run.config.seed)
            self._sampling_variables = step, variables
        return self._sampling_variables[1]

    def samples(self, state: GanState, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        return sampling.sample_in_chunks(self.sample, self.sampling_variables(state), z, labels, place=self.place)

    def diversity(self, state: GanState) -> float:
        """The grid's :func:`~dcgan_jax.metrics.sample_diversity`: the run's cheap mode-collapse signal."""
        return metrics.sample_diversity(self.samples(state, self.grid_z, self.grid_labels), self.real_spread)

    def save_grid(self, state: GanState, step: int) -> None:
        """The grid of the run's fixed latents, as ``dcgan_jax.load(...).training_grid()`` draws it."""
        grid = self.samples(state, self.grid_z, self.grid_labels)
        if self.is_main:
            path = images.save_grid(grid, self.workdir / "samples" / f"step_{step:07d}.png", self.grid_columns)
            self.writer.write_image(step, "samples", images.make_grid(grid, columns=self.grid_columns))
            logging.info("Wrote %s", path)

    def evaluate(self, state: GanState, step: int) -> float:
        """Scores the run's fixed evaluation draw (the same at every evaluation: comparable across steps);
        a new lowest FID replaces best_checkpoint/. Returns the seconds spent."""
        started = time.monotonic()
        samples = self.samples(state, self.eval_z, self.eval_labels)
        asked = self.eval_labels if config_lib.conditioned_on_classes(self.run.config) else None  # Not clusters.
        scores = self.evaluator(samples, labels=asked)
        if self.inception is not None:
            scores["inception_fid"] = self.inception(samples)["fid"]
        self.writer.write_scalars(step, reports.scalar_metrics(scores))
        for line in reports.score_lines(scores, time.monotonic() - started):
            logging.info("eval step %d: %s", step, line)
        if scores["fid"] < self.best_fid:
            self.best_fid = scores["fid"]
            self.best.save(state, self.run.config, {"image_shape": list(self.run.image_shape), "fid": scores["fid"]})
            logging.info("New best FID %.3f: %s", scores["fid"], self.best.directory / str(step))
        return time.monotonic() - started

    def save_checkpoint(self, state: GanState, step: int) -> None:
        self.checkpointer.save(state, self.run.config, {"image_shape": list(self.run.image_shape)})
        logging.info("Saving checkpoint %s (in the background).", self.checkpointer.directory / str(step))

    def finish(self) -> None:
        """Until every background save is on disk, and the metrics are flushed."""
        self.checkpointer.wait()
        if self.best is not None:
            self.best.wait()
        self.writer.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.checkpointer.close()
        if self.best is not None:
            self.best.close()
