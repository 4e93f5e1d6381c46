"""dcgan_jax: DCGANs in JAX/Flax, data-parallel, with Orbax checkpoints that reload for analysis."""

from dcgan_jax.config import default_config
from dcgan_jax.evaluation import evaluate, features
from dcgan_jax.loop import train, train_and_evaluate
from dcgan_jax.trained import TrainedGenerator, load

__all__ = ["TrainedGenerator", "default_config", "evaluate", "features", "load", "train", "train_and_evaluate"]
