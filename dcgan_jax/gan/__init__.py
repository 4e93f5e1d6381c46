"""The GAN: config defaults and their checks, data (a registry of datasets), G and D and their
convolutions, losses (a registry), augmentation, random streams and sampling, the training state,
the adversarial step, and the training loop. It imports nothing of dcgan_jax outside this folder:
the run harness, evaluation and tools build on it, never the other way round.

The errors a command reports as one ``error:`` line live here, at the bottom of the house, so that
every layer can raise them."""


class RunError(Exception):
    """The base of the errors a command reports as one ``error:`` line (exit 2), not a traceback: a
    bad flag, dataset or checkpoint, a locked workdir, a run that diverged. Each names what to fix.
    """


class ConfigError(RunError, ValueError):
    """A config value that cannot work; the message names the flag to fix."""
