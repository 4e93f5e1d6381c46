"""DCGAN (Radford et al. 2016) on Fashion-MNIST, the project's main job.

Class-conditional (``model.num_classes=10``: z times a label embedding into G, a projection D)
with an EMA of G's weights (``train.ema_decay=0.99``), chosen by a 10-minute sweep over
conditioning x EMA (benchmarks/sweeps/fashion_600s): FID 29-34 against 88-89 unconditional, and
the EMA adds 0.03 precision at equal FID. ``--config.model.num_classes=0`` is Radford's
unconditional DCGAN. G trains on the fake batch of D's update (``train.reuse_fake``, as the
PyTorch DCGAN example does), chosen by an earlier sweep (benchmarks/sweeps/fashion_default_150s)
since it fits more steps in the same time.
"""

from dcgan_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset.name = "fashion_mnist"
    config.model.num_classes = 10
    config.train.ema_decay = 0.99
    config.train.reuse_fake = True
    return config
