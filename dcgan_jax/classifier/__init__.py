"""``python -m dcgan_jax.classifier``: the command only (the code is
dcgan_jax/evaluation/classifier.py)."""
