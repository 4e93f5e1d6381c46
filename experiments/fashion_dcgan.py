"""DCGAN (Radford et al. 2016) on Fashion-MNIST, the project's main job: an unsupervised generator
of garments from noise, as in the Keras, PyTorch and TensorFlow DCGAN recipes.

    DCGAN_JAX_DATA_DIR=../shared/data python launch.py --experiment=fashion_dcgan

Self-conditioned (``dataset.labels=clusters``): G and D are conditioned on which of 20 equal k-means
clusters of the training images' pixels an image falls in, found at start-up without reading a label
(dcgan_jax/gan/clusters.py), so G need not morph one garment into another between modes;
``--config.model.num_classes=0`` is the plain DCGAN. Half the paper's widths, Adam at 3e-4, an EMA
of G's weights sampled with BatchNorm statistics measured for them, and G trained on D's fake batch.
Each choice won a 10-minute, 2-seed sweep: benchmarks/sweeps/fashion_600s_clusters, fashion_600s_lr,
fashion_600s_issue18, fashion_600s and fashion_default_150s; the class-conditional model, given the
labels, is ``fashion_cdcgan``.
"""

from dcgan_jax.gan.config import default_config


def get_config():
    config = default_config()
    config.dataset.name = "fashion_mnist"
    config.dataset.labels = "clusters"
    config.model.num_classes = 20
    config.model.base_width = 32
    config.optimizer.learning_rate = 3e-4
    config.train.ema_decay = 0.99
    config.train.recompute_bn = True
    config.train.reuse_fake = True
    return config
