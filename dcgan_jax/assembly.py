"""A run put together from its config: mesh, data, batch order, networks, initial state, compiled
step. The loop, ``benchmarks/throughput.py`` and the tests all start from :func:`assemble`."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from dcgan_jax import clusters, data, models, parallel, sampling, state, step
from dcgan_jax import config as config_lib
from dcgan_jax.state import GanState, NetState


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """A global batch must split evenly over the devices; names the nearest sizes that do."""
    n = mesh.size
    if batch_size % n:
        lower, upper = batch_size // n * n, (batch_size // n + 1) * n
        options = " or ".join(str(b) for b in (lower, upper) if b > 0)
        raise config_lib.ConfigError(
            f"--config.train.batch_size={batch_size} does not split over {n} devices; use {options}"
        )


def check_labels(config, labels: np.ndarray) -> None:
    """A conditional model needs a dataset with labels, all below ``model.num_classes``."""
    num_classes = config.model.num_classes
    unlabelled = config.dataset.labels == "dataset" and (  # Clusters label any dataset.
        config.dataset.name in data.UNLABELLED or (config.dataset.name == "image_folder" and np.unique(labels).size < 2)
    )
    if num_classes and unlabelled:
        folder = config.dataset.name == "image_folder"
        raise config_lib.ConfigError(
            f"--config.model.num_classes={num_classes}: {config.dataset.name} {config.dataset.data_dir} has no "
            f"{'class sub-folders' if folder else 'class labels'}, so every image would get label 0; train "
            "unconditionally with --config.model.num_classes=0, condition on clusters of the images with "
            "--config.dataset.labels=clusters"
            + (", or put each class's images in a sub-folder of its own" if folder else "")
        )
    if num_classes and int(labels.max()) >= num_classes:
        raise config_lib.ConfigError(
            f"--config.model.num_classes={num_classes}: {config.dataset.name} has labels up to "
            f"{int(labels.max())}; use --config.model.num_classes={int(labels.max()) + 1}"
        )


def initial_state(config, nets: models.Nets, image_shape) -> GanState:
    """The state at step 0 of ``config``'s run (the EMA of G's parameters starts at G's own)."""
    g_vars, d_vars = models.init_variables(nets, sampling.init_key(config.seed), image_shape, config.model.latent_dim)
    g_rate, d_rate = state.learning_rates(config.optimizer)
    return GanState(
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(sampling.run_key(config.seed)),
        g=NetState.create(g_vars, state.make_optimizer(config.optimizer, g_rate)),
        d=NetState.create(d_vars, state.make_optimizer(config.optimizer, d_rate)),
        g_ema=jax.tree.map(jnp.copy, g_vars["params"]) if config.train.ema_decay > 0 else {},
    )


@contextlib.contextmanager
def memory_check(config, what: str) -> Iterator[None]:
    """XLA's out-of-memory error while ``what`` runs as a ConfigError naming a smaller batch size."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        batch, devices = config.train.batch_size, jax.device_count()
        smaller = max(devices, batch // 2 // devices * devices)
        raise config_lib.ConfigError(
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
    compiled: dict[int, Callable] = dataclasses.field(default_factory=dict)  # By steps per dispatch.

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.images.shape[1:])

    def init(self) -> GanState:
        """The state at step 0, created inside jit so that it is born replicated over the whole mesh."""
        create = lambda: initial_state(self.config, self.nets, self.image_shape)  # noqa: E731
        return jax.jit(create, out_shardings=parallel.replicated(self.mesh))()

    def indices(self, first_step: int, num_steps: int) -> jax.Array:
        """The dataset rows of steps ``first_step ..`` (num_steps, d_steps, batch); every process
        computes the same global indices."""
        rows = self.batches.step_indices(first_step, num_steps, self.config.train.d_steps)
        return parallel.global_array(rows, parallel.replicated(self.mesh), rows.shape)

    def train_steps(self, gan_state: GanState, first_step: int, num_steps: int) -> tuple[GanState, dict, float]:
        """Runs steps ``first_step ..`` (the first dispatch of each length compiles): (state, stacked
        metrics, seconds spent compiling)."""
        indices = self.indices(first_step, num_steps)
        started = time.monotonic()
        first = num_steps not in self.compiled
        with memory_check(self.config, "the training step"):
            if first:
                jitted = step.jit_train_steps(self.update, self.mesh)
                self.compiled[num_steps] = step.compile_lowered(jitted.lower(gan_state, self.dataset, indices))
                seconds = time.monotonic() - started
                logging.info("Compiled the train step (%d per dispatch) in %.1f s.", num_steps, seconds)
            compile_s = time.monotonic() - started
            new_state, metrics = self.compiled[num_steps](gan_state, self.dataset, indices)
            if first:  # Memory that does not fit fails at a program's first run: here, not at a later read.
                jax.block_until_ready(new_state.step)
        return new_state, metrics, compile_s


def cluster_labels(images: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
    """``dataset.labels=clusters``: the images' balanced k-means clusters replace their labels."""
    started = time.monotonic()
    labels = clusters.balanced_kmeans(images, config.model.num_classes, config.seed)
    sizes, seconds = np.bincount(labels, minlength=config.model.num_classes), time.monotonic() - started
    found = f"{len(sizes)} balanced k-means clusters of the {len(images)} training images' pixels (no labels read)"
    logging.info("Labels: %s, %d to %d images each, found in %.1f s.", found, sizes.min(), sizes.max(), seconds)
    return labels


def assemble(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Run:
    """The run of a validated ``config``: its data loaded and put on the devices, its networks built."""
    config = config_lib.resolved(config)
    mesh = mesh or parallel.make_mesh()
    check_batch_size(config.train.batch_size, mesh)
    images, labels = data.load_dataset(config.dataset, config.seed)
    try:
        models.num_resolution_steps(images.shape[1])
    except ValueError as e:
        raise config_lib.ConfigError(f"dataset {config.dataset.name}: {e}") from e
    if config.dataset.labels == "clusters" and config.model.num_classes:
        if config.model.num_classes > len(images):
            raise config_lib.ConfigError(
                f"--config.model.num_classes={config.model.num_classes} clusters of {len(images)} images: "
                f"at most one cluster per image; use --config.model.num_classes={min(20, len(images))} or fewer"
            )
        labels = cluster_labels(images, config)
    check_labels(config, labels)
    batches = data.BatchOrder(images, config.train.batch_size, config.seed, labels)
    nets = models.build(config.model, tuple(images.shape[1:]), config.train.compute_dtype)
    with memory_check(config, "the dataset"):
        dataset = step.put_on_devices(images, batches.labels, mesh)
    return Run(config, mesh, images, batches, dataset, nets, step.make_update(nets, config))


def log_setup(run: Run) -> None:
    config, mesh, batch = run.config, run.mesh, run.config.train.batch_size
    data_line = f"{config.dataset.name}/{config.dataset.split}, {len(run.images)} images of shape {run.image_shape}"
    devices = (
        f"{mesh.size} ({jax.devices()[0].platform}), {batch // mesh.size} images each per step (global batch {batch})"
    )
    where = f"process {jax.process_index()} of {jax.process_count()}"
    logging.info("Data: %s. Devices: %s; %s.", data_line, devices, where)
    if config.dataset.name not in config_lib.EVAL_DATASETS:
        logging.info(
            "No built-in evaluation for %s during training (its classifiers know the 28x28 grey datasets); "
            "score the checkpoints with python -m dcgan_jax.evaluation --workdir=RUN --feature_network=inception.",
            config.dataset.name,
        )
