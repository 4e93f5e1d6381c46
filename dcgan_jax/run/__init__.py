"""The run harness: what keeps a training run alive on real machines, around the GAN's loop. The
checks before a run starts (memory, a registered loss's shapes), the workdir lock, stop signals
agreed on by every process, checkpoints with SHA-256 hashes and the set-aside fallback, resume
checks, learning-rate records, divergence recovery, disk-full handling, status, log and metrics
writers, sample grids, the command-line conventions and jax.distributed start-up. It imports the
GAN and evaluation, never tools or commands."""
