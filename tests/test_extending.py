"""The extension points, used as a researcher would: a loss and a dataset registered from outside
the package, trained by name through launch.py's flags and resumed; and the GAN's loop run with its
do-nothing hooks, no harness and no workdir."""

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, python, shared_dataset_dir, tiny_config, trees_equal

import dcgan_jax
from dcgan_jax.gan import ConfigError, data, loop, losses, parallel

# A script that registers a loss and a dataset, then runs launch.py as the shell would: nothing in
# dcgan_jax/ names either of them.
REGISTER_AND_LAUNCH = textwrap.dedent(
    """
    import runpy, sys
    import jax, jax.numpy as jnp, numpy as np
    from dcgan_jax.gan import data, losses

    def softplus_d(real_logits, fake_logits, real_label):
        return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))

    def softplus_g(fake_logits, variant):
        return jax.nn.softplus(-fake_logits)

    def load_stripes(dataset_config, seed):
        rng = np.random.default_rng([seed, dataset_config.split == "test"])
        images = np.zeros((512, 28, 28, 1), np.uint8)
        rows = rng.integers(0, 28, size=512)
        images[np.arange(512), rows] = 255
        return images, rows % 2

    losses.register("softplus_gan", losses.Loss(softplus_d, softplus_g, d_steps=2))
    data.register("stripes", data.Dataset(load_stripes, scored_by=None))
    sys.argv[0] = "launch.py"
    runpy.run_path("launch.py", run_name="__main__")
    """
)


def test_a_loss_and_a_dataset_registered_from_outside_train_by_name_and_resume(tmp_path):
    script = tmp_path / "register_and_launch.py"
    script.write_text(REGISTER_AND_LAUNCH)
    flags = [
        "--experiment=fashion_dcgan",
        f"--workdir={tmp_path / 'run'}",
        "--config.loss.name=softplus_gan",
        "--config.dataset.name=stripes",
        "--config.model.num_classes=2",
        "--config.dataset.labels=dataset",
        "--config.model.base_width=8",
        "--config.model.latent_dim=16",
        "--config.train.batch_size=16",
        "--config.train.recompute_bn=false",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=3",
        "--config.train.sample_every=3",
        "--config.train.num_samples=16",
        "--config.eval.every=0",
    ]
    first = python(str(script), *flags, "--config.train.num_steps=3")
    assert first.returncode == 0, first.stderr[-3000:]
    second = python(str(script), *flags, "--config.train.num_steps=5")
    assert second.returncode == 0, second.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["loss"]["name"] == "softplus_gan" and config["dataset"]["name"] == "stripes"
    assert config["train"]["d_steps"] == 2  # The registered loss's default.
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Resumed from" in log and "at step 3" in log
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert steps == [1, 2, 3, 4, 5]
    assert not (set(losses.LOSSES) | set(data.DATASETS)) & {"softplus_gan", "stripes"}  # Not here.
    package = "".join(path.read_text() for path in (REPO / "dcgan_jax").rglob("*.py"))
    assert "softplus_gan" not in package and "stripes" not in package


def test_an_unregistered_name_is_refused_with_the_registered_ones(tmp_path):
    result = python(
        "launch.py",
        "--experiment=fashion_dcgan",
        f"--workdir={tmp_path / 'run'}",
        "--config.loss.name=softplus_gan",
    )
    assert result.returncode == 2
    assert (
        "--config.loss.name='softplus_gan': must be one of bce, hinge, lsgan, wgan_gp"
        in result.stderr
    )


def test_the_gan_loop_runs_with_its_do_nothing_hooks():
    """No workdir, lock, checkpoint or log file: the loop alone, as in a notebook."""
    config = tiny_config(num_steps=4)

    class Counting(loop.Hooks):
        def __init__(self):
            self.calls = []

        def log(self, gan_state, step, *, at_sample):
            self.calls.append(("log", step))

        def checkpoint(self, gan_state, step):
            self.calls.append(("checkpoint", step))

    state = loop.train(config)
    assert int(parallel.to_host(state.step)) == 4
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(parallel.to_host(state)))
    counting = Counting()
    counted = loop.train(config, counting)
    assert counting.calls == [("log", 2), ("checkpoint", 3), ("log", 4), ("checkpoint", 4)]
    assert trees_equal(parallel.to_host(state), parallel.to_host(counted))  # Hooks only watch.


def test_a_step_that_is_checkpointed_and_evaluated_is_checkpointed_first():
    """An evaluation takes minutes with Inception on a CPU; a kill during it (a scheduler's, after
    its grace period) must not take the step's checkpoint with it."""
    config = tiny_config(num_steps=6)
    config.eval.every = 3
    config.dataset.name = "fashion_mnist"  # Scored by its classifier (the hooks score nothing).
    config.dataset.data_dir = str(shared_dataset_dir("fashion_mnist"))

    class Order(loop.Hooks):
        def __init__(self):
            self.calls = []

        def checkpoint(self, gan_state, step):
            self.calls.append(("checkpoint", step))

        def evaluate(self, gan_state, step):
            self.calls.append(("evaluate", step))

    order = Order()
    loop.train(config, order)
    assert order.calls == [("checkpoint", 3), ("evaluate", 3), ("checkpoint", 6), ("evaluate", 6)]


def test_a_registered_loader_returning_other_arrays_is_refused_naming_what_they_are(
    tmp_path, monkeypatch
):
    """Float images, wide integers, a label count that is not the image count, negative labels,
    images that are not square or lack a channel axis: each trained silently on garbage or failed
    deep in Flax before."""
    square = np.zeros((64, 16, 16, 1), np.uint8)
    labels = np.zeros(64, np.int64)
    returned = {
        "floats": (square.astype(np.float32) / 255, labels),
        "wide": (square.astype(np.int64) + 300, labels),
        "counts": (square, labels[:10]),
        "negative": (square, labels - 3),
        "oblong": (np.zeros((64, 16, 32, 1), np.uint8), labels),
        "no_channels": (square[..., 0], labels),
    }
    for name, arrays in returned.items():
        monkeypatch.setitem(data.DATASETS, name, data.Dataset(lambda c, s, a=arrays: a))
        config = tiny_config(num_steps=2)
        config.dataset.name = name
        with pytest.raises(data.DataError, match=f"the loader of dataset '{name}' returned images"):
            loop.train(config)
    monkeypatch.setitem(data.DATASETS, "fine", data.Dataset(lambda c, s: (square, labels)))
    config = tiny_config(num_steps=1)
    config.dataset.name = "fine"
    assert int(parallel.to_host(loop.train(config).step)) == 1


def _mean_d(real_logits, fake_logits, real_label):
    return jnp.mean(fake_logits) - jnp.mean(real_logits)


def _per_fake_g(fake_logits, variant):
    return -fake_logits


@pytest.mark.parametrize(
    "loss, message",
    [
        (losses.Loss(_mean_d, _per_fake_g, d_steps=0), r"\[\(\), \(4,\), \(\)\] .* d_steps=0;"),
        (losses.Loss(lambda r, f, label: f - r, _per_fake_g), r"\[\(4,\), \(4,\), \(\)\]"),
        (losses.Loss(_mean_d, lambda f, variant: jnp.mean(-f)), r"\[\(\), \(\), \(\)\]"),
        (
            losses.Loss(_mean_d, _per_fake_g, penalty=lambda critic, r, f, key: critic(r)),
            r"\[\(\), \(4,\), \(4,\)\]",
        ),
        ((_mean_d, _per_fake_g), "registered as a tuple, not a losses.Loss"),
    ],
    ids=["no_d_steps", "d_loss_per_image", "g_loss_averaged", "penalty_per_image", "not_a_loss"],
)
def test_a_registered_loss_of_other_shapes_is_refused_before_training(
    loss, message, tmp_path, monkeypatch
):
    """Before: an UnboundLocalError or JAX's own error inside the first step, an AttributeError,
    or (a G loss averaged instead of one per fake) top-k weights silently doing nothing."""
    monkeypatch.setitem(losses.LOSSES, "odd", loss)
    config = tiny_config()
    config.loss.name = "odd"
    config.model.d_batch_norm = False
    with pytest.raises(ConfigError, match=r"--config.loss.name=odd: .*" + message):
        dcgan_jax.train(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists()
