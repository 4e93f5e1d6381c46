import jax
import numpy as np
import pytest
from conftest import tiny_config, trees_equal

from dcgan_jax import data, parallel
from dcgan_jax.config import ConfigError, resolved
from dcgan_jax.train_step import (
    compile_train_step,
    compile_train_steps,
    components,
    init_state,
    make_train_step,
    make_train_steps,
    make_updates,
    nonfinite_networks,
    put_dataset,
)


def _setup(config=None):
    config = resolved(config or tiny_config())
    parts = components(config, (28, 28, 1))
    state = init_state(parts.generator, parts.discriminator, parts.optimizers, 0, (28, 28, 1),
                       config.model.latent_dim, ema=config.train.ema_decay > 0)  # fmt: skip
    images, _ = data.synthetic_images(64, seed=0)
    real = data.to_model_range(images[: config.train.batch_size])
    return config, state, parts, real


def _batches(config, num_images=256):
    images, labels = data.synthetic_images(num_images, seed=1)
    order = data.BatchOrder(images, config.train.batch_size, seed=0, labels=labels)
    d_steps = config.train.d_steps
    return lambda i: (
        np.stack([order.batch(i * d_steps + j) for j in range(d_steps)]),
        np.stack([order.labels_of(i * d_steps + j) for j in range(d_steps)]),
    )


def test_generator_update_leaves_discriminator_untouched():
    _, state, parts, real = _setup()
    g_update = make_updates(*parts).g_update
    new, metrics = jax.jit(g_update, static_argnums=2)(state, jax.random.key(0), len(real))
    assert trees_equal(new.d_params, state.d_params)
    assert trees_equal(new.d_batch_stats, state.d_batch_stats)
    assert trees_equal(new.d_opt_state, state.d_opt_state)
    assert not trees_equal(new.g_params, state.g_params)
    assert not trees_equal(new.g_batch_stats, state.g_batch_stats)
    assert np.isfinite(float(metrics["g_loss"]))


def test_discriminator_update_leaves_generator_untouched():
    _, state, parts, real = _setup()
    d_update = make_updates(*parts).d_update
    new, metrics = jax.jit(d_update)(state, real, None, jax.random.key(0))
    assert trees_equal(new.g_params, state.g_params)
    assert trees_equal(new.g_batch_stats, state.g_batch_stats)
    assert trees_equal(new.g_opt_state, state.g_opt_state)
    assert not trees_equal(new.d_params, state.d_params)
    assert not trees_equal(new.d_batch_stats, state.d_batch_stats)
    assert set(metrics) == {"d_loss", "d_real_acc", "d_fake_acc", "d_real", "d_fake"}


def test_training_steps_move_the_losses_and_d_learns():
    config, state, parts, real = _setup()
    step = compile_train_step(make_train_step(*parts), parallel.make_mesh())
    batch = _batches(config)
    history = []
    for i in range(12):
        state, metrics = step(state, *batch(i))
        history.append({k: float(v) for k, v in metrics.items()})
    assert int(state.step) == 12
    assert all(np.isfinite(list(m.values())).all() for m in history)
    assert history[0]["d_loss"] != history[-1]["d_loss"]
    assert history[0]["g_loss"] != history[-1]["g_loss"]


def test_discriminator_updates_alone_learn_to_separate_real_from_generated():
    _, state, parts, real = _setup()
    d_update = jax.jit(make_updates(*parts).d_update)
    history = []
    for i in range(15):
        state, metrics = d_update(state, real, None, jax.random.key(i))
        history.append({k: float(v) for k, v in metrics.items()})
    first, last = history[0], history[-1]
    assert last["d_loss"] < 0.7 * first["d_loss"]
    assert last["d_real"] > first["d_real"] + 0.1
    assert last["d_fake"] < first["d_fake"]


def test_d_steps_consume_one_real_batch_each():
    _, state, parts, real = _setup()
    step = jax.jit(make_train_step(*parts))
    labels = np.zeros((1, len(real)), np.int32)
    one, _ = step(state, real[None], labels)
    two, _ = step(state, np.stack([real, real]), np.concatenate([labels, labels]))
    assert int(one.step) == int(two.step) == 1
    # Two D updates move Adam's count twice.
    assert int(jax.tree.leaves(two.d_opt_state)[0]) == 2 * int(jax.tree.leaves(one.d_opt_state)[0])
    assert int(jax.tree.leaves(two.g_opt_state)[0]) == int(jax.tree.leaves(one.g_opt_state)[0])


def test_batch_size_not_divisible_by_devices_names_nearest_sizes():
    mesh = parallel.make_mesh(jax.devices() * 1)
    parallel.check_batch_size(64, mesh)

    class EightDevices:
        size = 8

    with pytest.raises(ConfigError, match=r"batch_size=60 does not split over 8 devices; use 56 or 64"):
        parallel.check_batch_size(60, EightDevices())


def _trains_and_stays_finite(config, steps=4):
    config, state, parts, _ = _setup(config)
    step = jax.jit(make_train_step(*parts))
    batch = _batches(config)
    history = []
    for i in range(steps):
        state, metrics = step(state, *batch(i))
        history.append({k: float(v) for k, v in metrics.items()})
    assert all(np.isfinite(list(m.values())).all() for m in history), history
    assert history[0]["d_loss"] != history[-1]["d_loss"] and history[0]["g_loss"] != history[-1]["g_loss"]
    assert not np.any(np.asarray(nonfinite_networks(state)))
    return state, history


def test_reference_architecture_trains_with_dropout_and_no_d_batch_norm():
    config = tiny_config()
    config.model.update(g_base_features=32, g_stride1_layers=1, g_activation="leaky_relu", g_output_bias=False,
                        d_batch_norm=False, d_dropout=0.3)  # fmt: skip
    state, _ = _trains_and_stays_finite(config)
    assert state.d_batch_stats == {}


@pytest.mark.parametrize(
    "overrides",
    [
        # The other variants train end to end in test_variants.py; these check what only the step shows.
        {"loss.r1_gamma": 10.0, "loss.r1_every": 2},
        {"optimizer.g_learning_rate": 1e-4, "optimizer.d_learning_rate": 4e-4},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_lazy_r1_and_ttur_in_the_step(overrides):
    config = tiny_config()
    for field, value in overrides.items():
        section, name = field.split(".")
        config[section][name] = value
    state, history = _trains_and_stays_finite(config)
    if "loss.r1_gamma" in overrides:
        r1 = [m["r1_penalty"] for m in history]  # Steps 0 and 2 of 0..3 (every 2nd step).
        assert r1[0] > 0 and r1[2] > 0 and r1[1] == 0 and r1[3] == 0
    else:
        assert float(state.g_opt_state.hyperparams["learning_rate"]) == pytest.approx(1e-4)
        assert float(state.d_opt_state.hyperparams["learning_rate"]) == pytest.approx(4e-4)


def test_ema_is_the_moving_average_of_the_generator_weights():
    config = tiny_config()
    config.train.ema_decay = 0.75
    config, state, parts, _ = _setup(config)
    step = jax.jit(make_train_step(*parts))
    batch = _batches(config)
    state = state.replace(step=state.step + 100)  # Past the warm-up: min(0.75, 101/110) = 0.75.
    after, _ = step(state, *batch(0))
    expected = jax.tree.map(lambda ema, new: 0.75 * ema + 0.25 * new, state.g_ema_params, after.g_params)
    for ours, theirs in zip(jax.tree.leaves(after.g_ema_params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    # At step 0 the warm-up decay is 1/10: the average moves most of the way to G.
    first, _ = step(state.replace(step=state.step * 0), *batch(0))
    expected = jax.tree.map(lambda ema, new: 0.1 * ema + 0.9 * new, state.g_ema_params, first.g_params)
    for ours, theirs in zip(jax.tree.leaves(first.g_ema_params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_reused_fake_batch_gives_g_the_gradient_through_the_updated_discriminator():
    """reuse_fake: G's update from D's fake batch (its forward pass kept as a VJP) equals the plain
    gradient of G's loss on that same batch through the updated D."""
    import optax

    from dcgan_jax import losses

    config, state, parts, real = _setup()
    generator, discriminator, optimizers, game = parts
    updates = make_updates(*parts)
    d_key, g_key = jax.random.key(1), jax.random.key(2)

    @jax.jit  # One program: op by op, this test would spend its time dispatching.
    def reused(state, real):
        fake, labels, pullback, g_batch_stats = updates.generate_with_pullback(state, d_key, len(real))
        after_d, _ = updates.d_update(state, real, None, d_key, fake)
        fresh_d, _ = updates.d_update(state, real, None, d_key)  # Generates the same batch itself.
        after_g, metrics = updates.g_update_through(after_d, fake, labels, pullback, g_batch_stats, g_key)
        return after_d, fresh_d, after_g, metrics, g_batch_stats, labels

    after_d, fresh_d, after_g, metrics, g_batch_stats, labels = reused(state, real)
    assert labels is None
    assert jax.tree.all(jax.tree.map(lambda a, b: np.allclose(a, b, atol=1e-6), after_d.d_params, fresh_d.d_params))

    def direct_loss(g_params):
        z = jax.random.normal(d_key, (len(real), game.latent_dim))
        images = generator.apply({"params": g_params, "batch_stats": state.g_batch_stats}, z, train=True,
                                 mutable=["batch_stats"])[0]  # fmt: skip
        logits = discriminator.apply(
            after_d.discriminator_variables(), images, train=True, mutable=["batch_stats"],
            rngs={"dropout": jax.random.fold_in(g_key, 2)},
        )[0]  # fmt: skip
        return losses.generator_loss(logits, game.loss, game.generator_loss)

    loss, grads = jax.jit(jax.value_and_grad(direct_loss))(state.g_params)
    step_updates, _ = optimizers.g.update(grads, state.g_opt_state, state.g_params)
    expected = optax.apply_updates(state.g_params, step_updates)
    np.testing.assert_allclose(float(metrics["g_loss"]), float(loss), rtol=1e-5)
    for ours, theirs in zip(jax.tree.leaves(after_g.g_params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert trees_equal(after_g.g_batch_stats, g_batch_stats)  # From the one forward pass.
    assert trees_equal(after_g.d_params, after_d.d_params)


def test_reuse_fake_option_trains_and_differs_from_fresh_batches():
    finals = {}
    for reuse in (False, True):
        config = tiny_config()
        config.train.reuse_fake = reuse
        finals[reuse], _ = _trains_and_stays_finite(config, steps=6)
    assert not trees_equal(finals[True].g_params, finals[False].g_params)


def test_a_dispatch_of_several_steps_equals_single_steps():
    """Three steps in one dispatch (a scan), gathering their batches on the device, end where three
    single-step calls on host-made batches end, with the same metrics."""
    config, state, parts, _ = _setup(tiny_config())
    mesh = parallel.make_mesh()
    images, labels = data.synthetic_images(256, seed=1)
    order = data.BatchOrder(images, config.train.batch_size, seed=0, labels=labels)
    single = compile_train_step(make_train_step(*parts), mesh)
    expected = jax.tree.map(np.array, jax.device_get(state))  # A copy: the steps donate their state.
    singles = []
    for i in range(3):
        expected, metrics = single(expected, order.batch(i)[None], order.labels_of(i)[None])
        singles.append(metrics)
    indices = order.step_indices(0, 3, d_steps=1)
    np.testing.assert_array_equal(indices[:, 0], [order.indices(i) for i in range(3)])
    steps = compile_train_steps(make_train_steps(make_train_step(*parts), mesh, 3), mesh)
    final, stacked = steps(state, put_dataset(images, labels, mesh), indices)
    assert int(final.step) == 3
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state))  # Donated: updated in place.
    for a, b in zip(jax.tree.leaves(jax.device_get(final)), jax.tree.leaves(jax.device_get(expected)), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    for name, values in stacked.items():
        assert values.shape == (3,)
        np.testing.assert_allclose(values, [float(m[name]) for m in singles], atol=1e-5, rtol=1e-4)
