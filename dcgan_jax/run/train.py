"""``dcgan_jax.train(config, workdir)``: the GAN's loop (dcgan_jax/gan/loop.py) run inside the
harness that keeps it alive in a workdir. :class:`Harness` supplies the loop's hooks: resume from
the newest good checkpoint, stops agreed on by every process, divergence recovery, the log line and
metrics, sample grids, evaluations with the best checkpoint by FID, checkpoints and ``status.json``.
"""

import contextlib
import functools
import os
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging

from dcgan_jax import evaluation
from dcgan_jax.evaluation import metrics, reports
from dcgan_jax.gan import RunError, data, loop, parallel, sampling
from dcgan_jax.gan import config as config_lib
from dcgan_jax.gan.state import GanState
from dcgan_jax.run import (
    checkpoints,
    cli,
    control,
    distributed,
    images,
    preflight,
    resume,
    writers,
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> GanState:
    """Trains (or resumes) the run of ``config`` in ``workdir``; returns the final state. A stop
    signal raises :class:`~dcgan_jax.run.control.Interrupted` after the final checkpoint."""
    started = time.monotonic()
    cli.check_fields(config)
    preflight.check_loss(config.loss.name)
    config_lib.validate(config)
    workdir = control.run_folder(workdir)  # "~/runs/x" as a shell reads it.
    if not checkpoints.checkpoint_dir(workdir).is_dir() and (runs := checkpoints.runs_in(workdir)):
        raise control.WorkdirError(
            f"--workdir={workdir} is a folder of runs ({len(runs)}, e.g. {runs[0]}), such as a "
            "sweep's: a run needs a folder of its own (a new one, or one of them to resume it)"
        )
    distributed.check_same_run(config, workdir)
    with control.stop_requests() as stops, _session(workdir, stops) as (is_main, folder):
        harness = Harness(workdir, is_main, stops, started, folder)
        try:
            return loop.train(config, harness)
        except control.TrainingDiverged as e:
            if is_main:
                seconds = time.monotonic() - started
                control.write_status(
                    workdir, config.train.num_steps, e.step, "diverged", seconds, detail=str(e)
                )
            raise
        finally:
            harness.close()


@contextlib.contextmanager
def _session(workdir, stops):
    """This process's part in the run (yields whether it is process 0, which speaks for the run,
    and the workdir's ``stat``): its log verbosity, ``train.log``, the workdir's lock; a failed
    write to the run's files (a full disk, a folder made read-only or removed, a link in the way),
    or any error once the folder is gone, as one RunError naming it."""
    is_main = jax.process_index() == 0
    control.check_writable_folder(workdir, "--workdir")
    folder = workdir.stat()
    # Process 0's, for all.
    lock = control.hold(workdir, stops) if is_main else contextlib.nullcontext()
    try:
        with writers.logging_to(workdir, is_main), lock:
            yield is_main, folder
    except Exception as e:  # Libraries report a folder gone mid-write with many types.
        why = control.folder_change(workdir, folder)
        if isinstance(e, RunError) or not (why or isinstance(e, OSError)):
            raise
        kept = "Checkpoints already written are complete"
        if writers.out_of_space(e):
            raise checkpoints.DiskFullError(
                f"disk full while writing to {workdir}: {e}. {kept}; free some space and rerun "
                "the same command to resume from the newest."
            ) from e
        raise control.WorkdirError(
            f"cannot write the run's files in {workdir}: {why or e}. {kept}; put the folder right "
            "and rerun the same command to resume from the newest."
        ) from e


class Harness(loop.Hooks):
    """The loop's hooks for a run in ``workdir``: what it reads and writes there, and when it
    stops."""

    def __init__(
        self,
        workdir: Path,
        is_main: bool,
        stops: control.StopRequests,
        started: float,
        folder: os.stat_result,
    ):
        """``folder``: the workdir's ``stat`` as the run started, to tell it from one put in its
        place."""
        self.workdir, self.is_main, self.stops, self.started = workdir, is_main, stops, started
        self.folder = folder
        self.checkpointer: checkpoints.Checkpointer | None = None
        self.best: checkpoints.Checkpointer | None = None
        self.writer: writers.MetricsWriter | None = None
        self.stop = control.Stop()
        self.restores = 0
        self.stacked: dict | None = None  # The metrics of the log interval just closed.
        self.run: loop.Run | None = None

    def start(self, run: loop.Run) -> GanState:
        """Set-up between the loop's phases (a signal stops it there, releasing the lock), then the
        newest good checkpoint or the initial state."""
        logging.info(writers.setup_line(run))
        self.stops.check()
        dataset = run.config.dataset
        if dataset.image_size not in (0, run.image_shape[0]):
            raise config_lib.ConfigError(
                f"--config.dataset.image_size={dataset.image_size}: {dataset.name} keeps its "
                f"images' size, {run.image_shape[0]} (celeb_a and image_folder are resized): set 0"
            )
        if dataset.data_dir:  # Named in the run's records, which are read from any folder later.
            dataset.data_dir = str(Path(dataset.data_dir).expanduser().absolute())
        preflight.check_memory(run.config, run.nets, run.image_shape)
        self.run = run
        config = run.config
        self.checkpointer = checkpoints.Checkpointer(
            self.workdir, keep=config.train.keep_checkpoints
        )
        self._set_up_samples(run)
        if config.eval.every:
            self._set_up_evaluation(run)
        self.stops.check()
        gan_state = resume.restore_or_init(run, self.checkpointer)
        step = gan_state.host_step
        if self.is_main and step < config.train.num_steps:
            resolved = config.to_json(indent=2, sort_keys=True)
            writers.write_atomically(self.workdir / "config.json", resolved + "\n")
            logging.info("Config:\n%s", config)
            for why in cli.unread(config).values():
                logging.warning("%s", why)
            if not config.eval.every:
                logging.info(
                    "No built-in evaluation for %s during training (eval.every=0); score the "
                    "checkpoints with python -m dcgan_jax.evaluation --workdir=RUN.",
                    dataset.name,
                )
        self._start_interval(step)
        self.stops.start_training()
        return gan_state

    def _set_up_samples(self, run):
        config = run.config
        self.sampler = sampling.make_sampler(run.nets.generator)
        self.recompute_bn = None
        if config.train.recompute_bn:
            self.recompute_bn = sampling.make_bn_recomputer(
                run.nets.generator, config.model, config.train.batch_size
            )
        self.sampling_cache: tuple[int, dict] | None = None
        self.grid_z, self.grid_labels = sampling.grid_draw(config)
        rows = np.linspace(0, len(run.images) - 1, len(self.grid_z)).astype(int)
        self.real_spread = metrics.mean_pairwise_distance(data.to_model_range(run.images[rows]))

    def _set_up_evaluation(self, run):
        config = run.config
        self.evaluator = evaluation.evaluator_for(config)
        # Where Inception scores the dataset already, its FID is the run's: not computed twice.
        separate = config.eval.inception_fid and self.evaluator.network.name != "inception"
        self.inception = evaluation.evaluator_for(config, "inception") if separate else None
        self.eval_z, self.eval_labels = sampling.eval_draw(config, config.eval.num_samples)
        if self.is_main:
            provenance = reports.training_provenance(self.evaluator, config, self.inception)
            (self.workdir / "eval").mkdir(exist_ok=True)
            writers.write_json(self.workdir / "eval" / "provenance.json", provenance)
        self.best = checkpoints.Checkpointer(self.workdir, keep=1, subdir=checkpoints.BEST_SUBDIR)
        self.best_fid = float("inf")
        if self.best.all_steps():
            _, stored, meta = self.best.restore_config()
            fields = ("split", "num_samples")
            if changed := {
                f"eval.{k}": stored.eval[k] for k in fields if stored.eval[k] != config.eval[k]
            }:
                logging.warning(
                    "The best checkpoint's FID was measured with %s; this run measures otherwise: "
                    "its next evaluation starts a new best.",
                    changed,
                )
            else:
                self.best_fid = meta.get("fid", float("inf"))

    def _start_interval(self, step):
        """A fresh metrics writer from ``step`` (rows after it, from abandoned steps, are
        dropped)."""
        if self.writer is not None:
            self.writer.close()
        self.writer = writers.MetricsWriter(self.workdir, resume_step=step, enabled=self.is_main)
        self.interval = writers.Interval()

    def after_dispatch(self, step: int, metrics: dict, compile_seconds: float) -> bool:
        """Processes agree on a stop at log steps (every step when alone)."""
        self.interval.add(metrics, compile_seconds)
        if jax.process_count() == 1 or step % self.run.config.train.log_every == 0:
            self.stop = control.agreed_stop(
                self.stops.received, self.started, self.run.config.train.max_seconds
            )
        return bool(self.stop)

    def checked(self, gan_state: GanState, step: int, *, at_log: bool) -> GanState:
        """Never log, score or save a diverged state: the last good one instead, with lower learning
        rates (``train.on_divergence=restore``), or TrainingDiverged."""
        if why := control.folder_change(self.workdir, self.folder):
            raise OSError(why)
        self.stacked = self.interval.flush() if at_log else None
        divergence = resume.divergence(gan_state, step, self.stacked)
        if divergence is None:
            return gan_state
        gan_state = resume.recover(self.run, self.checkpointer, divergence, self.restores)
        self.restores += 1
        self.stop = control.Stop()
        step = gan_state.host_step
        self._start_interval(step)
        logging.info("Training from step %d to %d.", step, self.run.config.train.num_steps)
        return gan_state

    def log(self, gan_state: GanState, step: int, *, at_sample: bool) -> None:
        """The log line and metrics row of the steps since the last one; at sample steps (with
        ``train.recompute_bn`` it costs a BatchNorm pass) also the collapse alarm."""
        cfg = self.run.config.train
        means = {name: float(np.mean(values)) for name, values in self.stacked.items()}
        means.update(
            steps_per_sec=self.interval.rate, images_per_sec=self.interval.rate * cfg.batch_size
        )
        if at_sample and len(self.grid_z) > 1:  # A diversity needs a pair of images.
            grid = self._samples(gan_state, self.grid_z, self.grid_labels)
            means["diversity"] = metrics.sample_diversity(grid, self.real_spread)
        seconds_left = (
            cfg.max_seconds - (time.monotonic() - self.started) if cfg.max_seconds > 0 else None
        )
        logging.info(writers.format_log_line(step, cfg.num_steps, means, seconds_left))
        if (
            "diversity" in means
            and step >= cfg.collapse_warmup
            and means["diversity"] < cfg.collapse_threshold
        ):
            logging.warning(
                f"Step {step}: the sample grid's diversity is {means['diversity']:.3f} of the real "
                f"images' (train.collapse_threshold={cfg.collapse_threshold:g}): G may have "
                "collapsed to a few images; look at the newest samples/step_*.png."
            )
        self.writer.write_scalars(step, means)

    def _samples(self, gan_state, z, labels):
        """Images of G as it samples (the EMA's weights when kept, BatchNorm statistics measured
        anew with ``train.recompute_bn``, once per step), as ``dcgan_jax.load`` gives them."""
        step = int(gan_state.step)
        if self.sampling_cache is None or self.sampling_cache[0] != step:
            variables = gan_state.generator_variables()
            if self.recompute_bn is not None:
                variables = self.recompute_bn(variables, self.run.config.seed)
            self.sampling_cache = step, variables
        replicated = parallel.replicated(self.run.mesh)
        place = functools.partial(jax.device_put, device=replicated)
        return sampling.sample_in_chunks(
            self.sampler, self.sampling_cache[1], z, labels, place=place
        )

    def _scores(self, gan_state: GanState) -> dict:
        """The scores of the run's evaluation draw, the Inception FID too when asked."""
        samples = self._samples(gan_state, self.eval_z, self.eval_labels)
        # Not clusters.
        asked = self.eval_labels if config_lib.conditioned_on_classes(self.run.config) else None
        scores = self.evaluator(samples, labels=asked)
        if self.inception is not None:
            scores["inception_fid"] = self.inception(samples)["fid"]
        elif self.run.config.eval.inception_fid:
            scores["inception_fid"] = scores["fid"]
        return scores

    def evaluate(self, gan_state: GanState, step: int) -> None:
        """Scores the run's fixed evaluation draw (the same at every evaluation: comparable across
        steps); a new lowest FID replaces best_checkpoint/. Not after a stop signal, nor counted in
        steps/s."""
        if self.stop.signal:
            return
        started = time.monotonic()
        # A stop signal abandons it (minutes with Inception on a CPU; the step is checkpointed),
        # unless processes must agree on where they stop.
        self.stops.cuttable = jax.process_count() == 1
        try:
            scores = self._scores(gan_state)
        except control.CutShort:
            logging.warning("The evaluation of step %d is abandoned.", step)
            return
        finally:
            self.stops.cuttable = False
        self.writer.write_scalars(step, reports.scalar_metrics(scores))
        for line in reports.score_lines(scores, time.monotonic() - started):
            logging.info("eval step %d: %s", step, line)
        if scores["fid"] < self.best_fid:
            self.best_fid = scores["fid"]
            self.best.save(
                gan_state,
                self.run.config,
                {"image_shape": list(self.run.image_shape), "fid": scores["fid"]},
            )
            logging.info("New best FID %.3f: %s", scores["fid"], self.best.directory / str(step))
        self.interval.exclude(time.monotonic() - started)

    def sample(self, gan_state: GanState, step: int) -> None:
        """The grid of the run's fixed latents, as ``dcgan_jax.load(...).training_grid()`` draws
        it."""
        grid = self._samples(gan_state, self.grid_z, self.grid_labels)
        if self.is_main:
            path = images.save_grid(grid, self.workdir / "samples" / f"step_{step:07d}.png")
            self.writer.write_image(step, "samples", images.make_grid(grid))
            logging.info("Wrote %s", path)

    def checkpoint(self, gan_state: GanState, step: int) -> None:
        self.checkpointer.save(
            gan_state, self.run.config, {"image_shape": list(self.run.image_shape)}
        )
        logging.info(
            "Saving checkpoint %s (in the background).", self.checkpointer.directory / str(step)
        )

    def end(self, gan_state: GanState, step: int) -> None:
        """Every background save on disk, ``status.json`` and the curves written; then, after a stop
        signal, Interrupted."""
        cfg = self.run.config.train
        if self.stop.out_of_time:
            logging.info("Stopped at step %d: train.max_seconds=%s reached.", step, cfg.max_seconds)
        if self.stop.signal:
            logging.info(
                "Stopped by %s at step %d; writing the final checkpoint.", self.stop.signal, step
            )
        self.checkpointer.wait()
        if self.best is not None:
            self.best.wait()
        self.writer.close()
        seconds = time.monotonic() - self.started
        if self.is_main:
            control.write_status(
                self.workdir,
                cfg.num_steps,
                step,
                self.stop.ended,
                seconds,
                detail=self.stop.signal or "",
            )
            curves = images.plot_curves(self.writer.metrics_path, self.workdir / "curves.png")
            logging.info(
                f"Done at step {step} in {seconds:.0f} s. Checkpoints: "
                f"{self.checkpointer.directory}; curves: {curves}"
            )
        if self.stop.signal:
            message = (
                f"stopped by {self.stop.signal} at step {step} with a final checkpoint; rerun the "
                "same command to resume"
            )
            raise control.Interrupted(self.stop.signal, self.stop.signum, message)

    def close(self) -> None:
        for closable in (self.writer, self.checkpointer, self.best):
            if closable is not None:
                closable.close()
