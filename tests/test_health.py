"""The health monitors a run is judged by from its log alone: gradient norms, D's logit gap, and the
sample-diversity signal with its mode-collapse alarm, on constructed healthy and collapsed cases."""

import numpy as np
import pytest
from conftest import shared_dataset_dir, tiny_config

import dcgan_jax
from dcgan_jax.evaluation import metrics
from dcgan_jax.gan import data, loop
from dcgan_jax.run import writers

HEALTH_KEYS = ("g_grad_norm", "d_grad_norm", "d_logit_gap", "diversity")


def _diversity(samples, reference):
    return metrics.sample_diversity(samples, metrics.mean_pairwise_distance(reference))


def test_diversity_reads_one_for_real_images_and_zero_for_copies_of_one():
    pictures = data.to_model_range(data.synthetic_images(128, seed=0)[0])
    reference, others = pictures[:64], pictures[64:]
    assert 0.8 < _diversity(others, reference) < 1.25
    assert _diversity(np.repeat(others[:1], 64, axis=0), reference) < 1e-6
    noise = np.random.default_rng(0).normal(0, 0.01, (64, *others.shape[1:]))
    assert _diversity(others[:1] + noise, reference) < 0.05  # One image, jittered: still collapsed.
    # Four modes of 64 is not one.
    assert _diversity(np.repeat(others[:4], 16, axis=0), reference) > 0.6
    assert metrics.mean_pairwise_distance(
        np.stack([np.zeros((2, 2)), np.full((2, 2), 3.0)])
    ) == pytest.approx(6.0)


def test_diversity_of_real_fashion_mnist_images():
    folder = shared_dataset_dir("fashion_mnist")
    pictures = data.to_model_range(data.load_idx_folder(folder, "test")[0][:128])
    assert 0.85 < _diversity(pictures[64:], pictures[:64]) < 1.15
    one_class = pictures[64:][
        np.argsort(np.abs(pictures[64:] - pictures[64]).sum(axis=(1, 2, 3)))[:16]
    ]
    assert _diversity(one_class, pictures[:64]) < _diversity(pictures[64:], pictures[:64])


def _collapse_generator(monkeypatch):
    """Every run made from now on starts with G's first layer zeroed: G maps every z to one
    image."""
    initial_state = loop.initial_state

    def collapsed(config, nets, image_shape):
        state = initial_state(config, nets, image_shape)
        params = dict(state.g.params, Dense_0={"kernel": 0 * state.g.params["Dense_0"]["kernel"]})
        return state.replace(g=state.g.replace(params=params))

    monkeypatch.setattr(loop, "initial_state", collapsed)


@pytest.mark.parametrize("collapsed", [False, True], ids=["healthy", "collapsed"])
def test_health_signals_are_logged_and_the_alarm_fires_on_a_collapsed_run_only(
    tmp_path, monkeypatch, collapsed
):
    """300 steps of the tiny model: trained normally, its grid's diversity rises past 0.4 by step
    150 (the warmup here); with G's first layer zeroed and its learning rate ~0, G maps every z to
    one image all along. The diversity (and its alarm) comes with the log lines of the grid steps
    only."""
    config = tiny_config(
        num_steps=300, log_every=50, checkpoint_every=300, sample_every=100, collapse_warmup=150
    )
    if collapsed:
        _collapse_generator(monkeypatch)
        config.optimizer.g_learning_rate = 1e-12
    dcgan_jax.train(config, tmp_path)
    rows = writers.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [50, 100, 150, 200, 250, 300]
    assert [r["step"] for r in rows if "diversity" in r] == [100, 200, 300]
    assert all(np.isfinite(r[key]) for r in rows for key in HEALTH_KEYS if key in r)
    assert all(r["g_grad_norm"] > 0 and r["d_grad_norm"] > 0 for r in rows)
    log = (tmp_path / "train.log").read_text()
    assert "|grad| G " in log and " | logit gap " in log and " | diversity " in log
    assert " | diversity " not in next(line for line in log.splitlines() if "step 50/300 " in line)
    alarms = [line for line in log.splitlines() if "G may have collapsed" in line]
    late = [r["diversity"] for r in rows if r["step"] >= 150 and "diversity" in r]
    if collapsed:
        assert max(r.get("diversity", 0) for r in rows) < 1e-3
        assert (
            len(alarms) == 2
            and "WARNING Step 200: the sample grid's diversity is 0.000" in alarms[0]
        )
    else:
        assert min(late) > 0.3 and not alarms


def test_no_alarm_during_the_warmup_or_when_switched_off(tmp_path, monkeypatch):
    _collapse_generator(monkeypatch)
    for name, overrides in (
        ("warmup", {"collapse_warmup": 100}),
        ("off", {"collapse_threshold": 0.0}),
    ):
        config = tiny_config(
            num_steps=2, log_every=2, checkpoint_every=2, sample_every=2, **overrides
        )
        config.optimizer.g_learning_rate = 1e-12
        dcgan_jax.train(config, tmp_path / name)
        assert "G may have collapsed" not in (tmp_path / name / "train.log").read_text()
        assert writers.read_metrics(tmp_path / name / "metrics.jsonl")[0]["diversity"] < 1e-3


def test_a_one_image_grid_logs_no_diversity_and_no_warning(tmp_path, caplog, recwarn):
    """A diversity needs a pair: with train.num_samples=1 it is left out of the log, the metrics
    and TensorBoard (not NaN with NumPy's and tensorboardX's warnings on the console)."""
    config = tiny_config(num_steps=2, log_every=1, sample_every=1, checkpoint_every=2)
    config.train.update(num_samples=1, collapse_warmup=0)
    with caplog.at_level("WARNING"):
        dcgan_jax.train(config, tmp_path)
    rows = writers.read_metrics(tmp_path / "metrics.jsonl")
    assert len(rows) == 2 and not any("diversity" in row for row in rows)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert np.isnan(metrics.mean_pairwise_distance(np.zeros((1, 4, 4, 1))))
