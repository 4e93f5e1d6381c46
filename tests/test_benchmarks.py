"""The benchmark scripts still run against the package they measure: nothing else calls them, so a
change of the package's API broke them unseen (benchmarks/throughput.py read ``Run.indices``, gone
since the restructuring). Smoke runs on tiny settings; no figure is asserted (speed and quality
targets live in benchmarks/, not in timed tests)."""

import pytest
from conftest import python, shared_dataset_dir, tiny_config

import dcgan_jax

TINY_MODEL = [
    "--set=dataset.name=synthetic",
    "--set=dataset.labels=dataset",
    "--set=model.num_classes=0",
    "--set=model.base_width=8",
    "--set=model.latent_dim=16",
]


# inception_torch.py runs in the torch virtualenv (it imports torch) and is called by these.
@pytest.mark.parametrize("script", ["quality", "inception_parity"])
def test_the_benchmarks_that_need_torch_or_hours_still_import(script):
    """Their imports of the package (names moved or removed fail here), not their main."""
    load = f"import runpy; runpy.run_path('benchmarks/{script}.py', run_name='smoke')"
    result = python("-c", load, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_throughput_benchmark_times_the_training_step():
    result = python(
        "benchmarks/throughput.py", "--batch_sizes=8", "--steps=2", "--rounds=1", *TINY_MODEL
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| 8 |" in result.stdout, result.stdout


def test_the_evaluation_speed_and_recompute_bn_benchmarks_score_a_run(tmp_path):
    data_dir = shared_dataset_dir("fashion_mnist")
    config = tiny_config(ema_decay=0.9)
    config.dataset.update(name="fashion_mnist", data_dir=str(data_dir))
    dcgan_jax.train(config, tmp_path / "run")
    speed = python("benchmarks/evaluation_speed.py", f"--workdir={tmp_path / 'run'}")
    assert speed.returncode == 0 and "scored in" in speed.stdout, speed.stderr[-3000:]
    recomputed = python("benchmarks/recompute_bn.py", str(tmp_path / "run"))
    assert recomputed.returncode == 0, recomputed.stderr[-3000:]
    assert "| recomputed |" in recomputed.stdout, recomputed.stdout
