"""Config of the evaluation's classifier experiments (``experiments/*_classifier.py``)."""

import ml_collections


def classifier_config(dataset: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = "classifier"  # launch.py trains the classifier rather than a GAN.
    config.seed = 0
    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = dataset
    config.dataset.data_dir = ""  # As for the GANs: empty means $DCGAN_JAX_DATA_DIR/<name>, else TFDS.
    config.dataset.split = "train"
    config.dataset.image_size = 0  # The MNISTs keep their 28x28.
    config.eval_split = "test"
    config.holdout = 2000  # Images held out of the training split when it is also the eval split.
    config.batch_size = 128
    config.num_epochs = 8
    config.learning_rate = 1e-3
    config.output_dir = ""  # Empty: dcgan_jax/assets/classifiers/<dataset>, the weights the evaluation uses.
    return config
