"""The GAN toolbox end to end: each variant trains through dcgan_jax.train, stays finite, keeps its
config in the checkpoint, and reloads with dcgan_jax.load to sample; colour and folder datasets."""

import json

import jax
import numpy as np
import pytest
from conftest import tiny_config, trees_equal
from PIL import Image

import dcgan_jax
from dcgan_jax.gan.config import flatten, resolved
from dcgan_jax.run import checkpoints, images
from dcgan_jax.tools import analysis

VARIANT_RUNS = {
    # Several variants per run keep the suite short; every field below is exercised.
    "hinge_sn_ema_ttur_conditional_r1": {
        "loss.name": "hinge",
        "model.spectral_norm": True,
        "model.d_batch_norm": False,
        "train.ema_decay": 0.5,
        "optimizer.g_learning_rate": 1e-4,
        "optimizer.d_learning_rate": 4e-4,
        "model.num_classes": 10,
        "loss.r1_gamma": 1.0,
        "loss.r1_every": 2,
    },
    "lsgan_bfloat16": {"loss.name": "lsgan", "train.compute_dtype": "bfloat16"},
    "wgan_gp": {"loss.name": "wgan_gp", "model.d_batch_norm": False},
}


def _config(overrides: dict, **train):
    config = tiny_config(num_steps=4, checkpoint_every=4, sample_every=4, log_every=2, **train)
    for field, value in overrides.items():
        section, name = field.split(".")
        config[section][name] = value
    return config


@pytest.fixture(scope="module", params=sorted(VARIANT_RUNS))
def variant_run(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(request.param)
    config = _config(VARIANT_RUNS[request.param])
    state = dcgan_jax.train(config, workdir)
    return request.param, config, state, workdir


def test_variant_trains_finite_and_its_config_round_trips(variant_run):
    name, config, state, workdir = variant_run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(np.isfinite(v) for r in rows for k, v in r.items() if isinstance(v, float))
    assert rows[0]["d_loss"] != rows[1]["d_loss"]
    step, stored, _ = checkpoints.Checkpointer(workdir, create=False).restore_config()
    assert step == 4 and flatten(stored) == flatten(resolved(config))
    if name == "wgan_gp":
        assert stored.train.d_steps == 5 and all("gradient_penalty" in r for r in rows)


def test_load_of_a_variant_run_samples(variant_run):
    name, config, state, workdir = variant_run
    run = dcgan_jax.load(workdir)
    samples = run.sample(5, seed=1)
    assert samples.shape == (5, 28, 28, 1) and np.isfinite(samples).all() and samples.std() > 0
    assert samples.min() >= -1 and samples.max() <= 1
    if config.train.ema_decay:
        assert run.ema and trees_equal(run.variables["params"], jax.device_get(state.g_ema))
        raw = dcgan_jax.load(workdir, ema=False)
        assert not raw.ema and trees_equal(raw.variables["params"], jax.device_get(state.g.params))
        # Relative: tiny G.
        assert np.abs(raw.sample(5, seed=1) - samples).max() > 1e-3 * np.abs(samples).max()
    else:
        assert not run.ema


def test_conditional_run_honours_labels_and_shows_a_row_per_class(variant_run):
    name, config, _, workdir = variant_run
    if not config.model.num_classes:
        pytest.skip("unconditional run")
    run = dcgan_jax.load(workdir)
    z = np.repeat(np.asarray(run.latents(1, seed=3)), 3, axis=0)
    same, again, other = run.generate(z, labels=[4, 4, 9])
    np.testing.assert_array_equal(same, again)
    assert np.abs(same - other).max() > 1e-3 * np.abs(same).max()
    with pytest.raises(
        ValueError, match=r"labels: class indices in \[0, 10\) expected, got \[10\]"
    ):
        run.sample(2, labels=10)
    # tiny_config: 16 grid samples in a square grid whatever the classes, their labels cycling.
    grid = Image.open(workdir / "samples" / "step_0000004.png")
    expected = images.make_grid(np.zeros((16, 28, 28, 1)))
    assert (
        grid.size == (2 * expected.shape[1], 2 * expected.shape[0]) and grid.size[0] == grid.size[1]
    )
    by_class = Image.open(
        analysis.sample_grid(run, workdir / "by_class.png", num=20, by_class=True)
    )
    rows = images.make_grid(np.zeros((20, 28, 28, 1)), columns=2)  # One row per class.
    assert by_class.size == (2 * rows.shape[1], 2 * rows.shape[0])


def test_unconditional_run_refuses_labels(variant_run):
    _, config, _, workdir = variant_run
    if config.model.num_classes:
        pytest.skip("conditional run")
    with pytest.raises(ValueError, match="unconditional"):
        dcgan_jax.load(workdir).sample(2, labels=1)


def test_latents_of_the_wrong_shape_or_value_are_named_on_every_model(variant_run):
    """One 1-D latent is one image on a conditional model as on an unconditional one; a wrong size
    names model.latent_dim (not a Flax ScopeParamShapeError), NaN latents and mismatched labels
    fail."""
    _, config, _, workdir = variant_run
    run = dcgan_jax.load(workdir)
    z = np.array(run.latents(3, seed=2))  # A writable copy.
    one = run.generate(z[0])
    assert one.shape == (1, 28, 28, 1)
    np.testing.assert_allclose(one[0], run.generate(z)[0], atol=1e-5)
    wrong_size = (
        r"z: latent vectors of shape \(N, 16\) \(model.latent_dim=16\).*got shape \(3, 15\)"
    )
    with pytest.raises(ValueError, match=wrong_size):
        run.generate(z[:, :15])
    with pytest.raises(ValueError, match=r"got shape \(100,\)"):
        run.generate(np.zeros(100))
    z[1, 4] = np.nan
    with pytest.raises(ValueError, match="z: 1 of 3 latent vectors hold NaN or inf"):
        run.generate(z)
    if config.model.num_classes:
        mismatch = r"labels: an int or one per image, shape \(3,\), got shape \(2,\)"
        with pytest.raises(ValueError, match=mismatch):
            run.generate(z[[0, 2, 2]], labels=[1, 2])
        with pytest.raises(ValueError, match="labels: class indices"):
            run.generate(z[[0, 2]], labels=[1.5, 2.0])


def test_image_folder_run_trains_on_a_researchers_pictures(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    config = tiny_config(num_steps=2, checkpoint_every=2, sample_every=2)
    config.dataset.update(name="image_folder", data_dir=str(folder), image_size=16)
    dcgan_jax.train(config, tmp_path / "run")
    assert dcgan_jax.load(tmp_path / "run").sample(2).shape == (2, 16, 16, 3)
    # As for cifar10 and celeb_a (their loading is tested offline in test_data.py with TFDS mock
    # data).
    assert "No built-in evaluation for image_folder" in (tmp_path / "run" / "train.log").read_text()
