"""Our JAX Inception against the original: NVIDIA's TorchScript file run by torch, on the same
images.

    DCGAN_JAX_DATA_DIR=../shared/data python benchmarks/inception_parity.py \\
        --torch_python=/tmp/torch-ref/bin/python --generated=RUN_OR_NPZ [--num=1000] \\
        [--out=benchmarks/inception_parity.md] [--write_fixture=tests/data/inception_features.npz]

``--num`` real Fashion-MNIST test images and ``--num`` generated ones (a run folder:
``load().sample``; or an ``.npz`` of uint8 ``images``), each side's pool3 features, the largest
feature difference relative to the largest feature, and the FID between the two sets by each side's
features. ``--write_fixture`` also writes the small fixture the suite checks our features against
without torch (tests/test_inception.py): a few real, generated and colour images and torch's
features.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

import dcgan_jax
from dcgan_jax import evaluation
from dcgan_jax.evaluation import inception, metrics
from dcgan_jax.gan import data

REPO = Path(__file__).resolve().parent.parent
flags.DEFINE_string("torch_python", None, "Python of an environment with torch.", required=True)
flags.DEFINE_string("generated", None, "A run folder, or an .npz of uint8 images.", required=True)
flags.DEFINE_integer("num", 1000, "Images of each kind.")
flags.DEFINE_string("out", str(REPO / "benchmarks" / "inception_parity.md"), "The report.")
flags.DEFINE_string("write_fixture", None, "Also write the suite's fixture here.")
FLAGS = flags.FLAGS


def generated_images(num: int) -> np.ndarray:
    path = Path(FLAGS.generated)
    if path.is_dir():
        return data.to_uint8(dcgan_jax.load(path).sample(num, seed=0))
    pixels = np.load(path)["images"][:num]
    return pixels[..., None] if pixels.ndim == 3 else pixels


def torch_features(images: np.ndarray) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        np.savez(Path(folder) / "images.npz", images=images)
        script = REPO / "benchmarks" / "inception_torch.py"
        command = [
            FLAGS.torch_python,
            str(script),
            f"{folder}/images.npz",
            str(inception.source_file()),
        ]
        subprocess.run([*command, f"{folder}/features.npy"], check=True)
        return np.load(Path(folder) / "features.npy")


def fixture_images(real: np.ndarray, generated: np.ndarray) -> dict[str, np.ndarray]:
    """Four real and four generated 28x28 grey images, and two 32x32 colour ones (smooth blobs)."""
    rng = np.random.default_rng(0)
    colour = np.stack(
        [np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((8, 8, 1))) for _ in range(2)]
    )
    return {"grey": np.concatenate([real[:4], generated[:4]]), "colour": colour.astype(np.uint8)}


def main(argv):
    config = dcgan_jax.default_config().dataset
    config.update(name="fashion_mnist", split="test")
    real = data.load_dataset(config)[0][: FLAGS.num]
    generated = generated_images(FLAGS.num)
    params, digest = inception.load_params(evaluation.references.default_cache_dir())
    ours_apply = inception.make_apply(params)
    lines = [f"# JAX Inception against torch, {time.strftime('%Y-%m-%d')}", ""]
    lines += [f"`python benchmarks/inception_parity.py {' '.join(sys.argv[1:])}`", ""]
    lines += [
        "| images | largest difference / largest feature | FID (torch) | FID (ours) | relative "
        "FID gap |"
    ]
    lines += ["|---|---|---|---|---|"]
    timings, feats = {}, {}
    for name, images in (("real", real), ("generated", generated)):
        started = time.monotonic()
        ours = ours_apply(images)
        timings[name] = time.monotonic() - started
        theirs = torch_features(images)
        feats[name] = (ours, theirs)
        relative = np.abs(ours - theirs).max() / np.abs(theirs).max()
        lines.append(f"| {len(images)} {name} | {relative:.2e} | | | |")
    fid = [
        metrics.frechet_distance(
            *metrics.mean_and_cov(feats["real"][i]), *metrics.mean_and_cov(feats["generated"][i])
        )
        for i in (1, 0)
    ]
    lines.append(
        f"| FID real vs generated | | {fid[0]:.4f} | {fid[1]:.4f} | "
        f"{abs(fid[1] - fid[0]) / fid[0]:.2e} |"
    )
    rate = 2 * FLAGS.num / sum(timings.values())
    lines += [
        "",
        f"Our features: {rate:.2f} images/s on this machine (compilation included); weights "
        f"digest {digest}.",
        "",
    ]
    Path(FLAGS.out).write_text("\n".join(lines))
    print("\n".join(lines))
    if FLAGS.write_fixture:
        images = fixture_images(real, generated)
        np.savez(
            FLAGS.write_fixture,
            **images,
            **{f"{k}_features": torch_features(v) for k, v in images.items()},
        )


if __name__ == "__main__":
    app.run(main)
