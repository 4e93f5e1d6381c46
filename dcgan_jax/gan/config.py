"""Run configuration: the defaults every experiment (``experiments/NAME.py``) starts from, and their
validation: an impossible value is a ConfigError naming its ``--config.FIELD`` flag."""

import difflib
import math

import jax
import ml_collections
from flax import traverse_util

from dcgan_jax.gan import ConfigError, augment, convolutions, data, losses, models

# The choices of the config's string fields. Losses and datasets are registries (losses.LOSSES,
# data.DATASETS): a new one registered there, or from a script, is a valid name here.
SPLITS = ("train", "test")


# Every field a run reads, with the DCGAN paper's defaults (each described in
# docs/configuration.md).
_DEFAULTS = {
    "seed": 0,
    "dataset": {
        "name": "fashion_mnist",
        # The four IDX files (.gz or unpacked); "": $DCGAN_JAX_DATA_DIR/<name> if set, else TFDS.
        "data_dir": "",
        "split": "train",
        "num_synthetic": 2048,  # Images in the in-memory synthetic set.
        # celeb_a, image_folder: resized to this a side (0: 64); others keep theirs.
        "image_size": 0,
        # A conditional model's labels: the dataset's, or "clusters" of the pixels.
        "labels": "dataset",
    },
    "model": {
        "latent_dim": 100,
        "base_width": 64,  # Channels of D's first layer; G mirrors D.
        "kernel_size": 4,  # Even overlap of stride-2 layers: fewer checkerboard artifacts than 5.
        "bn_momentum": 0.9,  # Flax convention; PyTorch's momentum=0.1.
        # Variants (experiments/reference_dcgan.py uses them to match the PyTorch reference):
        "g_base_features": 0,  # Channels of G's projected map; 0 = base_width * 2**(steps - 1).
        "g_stride1_layers": 0,  # Stride-1 convolutions at G's base resolution.
        "g_activation": "relu",  # or "leaky_relu" (slope 0.2).
        "g_output_bias": True,
        "d_batch_norm": True,  # BatchNorm on D's layers after the first.
        "d_dropout": 0.0,  # Dropout after each of D's convolutions.
        "spectral_norm": False,  # On D's layers (Miyato et al. 2018).
        # D sees its features' spread over groups of 4 images (Karras et al. 2018).
        "minibatch_std": False,
        # > 0: conditional on dataset.labels (label embedding into G, projection D).
        "num_classes": 0,
        # G's convolutions: auto, direct or fourier (dcgan_jax/convolutions.py).
        "conv_algorithm": "auto",
    },
    "optimizer": {
        "learning_rate": 2e-4,
        # Two time-scale update rule (Heusel et al. 2017): each net's own rate; 0 = learning_rate.
        "g_learning_rate": 0.0,
        "d_learning_rate": 0.0,
        "beta1": 0.5,
        "beta2": 0.999,
    },
    "loss": {
        "name": "bce",  # bce | hinge | lsgan | wgan_gp (see dcgan_jax/losses.py).
        "generator": "non_saturating",  # For bce: or "minimax".
        "gp_weight": 10.0,  # wgan_gp's gradient penalty weight (Gulrajani et al.).
        # bce: D's target for real images 1 - this (Salimans et al. 2016: 0.1).
        "label_smoothing": 0.0,
        "r1_gamma": 0.0,  # R1 penalty on real images, gamma/2 * E||grad D(x)||^2; 0 = off.
        "r1_every": 1,  # Lazy R1: on every k-th step, scaled by k (Karras et al. 2020).
    },
    "eval": {
        "every": 2000,  # FID and more on classifier features; the best checkpoint kept. 0 = off.
        "num_samples": 10_000,
        "split": "test",  # The real images the samples are compared with.
        # Also the Inception FID (of published tables): cheap on a GPU, minutes on a CPU
        # (docs/evaluation.md).
        "inception_fid": False,
    },
    "train": {
        "batch_size": 64,  # Global: split across all devices.
        "num_steps": 10_000,  # Generator updates.
        # Discriminator updates per generator update; 0 = the loss's usual (wgan_gp 5, else 1).
        "d_steps": 0,
        # G trains on D's fake batch (one G pass a step fewer), as PyTorch's example.
        "reuse_fake": False,
        # EMA of G's weights for sampling (Yazici et al. 2019), warmed up; 0 = off.
        "ema_decay": 0.0,
        # G's BatchNorm statistics measured anew for the weights that sample.
        "recompute_bn": False,
        # DiffAugment: color, translation, cutout, joined by "," or "+"; "" = off.
        "diffaugment": "",
        # Top-k G updates (Sinha et al. 2020): share kept times this per epoch; 0 = off.
        "top_k_decay": 0.0,
        "top_k_min": 0.5,
        "compute_dtype": "float32",  # bfloat16: activations and matmuls; parameters stay float32.
        # Steps per call into the device; 0: 10 on accelerators, 1 on the CPU.
        "steps_per_dispatch": 0,
        "max_seconds": 0.0,  # Stop (with a checkpoint) after this wall time; 0 = no limit.
        "log_every": 100,
        "sample_every": 500,
        "checkpoint_every": 1000,
        "keep_checkpoints": 3,
        "num_samples": 64,  # Images in each sample grid (fixed latents).
        "collapse_threshold": 0.2,  # Warn when the grid's diversity falls below this; 0 = no alarm.
        "collapse_warmup": 500,
        # On NaN/inf: stop, or restore the last good checkpoint with lower rates.
        "on_divergence": "stop",
        "divergence_lr_factor": 0.5,
        "max_divergence_restores": 3,
    },
}


def default_config() -> ml_collections.ConfigDict:
    """A fresh copy of the defaults every experiment starts from."""
    return ml_collections.ConfigDict(_DEFAULTS)


def resolved(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy with the "0 = automatic" fields filled in, as the run uses them (and config.json
    shows)."""
    config = ml_collections.ConfigDict(config.to_dict())
    if config.train.d_steps == 0:
        config.train.d_steps = losses.LOSSES[config.loss.name].d_steps
    if config.train.steps_per_dispatch == 0:
        config.train.steps_per_dispatch = 1 if jax.default_backend() == "cpu" else 10
    return config


def conditioned_on_classes(config: ml_collections.ConfigDict) -> bool:
    """Whether G's labels are the dataset's classes: only then can a classifier check that a sample
    is of the class it was asked for (cluster labels are not class indices)."""
    return config.model.num_classes > 0 and config.dataset.labels == "dataset"


def with_defaults(stored: dict | ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A stored config (a checkpoint's) with the fields added since it was written at their
    defaults."""
    config = default_config()
    config.update(ml_collections.ConfigDict(dict(stored)))
    return config


# What each field may be, checked in this order; a note says what 0 means where it means something.
_CHOICES = {
    "dataset.name": data.DATASETS,
    "dataset.split": SPLITS,
    "dataset.labels": ("dataset", "clusters"),
    "loss.name": losses.LOSSES,
    "loss.generator": losses.GENERATOR_VARIANTS,
    "train.compute_dtype": models.DTYPES,
    "model.conv_algorithm": convolutions.ALGORITHMS,
    "train.on_divergence": ("stop", "restore"),
    "model.g_activation": ("relu", "leaky_relu"),
    "eval.split": SPLITS,
}
_POSITIVE = (
    "dataset.num_synthetic model.latent_dim model.base_width model.kernel_size "
    "optimizer.learning_rate "
    "train.batch_size train.num_steps loss.r1_every train.log_every train.sample_every "
    "train.checkpoint_every "
    "train.keep_checkpoints train.num_samples eval.num_samples train.divergence_lr_factor"
).split()
_NON_NEGATIVE = {
    **dict.fromkeys(
        "loss.gp_weight loss.r1_gamma model.num_classes train.d_steps train.steps_per_dispatch "
        "dataset.image_size "
        "model.g_base_features model.g_stride1_layers train.max_divergence_restores "
        "train.collapse_warmup seed".split(),
        "",
    ),
    "eval.every": " (0 = off)",
    "train.max_seconds": " (0 = no limit)",
}
_UNIT_INTERVAL = {  # [0, 1)
    **dict.fromkeys("train.ema_decay train.top_k_decay loss.label_smoothing".split(), " (0 = off)"),
    **dict.fromkeys(
        ("optimizer.g_learning_rate", "optimizer.d_learning_rate"), " (0 = optimizer.learning_rate)"
    ),
    **dict.fromkeys(
        "model.d_dropout optimizer.beta1 optimizer.beta2 model.bn_momentum "
        "train.divergence_lr_factor".split(),
        "",
    ),
    "train.collapse_threshold": " (0 = no alarm)",
    "optimizer.learning_rate": " (Adam's usual range is 1e-5 to 1e-3)",
}


MAX_EVAL_SAMPLES = 100_000
# The one bound table: far beyond any published setting, a typo whose run would only diverge, or
# exhaust the machine's memory or time before saying anything.
_AT_MOST = {
    "loss.r1_gamma": (10_000, "0.1 to 100 is usual"),
    "loss.gp_weight": (10_000, "10 is usual"),
    "dataset.image_size": (1024, "64 is the DCGAN paper's"),
    "dataset.num_synthetic": (1_000_000, "2048 is the default"),
    "model.kernel_size": (9, "4 or 5 is usual"),
    "model.base_width": (2048, "64 is the DCGAN paper's"),
    "model.latent_dim": (8192, "100 is usual"),
    "model.g_base_features": (16384, "0: from base_width"),
    "model.g_stride1_layers": (16, "0 or 1 is usual"),
    "model.num_classes": (100_000, "10 or 20 is usual"),
    "train.d_steps": (100, "1, or 5 for wgan_gp"),
    "train.steps_per_dispatch": (10_000, "10 on accelerators"),
    "eval.num_samples": (MAX_EVAL_SAMPLES, "10,000 is usual, 50,000 the most in published tables"),
    "train.num_samples": (1024, "64 is the default"),
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for the first impossible value, naming its flag."""
    flat = flatten(config)
    for field, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--config.{field}={value}: must be a finite number")
        if isinstance(value, int) and not -(2**31) <= value < 2**31:
            raise ConfigError(f"--config.{field}={value}: must fit JAX's int32 (below 2**31)")
    for field, (limit, usual) in _AT_MOST.items():
        if (value := flat[field]) > limit:
            raise ConfigError(f"--config.{field}={value}: at most {limit} ({usual})")
    for field, choices in _CHOICES.items():
        if (value := flat[field]) not in choices:
            raise ConfigError(
                f"--config.{field}={value!r}: must be one of {', '.join(choices)}."
                f"{_did_you_mean(value, choices)}"
            )
    for field in _POSITIVE:
        if not (value := flat[field]) > 0:
            raise ConfigError(f"--config.{field}={value}: must be > 0")
    for field, note in _NON_NEGATIVE.items():
        if (value := flat[field]) < 0:
            raise ConfigError(f"--config.{field}={value}: must be >= 0{note}")
    for field, note in _UNIT_INTERVAL.items():
        if not 0.0 <= (value := flat[field]) < 1.0:
            raise ConfigError(f"--config.{field}={value}: must be in [0, 1){note}")
    _check_combinations(config)


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean {close[0]}?" if close else ""


def _check_combinations(config):
    """The rules of training that involve more than one field, or more than a range."""
    policy = config.train.diffaugment
    for name in augment.parse(policy):
        if name not in augment.TRANSFORMS:
            raise ConfigError(
                f"--config.train.diffaugment={policy!r}: {name!r} is not one of "
                f"{', '.join(augment.TRANSFORMS)}.{_did_you_mean(name, augment.TRANSFORMS)}"
            )
    if losses.LOSSES[config.loss.name].penalty and config.model.d_batch_norm:
        raise ConfigError(
            f"--config.loss.name={config.loss.name}: the gradient penalty is per image, and "
            "BatchNorm in D mixes the images of a batch (Gulrajani et al. drop it); add "
            "--config.model.d_batch_norm=false"
        )
    if config.loss.label_smoothing and config.loss.name != "bce":
        raise ConfigError(
            f"--config.loss.label_smoothing={config.loss.label_smoothing}: smooths bce's label "
            f"for real images; --config.loss.name={config.loss.name} has no labels (set "
            "--config.loss.label_smoothing=0)"
        )
    if not 0.0 < config.train.top_k_min <= 1.0:
        raise ConfigError(
            f"--config.train.top_k_min={config.train.top_k_min}: must be in (0, 1], a share of "
            "the batch"
        )
    if config.train.batch_size < 2:
        raise ConfigError(
            f"--config.train.batch_size={config.train.batch_size}: at least 2 (BatchNorm "
            "normalises each feature over the batch: over one image every feature is 0, and G "
            "would draw one image for every z)"
        )
    _check_data_combinations(config)


def _check_data_combinations(config):
    """The rules of the data, its labels and its evaluation."""
    dataset = config.dataset
    if dataset.name == "image_folder" and not dataset.data_dir:
        raise ConfigError(
            "--config.dataset.name=image_folder needs --config.dataset.data_dir=DIR (a folder of "
            "images)"
        )
    if config.eval.every and not data.scored_by(dataset.name):
        scored = ", ".join(name for name in data.DATASETS if data.scored_by(name))
        raise ConfigError(
            f"--config.eval.every={config.eval.every}: the evaluation scores {scored}, "
            f"not {dataset.name}; set --config.eval.every=0"
        )
    if config.eval.every and config.eval.num_samples < 1000:
        raise ConfigError(
            f"--config.eval.num_samples={config.eval.num_samples}: at least 1000 for a stable FID"
        )
    if dataset.labels == "clusters" and config.model.num_classes == 1:
        raise ConfigError(
            "--config.model.num_classes=1 with --config.dataset.labels=clusters: one cluster is "
            "no conditioning; use 2 or more (10 is usual), or 0 for an unconditional model"
        )
    if dataset.name == "synthetic" and dataset.num_synthetic < config.train.batch_size:
        raise ConfigError(
            f"--config.dataset.num_synthetic={dataset.num_synthetic}: "
            f"smaller than one batch (--config.train.batch_size={config.train.batch_size})"
        )


def flatten(config: ml_collections.ConfigDict) -> dict:
    """``{'train.batch_size': 64, ...}``: the dotted names a flag uses."""
    return traverse_util.flatten_dict(config.to_dict(), sep=".")
