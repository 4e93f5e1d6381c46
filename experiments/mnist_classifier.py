"""The evaluation's feature network for MNIST. Where only the 10,000-image test split is at
hand (as on our CPU machine), train with --config.dataset.split=test: its last
--config.holdout images are then held out for the accuracy."""

from dcgan_jax.classifier_config import classifier_config


def get_config():
    return classifier_config("mnist")
