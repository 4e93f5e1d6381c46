"""``python -m dcgan_jax.analysis``: the command only (the code is dcgan_jax/tools/analysis.py)."""
