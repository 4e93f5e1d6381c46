"""DCGAN on MNIST. Offline here only the 10k test split exists: add --config.dataset.split=test."""

from dcgan_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset.name = "mnist"
    return config
