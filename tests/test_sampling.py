"""G's BatchNorm statistics measured anew for the weights that sample (train.recompute_bn)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, trees_equal
from PIL import Image

import dcgan_jax
from dcgan_jax.gan import models, sampling
from dcgan_jax.tools import analysis


def _generator_and_variables():
    config = tiny_config()
    generator = models.build(config.model, (28, 28, 1)).generator
    z = jnp.zeros((2, config.model.latent_dim))
    variables = generator.init(jax.random.key(0), z, train=False)
    # Weights other than those the stored statistics (zeros and ones at init) belong to.
    params = jax.tree.map(
        lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), variables["params"]
    )
    return config, generator, {"params": params, "batch_stats": variables["batch_stats"]}


def test_recomputed_statistics_average_each_training_batchs_mean_and_variance():
    config, generator, variables = _generator_and_variables()
    recompute = sampling.make_bn_recomputer(generator, config.model, batch_size=8, num_batches=3)
    new = recompute(variables, 7)
    assert jax.tree.structure(new) == jax.tree.structure(variables)
    assert trees_equal(new["params"], variables["params"])
    # G's first BatchNorm normalises Dense(z) (no bias): its statistics by hand, batch by batch.
    key = sampling.stream_key(7, sampling.BN_STREAM)
    z, _ = sampling.training_latents(key, 24, config.model.latent_dim, 0)
    h = np.asarray(z).reshape(3, 8, -1) @ np.asarray(variables["params"]["Dense_0"]["kernel"])
    stats = new["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], h.mean(axis=1).mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["var"], h.var(axis=1).mean(axis=0), rtol=1e-3, atol=1e-5)
    assert not np.allclose(stats["var"], variables["batch_stats"]["BatchNorm_0"]["var"])
    assert trees_equal(recompute(variables, 7), new)  # A function of the seed alone.
    assert not trees_equal(recompute(variables, 8)["batch_stats"], new["batch_stats"])


def test_a_run_with_recompute_bn_samples_and_reloads_with_the_recomputed_statistics(tmp_path):
    config = tiny_config(ema_decay=0.5, recompute_bn=True)
    state = dcgan_jax.train(config, tmp_path)
    run = dcgan_jax.load(tmp_path)
    stored = dcgan_jax.load(tmp_path, recompute_bn=False)
    assert trees_equal(stored.variables["batch_stats"], jax.device_get(state.g.batch_stats))
    assert trees_equal(run.variables["params"], stored.variables["params"])
    assert not trees_equal(run.variables["batch_stats"], stored.variables["batch_stats"])
    # The training grid of the last step was drawn with the recomputed statistics, as load() gives
    # them.
    saved = np.asarray(Image.open(tmp_path / "samples" / "step_0000006.png"))
    remade = np.asarray(Image.open(analysis.training_grid(run, tmp_path / "remade.png")))
    np.testing.assert_array_equal(remade, saved)
    differs = np.asarray(Image.open(analysis.training_grid(stored, tmp_path / "stored.png")))
    assert not np.array_equal(differs, saved)


def test_load_averages_gs_weights_over_the_newest_checkpoints_and_measures_bn_for_the_mean(
    tmp_path,
):
    config = tiny_config(ema_decay=0.5, recompute_bn=True, checkpoint_every=2)
    dcgan_jax.train(config, tmp_path)  # Checkpoints at steps 2, 4 and 6.
    steps = [dcgan_jax.load(tmp_path, s, recompute_bn=False) for s in (4, 6)]
    mean = jax.tree.map(lambda a, b: (a + b) / 2, *(r.variables["params"] for r in steps))
    averaged = dcgan_jax.load(tmp_path, average=2)
    assert averaged.step == 6
    _assert_close(averaged.variables["params"], mean)
    assert not trees_equal(averaged.variables["params"], steps[1].variables["params"])
    recompute = sampling.make_bn_recomputer(steps[1].generator, config.model, 16)
    remeasured = recompute(averaged.variables, config.seed)["batch_stats"]
    assert trees_equal(averaged.variables["batch_stats"], remeasured)
    # Without measured statistics, the mean of the stored ones; up to a step, the ones before it.
    plain = dcgan_jax.load(tmp_path, 4, average=2, recompute_bn=False)
    stored = [dcgan_jax.load(tmp_path, s, recompute_bn=False) for s in (2, 4)]
    want = jax.tree.map(lambda a, b: (a + b) / 2, *(r.variables["batch_stats"] for r in stored))
    _assert_close(plain.variables["batch_stats"], want)
    for average in (0, -1, 4):
        with pytest.raises(ValueError, match=f"average={average}: .* holds 3 up to step 6"):
            dcgan_jax.load(tmp_path, average=average)
    # A damaged checkpoint inside the window is an error of the average, naming it, not damage of
    # the newest (which alone still loads).
    (tmp_path / "checkpoints" / "4" / "state" / "_METADATA").unlink()
    with pytest.raises(ValueError, match=r"average=2: .*checkpoints/4"):
        dcgan_jax.load(tmp_path, average=2)
    assert dcgan_jax.load(tmp_path).step == 6


def _assert_close(tree, expected):
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), tree, expected
    )
