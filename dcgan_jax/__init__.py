"""dcgan_jax: DCGANs in JAX/Flax, data-parallel, with Orbax checkpoints that reload for analysis.

The package's face: ``train(config, workdir)``, ``load(workdir)``, ``evaluate`` and ``features``.
Inside, four folders, each importing only those below it: ``gan/`` (the GAN), ``evaluation/``,
``run/`` (the harness that keeps a run alive) and ``tools/``; the commands (``launch.py`` and the
``__main__.py`` files) sit on top."""

from dcgan_jax.evaluation import evaluate, features
from dcgan_jax.gan.config import default_config
from dcgan_jax.run.train import train_and_evaluate
from dcgan_jax.tools.trained import TrainedGenerator, load

train = train_and_evaluate  # dcgan_jax.train(config, workdir)

__all__ = [
    "TrainedGenerator",
    "default_config",
    "evaluate",
    "features",
    "load",
    "train",
    "train_and_evaluate",
]
