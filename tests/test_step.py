import jax
import numpy as np
import pytest
from conftest import REPO, tiny_config, trees_equal

from dcgan_jax.gan import data, loop, models, parallel, step
from dcgan_jax.gan.config import ConfigError, resolved
from dcgan_jax.run import cli
from dcgan_jax.run.cli import load_experiment
from dcgan_jax.run.resume import nonfinite_networks


def _setup(config=None):
    config = resolved(config or tiny_config())
    nets = models.build(config.model, (28, 28, 1))
    state = loop.initial_state(config, nets, (28, 28, 1))
    images, _ = data.synthetic_images(64, seed=0)
    real = data.to_model_range(images[: config.train.batch_size])
    return config, state, step.make_update(nets, config), real


def _batches(config, num_images=256):
    """Step ``i``'s real batches and labels, (d_steps, batch, ...), gathered on the host."""
    images, labels = data.synthetic_images(num_images, seed=1)
    order = data.BatchOrder(images, config.train.batch_size, seed=0)

    def batch(i):
        rows = order.step_indices(i, 1, config.train.d_steps)[0]
        return data.to_model_range(images[rows]), labels[rows].astype(np.int32)

    return batch


def _jit_step(u):
    """The step on :func:`_batches`' 256 images."""
    return jax.jit(lambda state, real, labels: step.train_step(state, real, labels, u, 256))


def _d_update(u):
    """D's update on ``real`` and a fake batch generated from ``key``, jitted."""

    def update(state, real, key):
        return step.d_update(state, (real, None), step.generate(u, state.g, key, len(real)), key, u)

    return jax.jit(update)


def _g_update(u, n, keep=None):
    """G's update on a fresh fake batch of ``n`` from ``key``, jitted."""
    return jax.jit(
        lambda state, key: step.g_update(state, step.generate(u, state.g, key, n), key, u, keep)
    )


def test_generator_update_leaves_discriminator_untouched():
    config, state, u, real = _setup()
    new, metrics = _g_update(u, len(real))(state, jax.random.key(0))
    assert trees_equal(new.d, state.d)
    assert not trees_equal(new.g.params, state.g.params)
    assert not trees_equal(new.g.batch_stats, state.g.batch_stats)
    assert np.isfinite(float(metrics["g_loss"]))


def test_discriminator_update_leaves_generator_untouched():
    config, state, u, real = _setup()
    new, metrics = _d_update(u)(state, real, jax.random.key(0))
    assert trees_equal(new.g, state.g)
    assert not trees_equal(new.d.params, state.d.params)
    assert not trees_equal(new.d.batch_stats, state.d.batch_stats)
    assert set(metrics) == {
        "d_loss",
        "d_real_acc",
        "d_fake_acc",
        "d_real",
        "d_fake",
        "d_logit_gap",
        "d_grad_norm",
    }


def test_gradient_norms_are_those_of_each_networks_own_gradient():
    config, state, u, real = _setup()
    key = jax.random.key(3)
    fakes = step.generate(u, state.g, key, len(real))
    _, d_metrics = _d_update(u)(state, real, key)
    d_grads, _ = jax.grad(step.d_loss, has_aux=True)(
        state.d.params, state, ((real, None), fakes), key, u
    )
    by_hand = np.sqrt(sum(np.sum(np.square(leaf)) for leaf in jax.tree.leaves(d_grads)))
    assert float(d_metrics["d_grad_norm"]) == pytest.approx(float(by_hand), rel=1e-4)
    _, g_metrics = _g_update(u, len(real))(state, key)

    def g_loss(params):
        fakes = step.generate(u, state.g.replace(params=params), key, len(real))
        return step.g_loss(state, fakes, fakes.images, key, u)

    g_grads = jax.grad(g_loss)(state.g.params)
    by_hand = np.sqrt(sum(np.sum(np.square(leaf)) for leaf in jax.tree.leaves(g_grads)))
    assert (
        float(g_metrics["g_grad_norm"]) == pytest.approx(float(by_hand), rel=1e-4) and by_hand > 0
    )


def test_training_steps_move_the_losses_and_d_learns():
    config, state, u, real = _setup()
    train_step = _jit_step(u)
    batch = _batches(config)
    history = []
    for i in range(12):
        state, metrics = train_step(state, *batch(i))
        history.append({k: float(v) for k, v in metrics.items()})
    assert int(state.step) == 12
    assert all(np.isfinite(list(m.values())).all() for m in history)
    assert history[0]["d_loss"] != history[-1]["d_loss"]
    assert history[0]["g_loss"] != history[-1]["g_loss"]


def test_discriminator_updates_alone_learn_to_separate_real_from_generated():
    config, state, u, real = _setup()
    d_update = _d_update(u)
    history = []
    for i in range(15):
        state, metrics = d_update(state, real, jax.random.key(i))
        history.append({k: float(v) for k, v in metrics.items()})
    first, last = history[0], history[-1]
    assert last["d_loss"] < 0.7 * first["d_loss"]
    assert last["d_real"] > first["d_real"] + 0.1
    assert last["d_fake"] < first["d_fake"]


def test_d_steps_consume_one_real_batch_each():
    config, state, u, real = _setup()
    train_step = _jit_step(u)
    labels = np.zeros((1, len(real)), np.int32)
    one, _ = train_step(state, real[None], labels)
    two, _ = train_step(state, np.stack([real, real]), np.concatenate([labels, labels]))
    assert int(one.step) == int(two.step) == 1
    # Two D updates move Adam's count twice.
    assert int(jax.tree.leaves(two.d.opt_state)[0]) == 2 * int(jax.tree.leaves(one.d.opt_state)[0])
    assert int(jax.tree.leaves(two.g.opt_state)[0]) == int(jax.tree.leaves(one.g.opt_state)[0])


def test_batch_size_not_divisible_by_devices_names_nearest_sizes():
    mesh = parallel.make_mesh(jax.devices() * 1)
    loop.check_batch_size(64, mesh)

    class EightDevices:
        size = 8

    with pytest.raises(
        ConfigError, match=r"batch_size=60 does not split over 8 devices; use 56 or 64"
    ):
        loop.check_batch_size(60, EightDevices())


def test_a_batch_of_one_image_is_refused_before_the_data_is_read(monkeypatch):
    """BatchNorm over a batch of one subtracts each feature from itself: G's projection is all
    zeros, so G would draw the same image for every z, and the run would train without a word."""
    config = tiny_config(batch_size=1)
    monkeypatch.setattr(data, "load_dataset", lambda *_: pytest.fail("the data was read"))
    with pytest.raises(ConfigError, match=r"batch_size=1: at least 2 \(BatchNorm normalises"):
        loop.train(config)


def _trains_and_stays_finite(config, steps=4):
    config, state, u, _ = _setup(config)
    train_step = _jit_step(u)
    batch = _batches(config)
    history = []
    for i in range(steps):
        state, metrics = train_step(state, *batch(i))
        history.append({k: float(v) for k, v in metrics.items()})
    assert all(np.isfinite(list(m.values())).all() for m in history), history
    assert (
        history[0]["d_loss"] != history[-1]["d_loss"]
        and history[0]["g_loss"] != history[-1]["g_loss"]
    )
    assert not np.any(np.asarray(nonfinite_networks(state)))
    return state, history


def test_reference_architecture_trains_with_dropout_and_no_d_batch_norm():
    config = tiny_config()
    reference = load_experiment("reference_dcgan", REPO / "experiments").model
    variant = ("g_stride1_layers", "g_activation", "g_output_bias", "d_batch_norm", "d_dropout")
    # G at the tiny width.
    config.model.update({field: reference[field] for field in variant}, g_base_features=32)
    state, _ = _trains_and_stays_finite(config)
    assert state.d.batch_stats == {}


@pytest.mark.parametrize(
    "overrides",
    [
        # The other variants train end to end in test_variants.py; these check what only the step
        # shows.
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
        assert float(state.g.learning_rate) == pytest.approx(1e-4)
        assert float(state.d.learning_rate) == pytest.approx(4e-4)


def test_the_step_fields_said_to_change_nothing_leave_the_step_as_it_was():
    """cli.unread's claim for the step's fields: set away from their defaults while what would read
    them is off (hinge has no variant nor penalty, no R1, no top-k), a step is bit-identical."""
    plain = tiny_config()
    plain.loss.name = "hinge"
    changed = resolved(plain)
    changed.loss.update(generator="minimax", gp_weight=1.0, r1_every=3)
    changed.train.top_k_min = 0.3
    assert set(cli.unread(changed)) == {
        "loss.generator",
        "loss.gp_weight",
        "loss.r1_every",
        "train.top_k_min",
    }
    config, state, u, _ = _setup(plain)
    batch = _batches(config)(0)
    after, _ = _jit_step(u)(state, *batch)
    _, _, changed_u, _ = _setup(changed)
    assert trees_equal(_jit_step(changed_u)(state, *batch)[0], after)


def test_ema_is_the_moving_average_of_the_generator_weights():
    config = tiny_config()
    config.train.ema_decay = 0.75
    config, state, u, _ = _setup(config)
    train_step = _jit_step(u)
    batch = _batches(config)
    state = state.replace(step=state.step + 100)  # Past the warm-up: min(0.75, 101/110) = 0.75.
    after, _ = train_step(state, *batch(0))
    expected = jax.tree.map(lambda ema, new: 0.75 * ema + 0.25 * new, state.g_ema, after.g.params)
    for ours, theirs in zip(jax.tree.leaves(after.g_ema), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    # At step 0 the warm-up decay is 1/10: the average moves most of the way to G.
    first, _ = train_step(state.replace(step=state.step * 0), *batch(0))
    expected = jax.tree.map(lambda ema, new: 0.1 * ema + 0.9 * new, state.g_ema, first.g.params)
    for ours, theirs in zip(jax.tree.leaves(first.g_ema), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_reused_fake_batch_gives_g_the_gradient_through_the_updated_discriminator():
    """reuse_fake: G's update on D's fake batch (its forward pass kept as a VJP) equals the plain
    gradient of G's loss on that same batch through the updated D."""
    import optax

    from dcgan_jax.gan import losses

    config, state, u, real = _setup()
    nets, d_key, g_key = u.nets, jax.random.key(1), jax.random.key(2)

    @jax.jit  # One program: op by op, this test would spend its time dispatching.
    def reused(state, real):
        fakes = step.generate(u, state.g, d_key, len(real))
        after_d, _ = step.d_update(state, (real, None), fakes, d_key, u)
        fresh = step.generate(u, state.g, d_key, len(real))  # The same batch, made again.
        fresh_d, _ = step.d_update(state, (real, None), fresh, d_key, u)
        after_g, metrics = step.g_update(after_d, fakes, g_key, u)
        return after_d, fresh_d, after_g, metrics, fakes.batch_stats, fakes.labels

    after_d, fresh_d, after_g, metrics, g_batch_stats, labels = reused(state, real)
    assert labels is None
    assert jax.tree.all(
        jax.tree.map(lambda a, b: np.allclose(a, b, atol=1e-6), after_d.d.params, fresh_d.d.params)
    )

    def direct_loss(g_params):
        z = jax.random.normal(d_key, (len(real), config.model.latent_dim))
        images = nets.generator.apply(
            {"params": g_params, "batch_stats": state.g.batch_stats},
            z,
            train=True,
            mutable=["batch_stats"],
        )[0]
        logits = nets.discriminator.apply(
            after_d.d.variables,
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.fold_in(g_key, 2)},
        )[0]
        return losses.generator_loss(logits, config.loss.name, config.loss.generator)

    loss, grads = jax.jit(jax.value_and_grad(direct_loss))(state.g.params)
    step_updates, _ = u.tx.update(grads, state.g.opt_state, state.g.params)
    expected = optax.apply_updates(state.g.params, step_updates)
    np.testing.assert_allclose(float(metrics["g_loss"]), float(loss), rtol=1e-5)
    for ours, theirs in zip(
        jax.tree.leaves(after_g.g.params), jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert trees_equal(after_g.g.batch_stats, g_batch_stats)  # From the one forward pass.
    assert trees_equal(after_g.d.params, after_d.d.params)


def test_reuse_fake_option_trains_and_differs_from_fresh_batches():
    finals = {}
    for reuse in (False, True):
        config = tiny_config()
        config.train.reuse_fake = reuse
        finals[reuse], _ = _trains_and_stays_finite(config, steps=6)
    assert not trees_equal(finals[True].g.params, finals[False].g.params)


def test_a_dispatch_of_several_steps_equals_single_steps():
    """Three steps in one dispatch of the compiled step (a scan, gathering its batches on the
    device) end where three single steps on host-made batches end, with the same metrics."""
    config, state, u, _ = _setup(tiny_config())
    mesh = parallel.make_mesh()
    images, labels = data.synthetic_images(256, seed=1)
    order = data.BatchOrder(images, config.train.batch_size, seed=0)
    single, batch = _jit_step(u), _batches(config)
    # A copy: the dispatch donates its state.
    expected = jax.tree.map(np.array, jax.device_get(state))
    singles = []
    for i in range(3):
        expected, metrics = single(expected, *batch(i))
        singles.append(metrics)
    indices = order.step_indices(0, 3, d_steps=1)
    np.testing.assert_array_equal(indices[:, 0], [order.indices(i) for i in range(3)])
    steps = step.jit_train_steps(u, mesh)
    final, stacked = steps(state, step.put_on_devices(images, labels, mesh), indices)
    assert int(final.step) == 3
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state))  # Donated: updated in place.
    for a, b in zip(
        jax.tree.leaves(jax.device_get(final)),
        jax.tree.leaves(jax.device_get(expected)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    for name, values in stacked.items():
        assert values.shape == (3,)
        np.testing.assert_allclose(values, [float(m[name]) for m in singles], atol=1e-5, rtol=1e-4)


def test_top_k_share_starts_whole_decays_per_epoch_and_stops_at_its_floor():
    train = tiny_config().train
    assert step.top_k_keep(jax.numpy.int32(5), 16, 128, train) is None  # Off by default.
    train.top_k_decay, train.top_k_min = 0.5, 0.3
    keep = lambda s: float(step.top_k_keep(jax.numpy.int32(s), 16, 128, train))  # noqa: E731 (8 steps an epoch)
    assert keep(0) == 1.0
    assert keep(8) == pytest.approx(0.5)
    assert keep(4) == pytest.approx(0.5**0.5)
    assert keep(16) == pytest.approx(0.3)  # 0.25 is below the floor.


def test_top_k_generator_update_is_the_gradient_over_the_fakes_d_rates_best():
    """keep = 0.25: G's loss and update are those of the 4 of 16 fakes with the highest logits, as
    if the other 12 were not in the loss (they still pass through G's and D's BatchNorm)."""
    import optax

    from dcgan_jax.gan import losses, sampling

    config, state, u, real = _setup()
    key = jax.random.key(5)
    after, metrics = _g_update(u, len(real), keep=jax.numpy.float32(0.25))(state, key)

    def logits_of(g_params):
        fakes = step.generate(u, state.g.replace(params=g_params), key, len(real))
        dropout_key = jax.random.fold_in(key, sampling.FAKE_DROPOUT)
        return step.discriminate(u, state.d.variables, fakes.images, fakes.labels, dropout_key)[0]

    best = np.argsort(np.asarray(jax.jit(logits_of)(state.g.params)))[-4:]
    by_hand = lambda p: jax.numpy.mean(jax.nn.softplus(-logits_of(p)[best]))  # noqa: E731
    loss, grads = jax.jit(jax.value_and_grad(by_hand))(state.g.params)
    full = float(losses.generator_loss(jax.jit(logits_of)(state.g.params)))
    assert float(metrics["g_loss"]) == pytest.approx(float(loss), rel=1e-5) and float(loss) < full
    updates, _ = u.tx.update(grads, state.g.opt_state, state.g.params)
    expected = optax.apply_updates(state.g.params, updates)
    for ours, theirs in zip(
        jax.tree.leaves(after.g.params), jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_train_step_with_top_k_reports_the_share_and_needs_the_dataset_size():
    config = tiny_config()
    config.train.top_k_decay = 0.5
    config, state, u, _ = _setup(config)
    batch = _batches(config)
    jitted = jax.jit(lambda s, r, lab: step.train_step(s, r, lab, u, dataset_size=32))
    _, metrics = jitted(state.replace(step=state.step + 2), *batch(0))  # One epoch: 32 / 16 steps.
    assert float(metrics["top_k_keep"]) == pytest.approx(0.5)
    with pytest.raises(TypeError, match="dataset_size"):
        step.train_step(state, *batch(0), u)
