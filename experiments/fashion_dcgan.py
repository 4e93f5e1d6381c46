"""DCGAN (Radford et al. 2016) on Fashion-MNIST, the project's main job: an unsupervised generator
of garments from noise, as in the Keras, PyTorch and TensorFlow DCGAN recipes.

    DCGAN_JAX_DATA_DIR=../shared/data python launch.py --experiment=fashion_dcgan

Self-conditioned (``dataset.labels=clusters``, ``model.num_classes=20``): before training, the
60,000 images' pixels are split into 20 equal k-means clusters, without reading a label, and G and D
are conditioned on the cluster as a conditional DCGAN is on the class (dcgan_jax/clusters.py). An
unconditional G must map one connected latent space onto garments that lie apart and draws hybrids
between them; with a cluster each, FID fell from 45.8 to 12.2 and precision rose from 0.531
to 0.714 at 10 minutes, 2 seeds each; 10 clusters: the same FID, less precision and recall
(benchmarks/sweeps/fashion_600s_clusters). ``--config.model.num_classes=0`` is the plain DCGAN.

Adam at 3e-4 for both networks rather than the paper's 2e-4: FID 12.3 -> 7.3, precision 0.714 ->
0.746, recall 0.568 -> 0.556 at 10 minutes, 2 seeds each; 4e-4 read the same FID with 0.03 less
recall, and 5e-4 and above drop recall below 0.5 (benchmarks/sweeps/fashion_600s_lr).

Half the paper's widths (``model.base_width=32``): 2.6x the steps in 10 minutes on the CPU and FID
45.8 against 72.3 at 64 (benchmarks/sweeps/fashion_600s_issue18). An EMA of G's weights
(``train.ema_decay=0.99``, benchmarks/sweeps/fashion_600s), sampled with BatchNorm statistics
measured for the EMA weights (``train.recompute_bn``, benchmarks/sweeps/fashion_600s_issue18). G
trains on the fake batch of D's update (``train.reuse_fake``, as the PyTorch DCGAN example does,
benchmarks/sweeps/fashion_default_150s). The class-conditional model, given the labels, is
``fashion_cdcgan``.
"""

from dcgan_jax.config import default_config


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
