"""Self-conditioning on clusters (dataset.labels=clusters): balanced k-means of the pixels, found
without labels, become the labels a conditional model trains and samples with."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, shared_dataset_dir, tiny_config, traced_peak
from PIL import Image

import dcgan_jax
from dcgan_jax.gan import clusters, data, loop
from dcgan_jax.gan.config import ConfigError, validate
from dcgan_jax.run import writers


def _blobs(sizes, seed=0):
    """uint8 8x8 grey images around len(sizes) far-apart prototypes; (images, true blob of each)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, (len(sizes), 8, 8, 1))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    noisy = prototypes[truth] + rng.normal(0, 8, (len(truth), 8, 8, 1))
    order = rng.permutation(len(truth))
    return np.clip(noisy, 0, 255).astype(np.uint8)[order], truth[order]


def _same_partition(a, b) -> bool:
    """Whether two labellings group the items alike, whatever the cluster numbers."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_separated_blobs_are_found_exactly_and_the_same_for_the_same_seed():
    images_, truth = _blobs([50, 50, 50, 50])
    found = clusters.balanced_kmeans(images_, 4, seed=0)
    assert _same_partition(found, truth)
    np.testing.assert_array_equal(found, clusters.balanced_kmeans(images_, 4, seed=0))


def test_balancing_splits_a_crowded_cluster_to_equal_shares():
    """Plain k-means keeps blobs of 150 and 30 images as they are; the balanced assignment gives
    every cluster about a third, so a uniform draw of labels matches the data."""
    images_, truth = _blobs([150, 30, 30], seed=1)
    x = clusters.pixel_features(images_)
    centres = np.stack([x[truth == j].mean(axis=0) for j in range(3)])
    sq = ((x[:, None] - centres) ** 2).sum(axis=-1)
    assert np.bincount(sq.argmin(axis=1)).tolist() == [150, 30, 30]
    sizes = np.bincount(clusters.balance(sq), minlength=3)
    assert sizes.tolist() == [70, 70, 70], sizes
    sizes = np.bincount(clusters.balanced_kmeans(images_, 3, seed=0), minlength=3)
    assert sizes.tolist() == [70, 70, 70], sizes


def test_pixel_features_average_pool_large_images_and_keep_small_ones():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    np.testing.assert_allclose(
        clusters.pixel_features(small), small.reshape(2, -1) / 255.0, rtol=1e-6
    )
    large = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    pooled = (large / 255.0).reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4)).reshape(2, -1)
    np.testing.assert_allclose(clusters.pixel_features(large), pooled, rtol=1e-5)


def test_pixel_features_never_hold_a_float_copy_of_the_whole_set():
    # 3,000 images of 96x96: 27.6 MB as uint8, 110.6 MB as float32, 12.3 MB pooled to 32x32.
    images = np.random.default_rng(0).integers(0, 256, (3000, 96, 96, 1), dtype=np.uint8)
    features, peak = traced_peak(lambda: clusters.pixel_features(images))
    assert features.shape == (3000, 32 * 32)
    assert peak < 4 * images.nbytes / 2  # Under half the float copy of the set.


def test_one_cluster_is_a_config_error_and_an_unconditional_model_clusters_nothing(monkeypatch):
    config = tiny_config()
    config.dataset.labels = "clusters"
    config.model.num_classes = 1
    with pytest.raises(
        ConfigError, match=r"--config.model.num_classes=1 with --config.dataset.labels=clusters"
    ):
        validate(config)
    # model.num_classes=0 swept beside clustered models: plain DCGAN, no k-means.
    config.model.num_classes = 0
    validate(config)
    monkeypatch.setattr(
        clusters,
        "balanced_kmeans",
        lambda *args: pytest.fail("clustered for an unconditional model"),
    )
    assert loop.assemble(config).nets.generator.num_classes == 0
    config.dataset.labels = "kmeans"
    with pytest.raises(
        ConfigError, match="--config.dataset.labels='kmeans': must be one of dataset, clusters"
    ):
        validate(config)


def test_a_clustered_run_trains_on_the_clusters_not_the_dataset_labels():
    config = tiny_config()
    config.model.num_classes = 4
    config.dataset.labels = "clusters"
    run = loop.assemble(config)
    loaded, dataset_labels = data.load_dataset(config.dataset, config.seed)
    np.testing.assert_array_equal(
        np.asarray(run.dataset.labels), clusters.balanced_kmeans(loaded, 4, config.seed)
    )
    assert not np.array_equal(np.asarray(run.dataset.labels), dataset_labels)


def test_a_folder_without_class_sub_folders_trains_on_clusters(tmp_path):
    """No labels at all: the conditional model is refused, naming clusters, and trains on them."""
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    config = tiny_config()
    config.dataset.update(name="image_folder", data_dir=str(tmp_path))
    config.model.num_classes = 4
    with pytest.raises(
        ConfigError, match="has no class sub-folders.*--config.dataset.labels=clusters"
    ):
        loop.assemble(config)
    config.dataset.labels = "clusters"
    labels = np.asarray(loop.assemble(config).dataset.labels)
    assert np.bincount(labels).tolist() == [10, 10, 10, 10]


@pytest.fixture(scope="module", params=["dataset", "clusters"])
def fashion_run(request, tmp_path_factory):
    """Two steps of a 10-label model on Fashion-MNIST, labelled by its classes or by clusters."""
    config = tiny_config(num_steps=2, checkpoint_every=2, sample_every=2, log_every=2)
    config.dataset.update(
        name="fashion_mnist",
        data_dir=str(shared_dataset_dir("fashion_mnist")),
        labels=request.param,
    )
    config.model.num_classes = 10
    config.eval.update(every=2, num_samples=1000)
    workdir = tmp_path_factory.mktemp(request.param)
    dcgan_jax.train(config, workdir)
    return request.param, workdir


def test_class_agreement_is_scored_for_classes_and_not_for_clusters(fashion_run):
    """A sample asked for cluster 3 is not asked for the class 3 (Dress): no classifier can check
    it."""
    labels, workdir = fashion_run
    row = next(r for r in writers.read_metrics(workdir / "metrics.jsonl") if "eval/fid" in r)
    log = (workdir / "train.log").read_text()
    assert ("eval/class_agreement" in row) == (labels == "dataset")
    assert ("balanced k-means clusters of the 60000 training images" in log) == (
        labels == "clusters"
    )
    command = [
        sys.executable,
        "-m",
        "dcgan_jax.evaluation",
        f"--workdir={workdir}",
        "--seed=1",
        "--num_samples=1000",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads((workdir / "eval" / "step_0000002_seed1.json").read_text())
    assert np.isfinite(scored["fid"]) and ("class_agreement" in scored) == (labels == "dataset")
    run = dcgan_jax.load(workdir)
    assert run.sample(3, labels=[0, 5, 9]).shape == (3, 28, 28, 1)
