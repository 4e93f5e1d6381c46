"""DCGAN on MNIST, unsupervised: fashion_dcgan's config on MNIST's images (self-conditioned on 20
k-means clusters of the pixels, found without labels; ``--config.model.num_classes=0`` for the plain
DCGAN). Offline here only the 10k test split exists: add --config.dataset.split=test.

    export DCGAN_JAX_DATA_DIR=../shared/data
    python launch.py --experiment=mnist_dcgan --config.dataset.split=test
"""

from pathlib import Path

from dcgan_jax.run.cli import load_experiment


def get_config():
    config = load_experiment("fashion_dcgan", Path(__file__).parent)  # One place for the settings.
    config.dataset.name = "mnist"
    return config
