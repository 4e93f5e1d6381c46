"""Tools around trained runs: reloading a generator (``load``), scoring a run's checkpoints, sweeps
and SLURM job arrays, analysis pictures. They may import every other part of dcgan_jax; nothing
but commands imports them."""
