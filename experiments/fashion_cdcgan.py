"""Class-conditional DCGAN on Fashion-MNIST: a label embedding into G and a projection
discriminator (Miyato & Koyama 2018), given the labels that the unsupervised ``fashion_dcgan`` is
not. The evaluation reports how often the classifier agrees with the requested class.

    DCGAN_JAX_DATA_DIR=../shared/data python launch.py --experiment=fashion_cdcgan

fashion_dcgan's width, EMA and recomputed BatchNorm statistics, chosen by 10-minute sweeps
(benchmarks/sweeps/fashion_600s, fashion_600s_clusters); Adam stays at 2e-4
(benchmarks/sweeps/fashion_cdcgan_600s_lr).
"""

from dcgan_jax.gan.config import default_config


def get_config():
    config = default_config()
    config.dataset.name = "fashion_mnist"
    config.model.num_classes = 10
    config.model.base_width = 32
    config.train.recompute_bn = True
    config.train.ema_decay = 0.99
    config.train.reuse_fake = True
    return config
