"""Scores finished ``fashion_dcgan_lucic`` runs sampled four ways, classifier features only:

    python benchmarks/sweeps/lucic_15600_sampling/score.py --runs=/tmp/lucic/runs

Each way is a ``dcgan_jax.load`` argument; 10,000 samples as benchmarks/quality.py draws them."""

import json
from pathlib import Path

import numpy as np
from absl import app, flags

import dcgan_jax

flags.DEFINE_string("runs", None, "Folder of fashion_dcgan_lucic_steps15600_seed<S> runs.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the runs.")
WAYS = {
    "EMA, BatchNorm measured (as trained)": {},
    "raw G": {"ema": False},
    "EMA, stored BatchNorm statistics": {"recompute_bn": False},
    "mean of the last 3 checkpoints' EMA": {"average": 3},
}


def main(_):
    rows = []
    for seed in map(int, flags.FLAGS.seeds):
        workdir = Path(flags.FLAGS.runs) / f"fashion_dcgan_lucic_steps15600_seed{seed}"
        for way, kwargs in WAYS.items():
            run = dcgan_jax.load(workdir, **kwargs)
            samples = np.concatenate([run.sample(1000, seed=i) for i in range(10)])
            scores = dcgan_jax.evaluate(samples, dataset="fashion_mnist")
            keep = ("fid", "precision", "recall", "coverage")
            rows.append({"seed": seed, "way": way, **{k: scores[k] for k in keep}})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    app.run(main)
