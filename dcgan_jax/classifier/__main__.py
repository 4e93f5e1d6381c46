"""``python -m dcgan_jax.classifier [--config.dataset.name=mnist] [--config.FIELD=VALUE ...]``:
trains the evaluation's classifier of a dataset and writes its weights to ``--config.output_dir``
(the shipped ones only where none are yet)."""

from pathlib import Path

from absl import flags

from dcgan_jax.evaluation import classifier
from dcgan_jax.run import cli, control

cli.define_config(classifier.default_config(), "The classifier's config; --config.FIELD=VALUE.")


def main(argv: list[str]) -> None:
    config = flags.FLAGS.config
    if config.output_dir:  # Before the training, so none of it is lost.
        control.check_writable_folder(Path(config.output_dir), "--config.output_dir")
    classifier.train_classifier(config, config.output_dir or None)


if __name__ == "__main__":
    cli.run(main)
