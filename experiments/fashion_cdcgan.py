"""Class-conditional DCGAN on Fashion-MNIST: a label embedding into G and a projection
discriminator (Miyato & Koyama 2018). Sample grids show one row per class, and the evaluation
reports how often the classifier agrees with the requested class. ``fashion_dcgan`` is this plus an
EMA of G's weights (``train.ema_decay=0.99``), since the sweep in benchmarks/sweeps/fashion_600s."""

from dcgan_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset.name = "fashion_mnist"
    config.model.num_classes = 10
    config.train.reuse_fake = True  # As fashion_dcgan.
    return config
