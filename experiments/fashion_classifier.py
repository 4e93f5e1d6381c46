"""The evaluation's feature network for Fashion-MNIST (its weights ship in dcgan_jax/assets/)."""

from dcgan_jax.classifier_config import classifier_config


def get_config():
    return classifier_config("fashion_mnist")
