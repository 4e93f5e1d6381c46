"""fashion_dcgan at the DCGAN paper's widths and Lucic et al.'s budget (15,600 generator steps at
batch 64): the unsupervised model for the published Fashion-MNIST table, where the steps are fixed
and the time is not. Reads no label (self-conditioned on 20 pixel clusters, as fashion_dcgan).

    DCGAN_JAX_DATA_DIR=../shared/data python launch.py --experiment=fashion_dcgan_lucic

Width 64 won the 6,000-step screen against width 32 on classifier FID and recall, 2 seeds
(benchmarks/sweeps/fashion_6000_width); a step costs about 2.5x as much on the CPU, so the
10-minute main job, fashion_dcgan, keeps width 32. Its scores in the protocol:
benchmarks/quality/lucic.md, where its best row samples with ``dcgan_jax.load(run, average=3)``: G's
weights averaged over the last three checkpoints (steps 14,000, 15,000 and 15,600), no further
training (benchmarks/sweeps/lucic_15600_sampling).
"""

from pathlib import Path

from dcgan_jax.run.cli import load_experiment


def get_config():
    config = load_experiment("fashion_dcgan", Path(__file__).parent)  # One place for the rest.
    config.model.base_width = 64
    config.train.num_steps = 15_600
    return config
