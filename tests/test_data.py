import gzip
import struct
import zlib

import numpy as np
import pytest
from conftest import shared_dataset_dir, traced_peak

from dcgan_jax.gan import data
from dcgan_jax.gan.config import default_config


def _write_idx(path, array, magic_dtype=0x08):
    header = struct.pack(">HBB", 0, magic_dtype, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    return tmp_path, images, labels


def test_reads_an_idx_folder(idx_folder):
    folder, images, labels = idx_folder
    read_images, read_labels = data.load_idx_folder(folder, "train")
    assert read_images.shape == (20, 28, 28, 1) and read_images.dtype == np.uint8
    np.testing.assert_array_equal(read_images[..., 0], images)
    np.testing.assert_array_equal(read_labels, labels)


def test_missing_file_is_named(idx_folder):
    folder, _, _ = idx_folder
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz"):
        data.load_idx_folder(folder, "test")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(data.DataError, match="nowhere"):
        data.load_idx_folder(tmp_path / "nowhere", "train")


def test_truncated_file_is_named(idx_folder):
    folder, images, _ = idx_folder
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz.*truncated"):
        data.load_idx_folder(folder, "train")


def test_a_header_promising_more_than_int64_counts_names_the_true_size(tmp_path):
    """The promised size as a Python int: NumPy's int64 product wrapped round to a wrong count."""
    side = 2**32 - 1
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", side, side, side)
    (tmp_path / "images.gz").write_bytes(gzip.compress(header + bytes(10)))
    with pytest.raises(data.DataError, match=rf"\({side**3} bytes\) but the file holds 10 bytes"):
        data.read_idx(tmp_path / "images.gz", expected_ndim=3)


def test_unpacked_idx_files_read_as_the_gzipped_ones(idx_folder):
    """gunzip, torchvision's raw/ folder and Kaggle's copies leave the files without ``.gz``."""
    folder, images, labels = idx_folder
    for packed in folder.glob("*.gz"):
        packed.with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    read_images, read_labels = data.load_idx_folder(folder, "train")
    np.testing.assert_array_equal(read_images[..., 0], images)
    np.testing.assert_array_equal(read_labels, labels)


@pytest.mark.parametrize("raw", [b"", bytes([0, 0, 8, 3, 0, 0])])
def test_an_idx_file_shorter_than_its_header_is_named(tmp_path, raw):
    (tmp_path / "images.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(data.DataError, match=rf"images.gz: bad IDX header .*{len(raw)} bytes"):
        data.read_idx(tmp_path / "images.gz", expected_ndim=3)


def test_truncated_gzip_stream_is_named(idx_folder):
    folder, _, _ = idx_folder
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz.*gzip"):
        data.load_idx_folder(folder, "train")


def test_corrupt_file_is_named(idx_folder):
    folder, _, _ = idx_folder
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte.gz"):
        data.load_idx_folder(folder, "train")


def test_wrong_header_is_named(idx_folder):
    folder, images, _ = idx_folder
    _write_idx(folder / "train-images-idx3-ubyte.gz", images, magic_dtype=0x0D)  # float32 type code
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz: bad IDX header"):
        data.load_idx_folder(folder, "train")


def test_image_and_label_counts_must_agree(idx_folder):
    """Checked for every registered loader's arrays (load_dataset), the IDX files' too."""
    folder, _, labels = idx_folder
    _write_idx(folder / "train-labels-idx1-ubyte.gz", labels[:5])
    config = default_config().dataset
    config.data_dir = str(folder)
    message = r"images uint8 \(20, 28, 28, 1\) and labels uint8 \(5,\), not uint8 images"
    with pytest.raises(data.DataError, match=message):
        data.load_dataset(config)


def test_real_fashion_mnist_files():
    folder = shared_dataset_dir("fashion_mnist")
    images, labels = data.load_idx_folder(folder, "train")
    assert images.shape == (60000, 28, 28, 1) and images.dtype == np.uint8
    assert sorted(np.unique(labels)) == list(range(10))
    test_images, _ = data.load_idx_folder(folder, "test")
    assert test_images.shape == (10000, 28, 28, 1)


def test_a_split_whose_files_are_missing_names_the_files_of_each_split():
    """MNIST here has only its test split: the error says which files the other split reads."""
    message = r"train-images-idx3-ubyte.gz \(dataset.split=train: train-\*; test: t10k-\*\)"
    with pytest.raises(data.DataError, match=message):
        data.load_idx_folder(shared_dataset_dir("mnist"), "train")


def test_data_dir_from_config_or_environment(monkeypatch, tmp_path):
    from dcgan_jax.gan.config import default_config

    dataset = default_config().dataset
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.resolve_data_dir(dataset) is None  # TFDS
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert data.resolve_data_dir(dataset) == tmp_path / "fashion_mnist"
    dataset.data_dir = "/somewhere/else"
    assert str(data.resolve_data_dir(dataset)) == "/somewhere/else"
    dataset.data_dir = ""  # A missing folder from the environment names the variable, not a flag.
    with pytest.raises(
        data.DataError, match=f"{tmp_path}/fashion_mnist is not a folder .*DCGAN_JAX"
    ):
        data.load_dataset(dataset)


def test_tfds_path_with_mock_data(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        images, labels = data.load_tfds("fashion_mnist", "train")
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (12,)


def test_tfds_failure_says_how_to_use_local_files(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve host")

    monkeypatch.setattr(tfds, "data_source", offline)
    with pytest.raises(data.DataError, match=r"--config.dataset.data_dir=.*DCGAN_JAX_DATA_DIR"):
        data.load_tfds("fashion_mnist", "train")
    # CIFAR-10 has no IDX files: its copy on disk is a TFDS data folder (before: "a folder of the
    # four IDX .gz files" only). The evaluation and analysis commands' flag is --data_dir.
    with pytest.raises(data.DataError, match=r"--data_dir.*TFDS data folder with cifar10"):
        data.load_tfds("cifar10", "train")


def test_model_range_round_trip():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    scaled = data.to_model_range(pixels)
    assert scaled.min() == -1.0 and scaled.max() == 1.0 and scaled.dtype == np.float32
    np.testing.assert_array_equal(data.to_uint8(scaled), pixels)


def test_batch_order_is_a_reshuffled_permutation_each_epoch():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    order = data.BatchOrder(images, batch_size=3, seed=7)
    assert order.batches_per_epoch == 3
    epoch0 = np.concatenate([order.indices(i) for i in range(3)])
    epoch1 = np.concatenate([order.indices(i) for i in range(3, 6)])
    assert len(set(epoch0)) == 9 and len(set(epoch1)) == 9
    assert not np.array_equal(epoch0, epoch1)
    # Stateless: asking again, out of order, gives the same batches.
    np.testing.assert_array_equal(order.indices(1), data.BatchOrder(images, 3, seed=7).indices(1))
    assert not np.array_equal(
        epoch0, np.concatenate([data.BatchOrder(images, 3, seed=8).indices(i) for i in range(3)])
    )


def test_dataset_smaller_than_a_batch_is_an_error():
    with pytest.raises(data.DataError, match="fewer than one batch"):
        data.BatchOrder(np.zeros((4, 28, 28, 1), np.uint8), batch_size=8, seed=0)


@pytest.mark.parametrize(
    "name, shape, labelled", [("cifar10", (32, 32, 3), True), ("celeb_a", (64, 64, 3), False)]
)
def test_colour_datasets_through_tfds_mock_data(name, shape, labelled):
    tfds = pytest.importorskip("tensorflow_datasets")
    config = default_config().dataset
    config.name = name
    with tfds.testing.mock_data(num_examples=6):
        images, labels = data.load_dataset(config)
    assert images.shape == (6, *shape) and images.dtype == np.uint8
    assert labels.shape == (6,) and (labels.max() > 0 if labelled else not labels.any())


def _write_pictures(folder, count, mode="RGB", size=(40, 30), suffix=".png"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        Image.fromarray(pixels if channels == 3 else pixels[..., 0], mode).save(
            folder / f"{i}{suffix}"
        )


def test_image_folder_reads_colour_and_grey_recursively_with_subfolder_labels(tmp_path):
    _write_pictures(tmp_path / "cats", 3, "RGB", suffix=".jpg")
    _write_pictures(tmp_path / "dogs" / "deeper", 2, "L")
    images, labels = data.load_image_folder(tmp_path, image_size=32)
    assert images.shape == (5, 32, 32, 3)  # One colour file makes the set colour.
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1]
    grey_only = tmp_path / "dogs"
    images, labels = data.load_image_folder(grey_only, image_size=16)
    assert images.shape == (2, 16, 16, 1) and not labels.any()


def test_image_folder_reads_linked_class_folders_once_and_leaves_hidden_files_out(tmp_path):
    """A class folder linked in from elsewhere is read (it was skipped without a word); a link back
    up does not read its files again; a hidden folder (.ipynb_checkpoints) is not data."""
    _write_pictures(tmp_path / "elsewhere" / "cats", 3, "L")
    _write_pictures(tmp_path / "folder" / "dogs", 2, "L")
    _write_pictures(tmp_path / "folder" / "dogs" / ".ipynb_checkpoints", 4, "L")
    (tmp_path / "folder" / "cats").symlink_to(tmp_path / "elsewhere" / "cats")
    (tmp_path / "folder" / "dogs" / "up").symlink_to(tmp_path / "folder")
    images, labels = data.load_image_folder(tmp_path / "folder", image_size=16)
    assert images.shape == (5, 16, 16, 1) and sorted(labels.tolist()) == [0, 0, 0, 1, 1]


def test_image_folder_turns_photos_by_their_exif_orientation(tmp_path):
    """A phone's photo is stored as shot, with a tag saying how to turn it (6: 90 degrees
    clockwise); it is read as it is seen, not on its side."""
    from PIL import Image

    pixels = np.zeros((16, 16), np.uint8)
    pixels[:4] = 255  # A bright band along the top, as stored.
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation.
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    image = data.load_image_folder(tmp_path, image_size=16)[0][0, ..., 0]
    assert image[:, -4:].mean() > 200 and image[:4, :-4].mean() < 50  # The band on the right.


def test_image_folder_of_grey_pictures_stored_as_palette_or_colour_is_grey(tmp_path):
    """PNG optimisers and GIFs store grey as a palette, scanners as RGB: the set is still grey (one
    channel, not three), the pixels unchanged."""
    from PIL import Image

    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "grey.png")
    Image.fromarray(ramp).convert("P").save(tmp_path / "palette.gif")
    Image.fromarray(ramp).convert("RGB").save(tmp_path / "colour.png")
    images, _ = data.load_image_folder(tmp_path, image_size=16)
    assert images.shape == (3, 16, 16, 1)
    assert all(np.array_equal(image[..., 0], ramp) for image in images)


def test_image_folder_reads_16_bit_grey_at_its_range_and_the_common_formats(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64)  # 16-bit grey: PNG or TIFF.
    Image.fromarray(ramp.astype(np.uint16)).save(tmp_path / "a.png")
    Image.frombytes("I;16B", (64, 64), ramp.astype(">u2").tobytes()).save(tmp_path / "b.tif")
    for suffix in (".webp", ".bmp", ".gif"):
        Image.fromarray(np.uint8(ramp / 257)).save(tmp_path / f"c{suffix}", lossless=True)
    images, _ = data.load_image_folder(tmp_path, image_size=64)
    assert images.shape == (5, 64, 64, 1)  # WebP and GIF store grey as colours: still grey.
    expected = np.round(ramp / 257)[..., None]
    for image in images:  # Before: 16-bit files clipped at 255, nearly all white; others unread.
        assert np.abs(image - expected).max() <= 1


def test_image_folder_without_images_names_the_folder_and_what_it_holds(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(
        data.DataError,
        match=rf"no image files \(.png, .jpg, .*\) under {tmp_path}; it holds 1 other files "
        r"\(notes.txt\)",
    ):
        data.load_image_folder(tmp_path)
    with pytest.raises(data.DataError, match="is not a folder"):
        data.load_image_folder(tmp_path / "missing")


def test_image_folder_skips_a_few_unreadable_files_and_refuses_many(tmp_path, caplog):
    _write_pictures(tmp_path, 20)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with caplog.at_level("WARNING"):
        images, _ = data.load_image_folder(tmp_path, image_size=8)
    assert len(images) == 20
    assert "Skipped 1 of 21 image files" in caplog.text and "broken.png" in caplog.text
    # A header claiming 20000 x 20000 pixels: PIL's DecompressionBombError, not an OSError.
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    bomb = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
    (tmp_path / "bomb.png").write_bytes(bomb)
    images, _ = data.load_image_folder(tmp_path, image_size=8)
    assert len(images) == 20 and "Skipped 2 of 22 image files" in caplog.text
    (tmp_path / "bomb.png").unlink()
    for i in range(3):
        (tmp_path / f"fake{i}.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(
        data.DataError, match=r"4 of 24 image files under .* cannot be read, e.g. .*broken.png"
    ):
        data.load_image_folder(tmp_path)


def test_image_folder_holds_its_images_at_their_training_size_not_the_files(
    tmp_path, monkeypatch, caplog, absl_info
):
    # 20 photos of 400x400 are 9.6 MB of pixels, 3.8 KB at 8x8: a folder of megapixel photos
    # read whole before resizing would not fit in memory. Its reading (minutes) logs progress.
    _write_pictures(tmp_path, 20, size=(400, 400))
    monkeypatch.setattr(data, "READ_PROGRESS_EVERY", 8)
    caplog.set_level("INFO")
    (images, _), peak = traced_peak(lambda: data.load_image_folder(tmp_path, image_size=8))
    assert images.shape == (20, 8, 8, 3)
    assert peak < 5 * 400 * 400 * 3  # A few full-size images (one read, its copies), not 20.
    assert [r.getMessage() for r in caplog.records if "Reading" in r.getMessage()] == [
        f"Reading {tmp_path}: {n} of 20 image files" for n in (8, 16)
    ]


def test_crop_and_resize_takes_the_central_square():
    image = np.zeros((10, 20, 1), np.uint8)
    image[:, 5:15] = 255  # The central 10x10 square is white, the sides black.
    out = data.crop_and_resize(image, 4)
    assert out.shape == (4, 4, 1) and out.min() == 255
