"""``python -m dcgan_jax.classifier [--config.dataset.name=mnist] [--config.FIELD=VALUE ...]``:
trains the evaluation's classifier of a dataset and writes its weights (by default the shipped
ones)."""

from absl import flags
from ml_collections import config_flags

from dcgan_jax.evaluation import classifier
from dcgan_jax.run import cli

config_flags.DEFINE_config_dict(
    "config", classifier.default_config(), "The classifier's config; --config.FIELD=VALUE."
)


def main(argv: list[str]) -> None:
    config = flags.FLAGS.config
    classifier.train_classifier(config, config.output_dir or None)


if __name__ == "__main__":
    cli.run(main)
