"""``python -m dcgan_jax.sweep``: the command only (the code is dcgan_jax/tools/sweep.py)."""
