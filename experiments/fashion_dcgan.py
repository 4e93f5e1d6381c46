"""DCGAN (Radford et al. 2016) on Fashion-MNIST, the project's main job."""

from dcgan_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset.name = "fashion_mnist"
    return config
