"""DCGAN on CelebA faces, centre-cropped and resized to 64x64 colour, the size of the DCGAN paper
(through TFDS; one more upsampling block than the 32x32 model). No built-in evaluation: FID with
Inception features needs weights this package does not download (see the README)."""

from dcgan_jax.gan.config import default_config


def get_config():
    config = default_config()
    config.dataset.name = "celeb_a"
    config.dataset.image_size = 64
    config.eval.every = 0
    return config
