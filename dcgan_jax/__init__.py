"""dcgan_jax: DCGANs in JAX/Flax, data-parallel, with Orbax checkpoints that reload for analysis."""

from dcgan_jax.analysis import TrainedGenerator, load
from dcgan_jax.config import default_config
from dcgan_jax.evaluation import evaluate
from dcgan_jax.train import train

__all__ = ["TrainedGenerator", "default_config", "evaluate", "load", "train"]
