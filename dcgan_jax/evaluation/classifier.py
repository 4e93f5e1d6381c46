"""The evaluation's default feature network: the penultimate layer of a small CNN classifier trained
on the dataset itself (as usual for 28x28 grey datasets). Its weights ship in
``dcgan_jax/assets/classifiers/<dataset>/``; ``python -m dcgan_jax.classifier`` reproduces them."""

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from dcgan_jax.evaluation import references
from dcgan_jax.gan import ConfigError, RunError, data, sampling
from dcgan_jax.gan.config import SPLITS, flatten

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "classifiers"
NUM_CLASSES = 10
FEATURE_DIM = 128
COMMAND = "python -m dcgan_jax.classifier --config.dataset.name={}"


def default_config(dataset: str = "fashion_mnist") -> ml_collections.ConfigDict:
    """The classifier's training config; every field a ``--config.FIELD`` flag of the command."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    # As for the GANs (data_dir "": $DCGAN_JAX_DATA_DIR/<name>, else TFDS); MNIST here has only its
    # test split.
    config.dataset = ml_collections.ConfigDict(
        {"name": dataset, "data_dir": "", "split": "train", "image_size": 0}
    )
    config.eval_split = "test"
    config.holdout = 2000  # Images held out of the training split when it is also the eval split.
    config.batch_size = 128
    config.num_epochs = 8
    config.learning_rate = 1e-3
    # Empty: dcgan_jax/assets/classifiers/<dataset>, the evaluation's, where it has none yet.
    config.output_dir = ""
    return config


def check_config(config: ml_collections.ConfigDict) -> None:
    """A ConfigError naming the flag of the first value the training cannot take."""
    if config.dataset.name not in datasets():
        choices = ", ".join(datasets())
        raise ConfigError(f"--config.dataset.name={config.dataset.name!r}: one of {choices}")
    flat = flatten(config)
    for field in ("dataset.split", "eval_split"):
        if flat[field] not in SPLITS:
            raise ConfigError(f"--config.{field}={flat[field]!r}: one of {', '.join(SPLITS)}")
    for field in ("batch_size", "num_epochs", "learning_rate"):
        if not 0 < flat[field] < float("inf"):  # NaN too.
            raise ConfigError(f"--config.{field}={flat[field]}: must be a finite number > 0")
    if not 0 <= config.seed <= sampling.MAX_SEED:
        raise ConfigError(f"--config.seed={config.seed}: must be in 0 .. {sampling.MAX_SEED}")
    # Fields read only sometimes: set where they are not, they would change nothing.
    if config.dataset.image_size:
        raise ConfigError(
            f"--config.dataset.image_size={config.dataset.image_size}: {config.dataset.name} "
            "keeps its 28x28 images; set 0"
        )
    if config.holdout != default_config().holdout and config.dataset.split != config.eval_split:
        raise ConfigError(
            f"--config.holdout={config.holdout} changes nothing: the images are held out of the "
            "training split only when it is also --config.eval_split"
        )


class ClassifierMissingError(RunError, FileNotFoundError):
    """No trained weights for a dataset; the message says how to train them."""


class Classifier(nn.Module):
    """conv32 - pool - conv64 - pool - dense128 (the features) - logits: small enough to score
    10,000 images in seconds on a CPU."""

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.Conv(32, (3, 3))(images))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        features = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape(x.shape[0], -1)))
        logits = nn.Dense(NUM_CLASSES)(nn.Dropout(0.3, deterministic=not train)(features))
        return features, logits


def datasets() -> list[str]:
    """The registered datasets scored by a classifier of their own (data.Dataset.scored_by)."""
    return [name for name in data.DATASETS if data.scored_by(name) == "classifier"]


def weights_dir(dataset: str) -> Path:
    return ASSETS_DIR / dataset


def load_params(dataset: str) -> tuple[Any, dict]:
    """(params, info) of the shipped classifier; ``info`` holds its test accuracy and a weights
    hash."""
    folder = weights_dir(dataset)
    if not (folder / "params").is_dir():
        how = f"train them with: {COMMAND.format(dataset)} (a few minutes on a CPU)"
        how = how if dataset in datasets() else f"the evaluation supports {', '.join(datasets())}"
        raise ClassifierMissingError(f"no classifier weights for {dataset!r} at {folder}; {how}")
    # Here, not on the saver's CPU.
    target = Classifier().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(folder / "params", target)
    return params, json.loads((folder / "info.json").read_text())


def params_hash(params: Any) -> str:
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:16]


@jax.jit
def _features_and_probs_batch(params: Any, batch: jax.Array) -> tuple[jax.Array, jax.Array]:
    # Parameters as an argument, not a closure constant: one program serves every set of weights.
    features, logits = Classifier().apply({"params": params}, batch)
    return features, jax.nn.softmax(logits)


def make_apply(params: Any, batch_size: int = 1000):
    """``features_and_probs(images)`` -> (features (N, 128), class probabilities (N, 10)) as NumPy,
    in fixed-size batches: bounded memory, one program for any N."""

    def batch_features(batch):  # A real split's uint8 pixels converted a batch at a time.
        return _features_and_probs_batch(params, references.model_range(batch))

    def features_and_probs(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return references.in_batches(batch_features, images, batch_size, "Classifier features")

    return features_and_probs


def _split(config):
    """(train images, train labels, eval images, eval labels), in [-1, 1]."""
    images, labels = data.load_dataset(config.dataset, config.seed)
    if config.dataset.split != config.eval_split:
        eval_config = ml_collections.ConfigDict({**config.dataset, "split": config.eval_split})
        eval_images, eval_labels = data.load_dataset(eval_config, config.seed)
    else:  # One split only (MNIST here): hold out its end.
        holdout = config.holdout
        if not 0 < holdout < len(images):
            raise ConfigError(f"--config.holdout={holdout}: must be in (0, {len(images)})")
        eval_images, eval_labels = images[-holdout:], labels[-holdout:]
        images, labels = images[:-holdout], labels[:-holdout]
    return data.to_model_range(images), labels, data.to_model_range(eval_images), eval_labels


def accuracy(params: Any, images: np.ndarray, labels: np.ndarray) -> float:
    _, probs = make_apply(params)(images)
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def train_classifier(
    config: ml_collections.ConfigDict, output_dir: str | Path | None = None
) -> float:
    """Trains the classifier, writes its weights and info to ``output_dir`` (default: the shipped
    assets folder, where none are yet: those every FID is measured with are replaced only by
    naming their folder) and returns its held-out accuracy."""
    check_config(config)
    name = config.dataset.name
    if not output_dir and (weights_dir(name) / "params").exists():  # "" as None: the default.
        raise ConfigError(
            f"{weights_dir(name)} holds the shipped weights every {name} score is measured with: "
            "write new ones elsewhere with --config.output_dir=DIR (output_dir in Python), or name "
            "that folder to replace them"
        )
    train_images, train_labels, eval_images, eval_labels = _split(config)
    logging.info("Classifier on %s: %d training images.", name, len(train_images))
    logging.info("Held out: %d images.", len(eval_images))
    model = Classifier()
    key = jax.random.key(config.seed)
    optimizer = optax.adam(config.learning_rate)
    params = model.init(key, jnp.zeros((1, *train_images.shape[1:])))["params"]
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, images, labels, key):
        def loss_fn(params):
            _, logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    batches = data.BatchOrder(train_images, config.batch_size, config.seed)
    started = time.monotonic()
    for i in range(config.num_epochs * batches.batches_per_epoch):
        rows = batches.indices(i)
        batch_key = jax.random.fold_in(key, i)
        params, opt_state, loss = step(
            params, opt_state, train_images[rows], train_labels[rows], batch_key
        )
        if (i + 1) % batches.batches_per_epoch == 0:
            held_out = 100 * accuracy(params, eval_images, eval_labels)
            seconds = time.monotonic() - started
            epoch = f"epoch {(i + 1) // batches.batches_per_epoch}/{config.num_epochs}"
            logging.info(
                "%s: loss %.4f, held-out accuracy %.2f%% (%.0f s)", epoch, loss, held_out, seconds
            )
    final = accuracy(params, eval_images, eval_labels)
    _write_weights(
        Path(output_dir).expanduser() if output_dir else weights_dir(name), params, config, final
    )
    return final


def _write_weights(output_dir, params, config, accuracy_):
    """The weights and ``info.json`` (accuracy, held-out split, hash, config, command)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    ocp.PyTreeCheckpointer().save((output_dir / "params").absolute(), params, force=True)
    heldout = f"last {config.holdout} images of the {config.dataset.split} split"
    if config.dataset.split != config.eval_split:
        heldout = f"{config.eval_split} split"
    info = {
        "dataset": config.dataset.name,
        "heldout_accuracy": accuracy_,
        "heldout": heldout,
        "params_hash": params_hash(params),
        "config": json.loads(config.to_json()),
        "command": COMMAND.format(config.dataset.name),
    }
    (output_dir / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    logging.info("Held-out accuracy %.2f%%; weights in %s", 100 * accuracy_, output_dir)
