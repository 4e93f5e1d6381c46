"""fashion_dcgan at the DCGAN paper's widths and Lucic et al.'s budget (15,600 generator steps at
batch 64): the unsupervised model for the published Fashion-MNIST table, where the steps are fixed
and the time is not. Reads no label (self-conditioned on 20 pixel clusters, as fashion_dcgan).

    DCGAN_JAX_DATA_DIR=../shared/data python launch.py --experiment=fashion_dcgan_lucic

Width 64 halved the classifier FID of width 32 at 6,000 steps, 2 seeds (8.6 +- 0.5 against
16.7 +- 0.2, recall 0.62 against 0.56: benchmarks/sweeps/fashion_6000_width); it is 2.5x slower a
step on the CPU, so the 10-minute main job, fashion_dcgan, keeps width 32. Its Inception FID in
Lucic et al.'s protocol is issue 39's open measurement (benchmarks/quality/lucic.md).
"""

from pathlib import Path

from dcgan_jax.run.cli import load_experiment


def get_config():
    config = load_experiment("fashion_dcgan", Path(__file__).parent)  # One place for the rest.
    config.model.base_width = 64
    config.train.num_steps = 15_600
    return config
