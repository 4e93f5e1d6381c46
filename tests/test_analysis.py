"""The analysis toolkit on a short synthetic run: pictures from any checkpoint, from Python and the
shell."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, python, tiny_config
from PIL import Image

import dcgan_jax
from dcgan_jax.gan import data
from dcgan_jax.run import checkpoints, images
from dcgan_jax.tools import analysis, trained


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("analysed")
    dcgan_jax.train(tiny_config(), workdir)  # Checkpoints at steps 3 and 6.
    return workdir


def _size(path):
    return Image.open(path).size


def test_slerp_keeps_the_ends_and_the_norm():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=16), rng.normal(size=16)
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    path = trained.slerp(a, b, np.linspace(0, 1, 7))
    np.testing.assert_allclose(path[0], a, rtol=1e-5)
    np.testing.assert_allclose(path[-1], b, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(a), rtol=1e-5)
    # A straight line's midpoint would be shorter.
    assert np.linalg.norm((a + b) / 2) < 0.99 * np.linalg.norm(path[3])


def test_slerp_between_opposite_latents_is_refused_and_from_the_origin_is_the_line():
    """z and -2z: sin(omega) is 0 and the formula's points had norms of 4.6e8 (garbage images,
    silently); from the zero vector the angle is undefined (it was 0 / 0: NaN latents, reported as
    the user's own)."""
    z = np.random.default_rng(0).normal(size=16)
    for opposite in (-z, -2 * z):
        with pytest.raises(ValueError, match="opposite directions: no one great circle"):
            trained.slerp(z, opposite, np.linspace(0, 1, 5))
    path = trained.slerp(np.zeros(16), z, np.linspace(0, 1, 5))
    np.testing.assert_allclose(path, np.linspace(0, 1, 5)[:, None] * z, rtol=1e-6)


def test_interpolation_runs_between_the_two_latents(run_dir):
    run = dcgan_jax.load(run_dir)
    z = np.asarray(run.latents(2, seed=5))
    strip = run.interpolate(z[0], z[1], 5)
    np.testing.assert_allclose(strip[0], run.generate(z[:1])[0], atol=1e-5)
    np.testing.assert_allclose(strip[-1], run.generate(z[1:])[0], atol=1e-5)
    path = analysis.interpolation_strips(run, num_strips=3, num_points=6, seed=1)
    assert path.parent == run_dir / "analysis"
    assert _size(path) == (2 * (6 * 30 + 2), 2 * (3 * 30 + 2))  # 6 columns, 3 rows of 28px tiles.


def test_interpolation_arguments_are_checked_and_endpoint_strips_keep_their_own_file(run_dir):
    run = dcgan_jax.load(run_dir)
    z = np.asarray(run.latents(4, seed=5))
    for num in (0, 1):
        with pytest.raises(
            ValueError,
            match=f"num: points along the path including both ends, at least 2, got {num}",
        ):
            run.interpolate(z[0], z[1], num)
    with pytest.raises(ValueError, match="z_start, z_end: one latent vector each, got 2 and 1"):
        run.interpolate(z[:2], z[2], 4)
    random_strips = analysis.interpolation_strips(run, num_strips=2, num_points=4, seed=0)
    before = random_strips.read_bytes()
    chosen = analysis.interpolation_strips(
        run, num_strips=2, num_points=4, endpoints=(z[:2], z[2:])
    )
    assert chosen.name == "interpolation_step6_endpoints.png" != random_strips.name
    assert random_strips.read_bytes() == before  # Not overwritten.
    with pytest.raises(
        ValueError, match=r"starts and ends of the same shape expected, got \(2, 16\) and \(1, 16\)"
    ):
        analysis.interpolation_strips(run, endpoints=(z[:2], z[3]))


def test_sample_grid_of_any_checkpoint_and_seed(run_dir, tmp_path):
    early = dcgan_jax.load(run_dir, step=3)
    first = analysis.sample_grid(early, tmp_path / "a.png", num=16, seed=2)
    again = analysis.sample_grid(early, tmp_path / "b.png", num=16, seed=2)
    other = analysis.sample_grid(dcgan_jax.load(run_dir), tmp_path / "c.png", num=16, seed=2)
    assert first.read_bytes() == again.read_bytes() != other.read_bytes()


def test_truncation_scales_the_latents_toward_the_mean(run_dir):
    run = dcgan_jax.load(run_dir)
    np.testing.assert_allclose(
        run.latents(8, seed=3, truncation=0.5), 0.5 * np.asarray(run.latents(8, seed=3))
    )
    np.testing.assert_array_equal(run.sample(4, seed=3, truncation=1.0), run.sample(4, seed=3))
    assert np.abs(run.sample(4, seed=3, truncation=0.5) - run.sample(4, seed=3)).max() > 1e-3
    # 0 would make every sample one image, across labels too.
    for bad in (-0.5, 0.0, float("nan"), float("inf"), "0.5", None):
        with pytest.raises(ValueError, match="truncation must be a finite number > 0"):
            run.sample(4, truncation=bad)


def test_counts_and_seeds_no_machine_or_key_can_hold_are_value_errors_not_aborts(run_dir):
    """XLA aborts the process on an allocation it cannot make, and JAX's key takes no seed past
    int32: each is refused first, naming the argument."""
    run = dcgan_jax.load(run_dir)
    too_many = f"num must be an integer, positive and at most .* got {10**12}"
    for draw in (
        lambda: run.sample(10**12),
        lambda: run.evaluation_samples(10**12),
        lambda: run.interpolate(*np.asarray(run.latents(2)), 10**12),
    ):
        with pytest.raises(ValueError, match=too_many):
            draw()
    # Not a count: each refused by name, not a library's TypeError; evaluation_samples(0) is not
    # its default count.
    for draw in (
        lambda: run.sample(0),
        lambda: run.sample(2.5),
        lambda: run.sample("4"),
        lambda: run.latents(-1),
        lambda: run.evaluation_samples(0),
    ):
        with pytest.raises(ValueError, match="num must be an integer, positive"):
            draw()
    for num in (None, 2.5):
        with pytest.raises(ValueError, match="num: points along the path .* at least 2, got"):
            run.interpolate(*np.asarray(run.latents(2)), num)
    for seed in (-1, 2**31, 2**70, 2.5, "1", None):
        with pytest.raises(ValueError, match="seed must be an integer in 0 .. 2147483647, got"):
            run.sample(4, seed=seed)
    with pytest.raises(ValueError, match="average=1.5"):
        dcgan_jax.load(run_dir, average=1.5)
    assert run.sample(np.int64(2), seed=np.int32(3)).shape == (2, 28, 28, 1)
    assert run.sample(1, seed=2**31 - 1).shape == (1, 28, 28, 1)


def test_nearest_training_images_find_a_copied_sample(run_dir):
    run = dcgan_jax.load(run_dir)
    samples = run.sample(4, seed=0)
    train_images = data.to_model_range(data.synthetic_images(500, seed=1)[0])
    train_images[123] = samples[2]  # A memorised image.
    nearest = analysis.nearest_indices(samples, train_images, k=3)
    assert nearest.shape == (4, 3) and nearest[2, 0] == 123
    # In the Fashion-MNIST classifier's feature space too (any 28x28 grey images have features).
    assert (
        analysis.nearest_indices(
            samples, train_images, k=3, space="feature", dataset="fashion_mnist"
        )[2, 0]
        == 123
    )
    path = analysis.nearest_training_images(run, num=4, k=3, train_images=train_images)
    assert _size(path) == (2 * (4 * 30 + 2), 2 * (4 * 30 + 2))  # Sample + 3 neighbours, 4 rows.


def test_the_training_split_is_held_as_uint8_and_its_neighbours_found_in_it(run_dir):
    """In [-1, 1] it would be 4 times the bytes (8 GB for CelebA's training split)."""
    run = dcgan_jax.load(run_dir)
    train_images = analysis.training_images(run)
    assert train_images.dtype == np.uint8
    samples = data.to_model_range(train_images[[7, 42]])
    assert analysis.nearest_indices(samples, train_images, k=1)[:, 0].tolist() == [7, 42]
    path = analysis.nearest_training_images(run, num=2, k=3, train_images=train_images)
    assert _size(path) == (2 * (4 * 30 + 2), 2 * (2 * 30 + 2))
    # A grid of them shows the pixels (it was white: uint8 taken as [-1, 1]), as of their floats.
    grid = images.make_grid(train_images[:16])
    np.testing.assert_array_equal(grid, images.make_grid(data.to_model_range(train_images[:16])))


def test_progress_grid_has_a_row_per_checkpoint(run_dir, tmp_path):
    path = analysis.progress_grid(run_dir, tmp_path / "progress.png", num=5)
    assert _size(path) == (2 * (5 * 30 + 2), 2 * (2 * 30 + 2))
    rows = np.asarray(Image.open(path))
    assert not np.array_equal(rows[4:60], rows[64:120])  # Step 3 and step 6 differ.


def test_metric_curves_of_several_runs_and_a_typo_names_the_logged_metrics(run_dir, tmp_path):
    path = analysis.metric_curves([run_dir, run_dir], tmp_path / "g_loss.png", "g_loss")
    assert path.stat().st_size > 1000
    with pytest.raises(
        images.MetricError,
        match=r"metric 'g_los' is in no run's metrics.jsonl. Did you mean: g_loss",
    ):
        analysis.metric_curves([run_dir], tmp_path / "typo.png", "g_los")
    assert not (tmp_path / "typo.png").exists()


def test_analysis_command_writes_its_pictures_and_names_bad_paths(run_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dcgan_jax.analysis", f"--workdir={run_dir}", "--metrics=g_loss"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(p.name for p in (run_dir / "analysis").iterdir())
    for name in (
        "training_grid_step6.png",
        "samples_step6_seed0.png",
        "interpolation_step6_seed0.png",
        "nearest_pixel_step6_seed0.png",
        "progress_seed0.png",
        "g_loss.png",
    ):
        assert name in written
    # No classifier for synthetic data; the skip names no flag this command lacks (before: "score
    # it with --feature_network=inception").
    assert "skipped the feature-space neighbours" in result.stdout
    assert "skipped the memorisation check: no classifier of synthetic" in result.stdout
    assert "--feature_network" not in result.stdout
    # The console shows the pictures' paths and nothing else: Orbax's and absl's INFO lines go to no
    # console.
    paths = [line for line in result.stdout.splitlines() if not line.startswith("skipped")]
    assert len(paths) >= 6 and all(
        (run_dir / "analysis" / line).is_file() or Path(line).is_file() for line in paths
    )
    assert " INFO " not in result.stderr and "I1" not in result.stderr[:2]
    typo = python("-m", "dcgan_jax.analysis", f"--workdir={run_dir}", "--metrics=eval/fidd")
    assert (
        typo.returncode == 2
        and "error: metric 'eval/fidd' is in no run's metrics.jsonl" in typo.stderr
    )
    assert "Traceback" not in typo.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "dcgan_jax.analysis", f"--workdir={tmp_path / 'none'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert missing.returncode != 0 and f"no run folder at {tmp_path / 'none'}" in missing.stderr
    never_evaluated = python("-m", "dcgan_jax.analysis", f"--workdir={run_dir}", "--best")
    assert never_evaluated.returncode == 2 and "error: no best_checkpoint folder" in (
        never_evaluated.stderr
    )


def test_a_run_of_another_experiment_is_named(run_dir):
    with pytest.raises(checkpoints.CheckpointError) as error:
        dcgan_jax.load(run_dir, experiment="fashion_dcgan")
    message = str(error.value)
    assert f"{run_dir} holds a run of another experiment than fashion_dcgan" in message
    assert "dataset.name: run 'synthetic', fashion_dcgan 'fashion_mnist'" in message
