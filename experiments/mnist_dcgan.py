"""DCGAN on MNIST, unsupervised, with fashion_dcgan's settings (self-conditioned on 20 k-means
clusters of the pixels, found without labels; ``--config.model.num_classes=0`` for the plain DCGAN).
Offline here only the 10k test split exists: add --config.dataset.split=test.

    DCGAN_JAX_DATA_DIR=../shared/data python launch.py --experiment=mnist_dcgan --config.dataset.split=test
"""

from dcgan_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset.name = "mnist"
    config.dataset.labels = "clusters"
    config.model.num_classes = 20
    config.model.base_width = 32
    config.train.ema_decay = 0.99
    config.train.recompute_bn = True
    config.train.reuse_fake = True
    return config
