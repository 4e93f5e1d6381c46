"""Scores trained runs twice, with the BatchNorm statistics their checkpoint stores and with
statistics measured for the sampling weights (``train.recompute_bn``), everything else equal:

    DCGAN_JAX_DATA_DIR=../shared/data python benchmarks/recompute_bn.py RUN_DIR [RUN_DIR ...]

The lever changes no training, so one set of runs answers it: each run's newest checkpoint, its
in-training evaluation draw (``eval.num_samples`` latents), scored as the in-training evaluation
scores it. Prints a Markdown table, one row per run and setting.
"""

from __future__ import annotations

import sys

import dcgan_jax
from dcgan_jax import evaluation

COLUMNS = ("fid", "precision", "recall", "density", "coverage", "classes_covered")


def score(workdir: str, recompute_bn: bool) -> dict:
    run = dcgan_jax.load(workdir, recompute_bn=recompute_bn)
    samples, labels = run.evaluation_samples()
    return {
        "step": run.step,
        "ema": run.ema,
        **evaluation.evaluator_for(run.config)(samples, labels=labels),
    }


def main(workdirs: list[str]) -> None:
    print("| run | step | EMA | BatchNorm statistics | " + " | ".join(COLUMNS) + " |")
    print("|---" * (4 + len(COLUMNS)) + "|")
    for workdir in workdirs:
        for recompute_bn, name in (
            (False, "stored (raw G's running averages)"),
            (True, "recomputed"),
        ):
            s = score(workdir, recompute_bn)
            values = " | ".join(
                f"{s[c]:.3f}" if isinstance(s[c], float) else str(s[c]) for c in COLUMNS
            )
            print(f"| {workdir} | {s['step']} | {s['ema']} | {name} | {values} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
