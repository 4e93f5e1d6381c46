"""The training loop, read top to bottom: :func:`assemble` puts a run together from its config
(mesh, data, batch order, networks, compiled step), and :func:`train` steps it, calling a
:class:`Hooks` object at the moments a harness acts. The hooks here do nothing, so ``train(config)``
runs as it is in a notebook or a test; ``dcgan_jax.train`` (dcgan_jax/run/train.py) supplies the
harness that keeps a run alive in a workdir. Batch order and random keys are functions of (seed,
step), so a run resumed from a checkpoint goes on exactly as if never stopped."""

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from dcgan_jax.gan import ConfigError, clusters, data, models, parallel, sampling, state, step
from dcgan_jax.gan import config as config_lib
from dcgan_jax.gan.state import GanState, NetState


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """A global batch must split evenly over the devices; names the nearest sizes that do."""
    n = mesh.size
    if batch_size % n:
        lower = batch_size // n * n
        options = f"{lower} or {lower + n}" if lower else n
        raise ConfigError(
            f"--config.train.batch_size={batch_size} does not split over {n} devices; use {options}"
        )


def check_labels(config, labels: np.ndarray) -> None:
    """A conditional model needs labels that are classes (clusters label any dataset), each of its
    ``model.num_classes`` with images: G draws every class equally often."""
    num_classes = config.model.num_classes
    if not num_classes:
        return
    dataset = data.DATASETS[config.dataset.name]
    classes = np.unique(labels)
    if config.dataset.labels == "dataset" and (not dataset.labelled or classes.size < 2):
        raise ConfigError(
            f"--config.model.num_classes={num_classes}: {config.dataset.name} "
            f"{config.dataset.data_dir} has no {dataset.labels_are}, so every image would get "
            "label 0; train unconditionally with --config.model.num_classes=0, or condition on "
            "clusters of the images with --config.dataset.labels=clusters"
        )
    if not np.array_equal(classes, np.arange(num_classes)):
        raise ConfigError(
            f"--config.model.num_classes={num_classes}: G draws classes 0 to {num_classes - 1}, "
            f"each as often, but the training images have {classes.size} classes, labelled 0 to "
            f"{classes.max()}: a model of them needs --config.model.num_classes={classes.size} "
            f"and labels 0 to {classes.size - 1}"
        )


def initial_state(config, nets: models.Nets, image_shape) -> GanState:
    """The state at step 0 of ``config``'s run (the EMA of G's parameters starts at G's own)."""
    g_vars, d_vars = models.init_variables(
        nets,
        sampling.stream_key(config.seed, sampling.INIT_STREAM),
        image_shape,
        config.model.latent_dim,
    )
    g_rate, d_rate = state.learning_rates(config.optimizer)
    return GanState(
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(jax.random.key(config.seed)),
        g=NetState.create(g_vars, state.make_optimizer(config.optimizer, g_rate)),
        d=NetState.create(d_vars, state.make_optimizer(config.optimizer, d_rate)),
        g_ema=jax.tree.map(jnp.copy, g_vars["params"]) if config.train.ema_decay > 0 else {},
    )


@contextlib.contextmanager
def memory_check(config, what: str) -> Iterator[None]:
    """XLA's out-of-memory error while ``what`` runs as a ConfigError naming a smaller batch
    size."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        batch, devices = config.train.batch_size, jax.device_count()
        smaller = max(devices, batch // 2 // devices * devices)
        raise ConfigError(
            f"--config.train.batch_size={batch}: {what} does not fit in the memory of {devices} "
            f"{jax.devices()[0].platform} device(s) ({str(e).splitlines()[0][:160]}); try "
            f"--config.train.batch_size={smaller} or smaller"
        ) from None


@dataclasses.dataclass
class Run:
    """What a run builds once. ``config`` is resolved (its "0 = automatic" fields filled in)."""

    config: ml_collections.ConfigDict
    mesh: Mesh
    images: np.ndarray  # The training split, uint8 NHWC, on the host.
    batches: data.BatchOrder
    dataset: step.DeviceDataset  # The same, resident on the devices.
    nets: models.Nets
    update: step.Update  # Networks, config and optimizer, as every update reads them.
    # By steps per dispatch.
    compiled: dict[int, Callable] = dataclasses.field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.images.shape[1:]

    def init(self) -> GanState:
        """The state at step 0, created inside jit so that it is born replicated over the whole
        mesh."""
        create = functools.partial(initial_state, self.config, self.nets, self.image_shape)
        return jax.jit(create, out_shardings=parallel.replicated(self.mesh))()

    def train_steps(
        self, gan_state: GanState, first_step: int, num_steps: int
    ) -> tuple[GanState, dict, float]:
        """Runs steps ``first_step ..`` (the first dispatch of each length compiles): (state,
        stacked metrics, seconds spent compiling)."""
        # The dataset rows of these steps: every process computes the same global indices.
        rows = self.batches.step_indices(first_step, num_steps, self.config.train.d_steps)
        indices = parallel.global_array(rows, parallel.replicated(self.mesh), rows.shape)
        started = time.monotonic()
        first = num_steps not in self.compiled
        with memory_check(self.config, "the training step"):
            if first:
                jitted = step.jit_train_steps(self.update, self.mesh)
                lowered = jitted.lower(gan_state, self.dataset, indices)
                self.compiled[num_steps] = parallel.compile_lowered(
                    lowered, step.CPU_COMPILER_OPTIONS
                )
            compile_s = time.monotonic() - started
            if first:
                logging.info(
                    "Compiled the train step (%d per dispatch) in %.1f s.", num_steps, compile_s
                )
            new_state, metrics = self.compiled[num_steps](gan_state, self.dataset, indices)
            # Memory that does not fit fails at a program's first run: here, not at a later read.
            if first:
                jax.block_until_ready(new_state.step)
        return new_state, metrics, compile_s


def cluster_labels(images: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
    """``dataset.labels=clusters``: the images' balanced k-means clusters replace their labels."""
    started = time.monotonic()
    labels = clusters.balanced_kmeans(images, config.model.num_classes, config.seed)
    sizes = np.bincount(labels, minlength=config.model.num_classes)
    seconds = time.monotonic() - started
    logging.info(
        f"Labels: {len(sizes)} balanced k-means clusters of the {len(images)} training images' "
        f"pixels (no labels read), {sizes.min()} to {sizes.max()} images each, found in "
        f"{seconds:.1f} s."
    )
    return labels


def assemble(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Run:
    """The run of a validated ``config``: its data loaded and put on the devices, its networks
    built."""
    config = config_lib.resolved(config)
    mesh = mesh or parallel.make_mesh()
    check_batch_size(config.train.batch_size, mesh)
    images, labels = data.load_dataset(config.dataset, config.seed)
    models.num_resolution_steps(images.shape[1])  # A size no DCGAN reaches: a ConfigError.
    num_classes = config.model.num_classes
    if config.dataset.labels == "clusters" and num_classes:
        if num_classes > len(images):
            raise ConfigError(
                f"--config.model.num_classes={num_classes} clusters of {len(images)} images: at "
                f"most one cluster per image; use --config.model.num_classes={min(20, len(images))}"
                " or fewer"
            )
        labels = cluster_labels(images, config)
    check_labels(config, labels)
    batches = data.BatchOrder(images, config.train.batch_size, config.seed)
    nets = models.build(config.model, tuple(images.shape[1:]), config.train.compute_dtype)
    with memory_check(config, "the dataset"):
        dataset = step.put_on_devices(images, labels, mesh)
    update = step.make_update(nets, config)
    return Run(config, mesh, images, batches=batches, dataset=dataset, nets=nets, update=update)


class Hooks:
    """The moments a harness acts in :func:`train`; each does nothing here. A method may raise to
    end the run (a harness raises its own errors: a diverged run, a stop signal after the final
    save)."""

    def start(self, run: Run) -> GanState:
        """The state to train from: the initial one here; a harness resumes from its checkpoint."""
        return run.init()

    def after_dispatch(self, step: int, metrics: dict, compile_seconds: float) -> bool:
        """After each dispatch, now at ``step``; ``metrics`` stacked per step, still on the devices.
        True stops the run here (then every event fires, as at the last step)."""
        return False

    def checked(self, gan_state: GanState, step: int, *, at_log: bool) -> GanState:
        """At an event, before anything is logged, scored or saved: the state to go on with. A
        harness that finds it diverged returns an earlier one, and the loop goes on from there."""
        return gan_state

    def log(self, gan_state: GanState, step: int, *, at_sample: bool) -> None:
        """Every ``train.log_every`` steps: the metrics since the last log."""

    def evaluate(self, gan_state: GanState, step: int) -> None:
        """Every ``eval.every`` steps (when > 0): score samples."""

    def sample(self, gan_state: GanState, step: int) -> None:
        """Every ``train.sample_every`` steps: the grid of the run's fixed latents."""

    def checkpoint(self, gan_state: GanState, step: int) -> None:
        """Every ``train.checkpoint_every`` steps: save."""

    def end(self, gan_state: GanState, step: int) -> None:
        """After the last step, or the step the run stopped at."""


def steps_to_next_event(config, step: int) -> int:
    """Steps in the next dispatch: at most ``train.steps_per_dispatch``, ending at the next log,
    sample, checkpoint or evaluation step or at ``train.num_steps``."""
    cfg = config.train
    intervals = [cfg.log_every, cfg.sample_every, cfg.checkpoint_every, config.eval.every]
    return min(
        [cfg.steps_per_dispatch, cfg.num_steps - step] + [k - step % k for k in intervals if k]
    )


def _due(step: int, every: int, last: bool):
    """Whether an event of period ``every`` (0: never) falls at ``step``; all do at the last."""
    return every > 0 and (last or step % every == 0)


def train(config: ml_collections.ConfigDict, hooks: Hooks | None = None) -> GanState:
    """Trains ``config``'s run from the state ``hooks.start`` gives until ``train.num_steps`` (or a
    stop ``hooks.after_dispatch`` asks for); returns the final state."""
    config_lib.validate(config)
    hooks = hooks or Hooks()
    run = assemble(config)
    gan_state = hooks.start(run)
    cfg = run.config.train
    at = gan_state.host_step
    if at >= cfg.num_steps:
        logging.info("Nothing to do: the checkpoint is at step %d of %d.", at, cfg.num_steps)
        return gan_state
    logging.info("Training from step %d to %d.", at, cfg.num_steps)
    stop = False
    while at < cfg.num_steps and not stop:
        num_steps = steps_to_next_event(run.config, at)
        gan_state, metrics, compile_seconds = run.train_steps(gan_state, at, num_steps)
        at += num_steps
        stop = hooks.after_dispatch(at, metrics, compile_seconds)
        last = at == cfg.num_steps or stop
        at_log = _due(at, cfg.log_every, last)
        at_eval = _due(at, run.config.eval.every, last)
        at_sample = _due(at, cfg.sample_every, last)
        at_checkpoint = _due(at, cfg.checkpoint_every, last)
        if not (at_log or at_eval or at_sample or at_checkpoint):
            continue
        gan_state = hooks.checked(gan_state, at, at_log=at_log)
        if gan_state.host_step != at:  # Gone back to an earlier state.
            at = gan_state.host_step
            stop = False
            continue
        if at_log:
            hooks.log(gan_state, at, at_sample=at_sample)
        if at_sample:
            hooks.sample(gan_state, at)
        if at_checkpoint:  # Before the evaluation (minutes with Inception), which a kill may cut.
            hooks.checkpoint(gan_state, at)
        if at_eval:
            hooks.evaluate(gan_state, at)
    hooks.end(gan_state, at)
    return gan_state
