"""DCGAN (Radford et al. 2016) on Fashion-MNIST, the project's main job.

G trains on the fake batch of D's update (``train.reuse_fake``, as the PyTorch DCGAN example
does): the lowest FID of a sweep over loss x EMA x reuse_fake at equal wall clock
(benchmarks/sweeps/fashion_default_150s/results.md), since it fits more steps in the same time.
"""

from dcgan_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset.name = "fashion_mnist"
    config.train.reuse_fake = True
    return config
