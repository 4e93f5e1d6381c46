"""DCGAN on CIFAR-10 (32x32 colour, through TFDS). No built-in evaluation: FID with Inception
features needs weights this package does not download (see the README); judge the sample grids."""

from dcgan_jax.gan.config import default_config


def get_config():
    config = default_config()
    config.dataset.name = "cifar10"
    config.eval.every = 0
    return config
