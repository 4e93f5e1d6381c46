"""Sweeps: the grid, its commands, running it (skipping finished runs, resuming an unfinished one)
and the results table."""

import csv
import json
import subprocess
import sys

import pytest
from conftest import REPO, tiny_config

import dcgan_jax
from dcgan_jax import config as config_lib
from dcgan_jax import control, sweep


def test_grid_of_all_combinations_with_typed_values_and_readable_names():
    runs = sweep.expand(
        "optimizer.learning_rate=1e-4,2e-4 model.base_width=32,64 seed=0,1", config_lib.default_config()
    )
    assert len(runs) == 8
    assert runs[0].name == "optimizer.learning_rate=1e-4,model.base_width=32,seed=0"
    assert runs[0].overrides == {"optimizer.learning_rate": 1e-4, "model.base_width": 32, "seed": 0}
    assert isinstance(runs[0].overrides["model.base_width"], int)
    assert len({r.name for r in runs}) == 8
    config = sweep.configure(config_lib.default_config(), runs[-1])
    assert (config.optimizer.learning_rate, config.model.base_width, config.seed) == (2e-4, 64, 1)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("optimizer.learnin_rate=1e-4,2e-4", r"optimizer.learnin_rate: no such config field. Did you mean: optimizer"),
        ("model.base_width=", "model.base_width has an empty value"),
        ("model.base_width=32,,64", "model.base_width has an empty value"),
        ("model.base_width=32,wide", "model.base_width='wide' is not a valid int"),
        ("optimizer.learning_rate=2e-4,-1", r"--config.optimizer.learning_rate=-1.0: must be > 0"),
        ("model.base_width", "'model.base_width' is not FIELD=VALUE1,VALUE2"),
        ("", "--sweep is empty"),
    ],
)
def test_bad_sweep_specs_fail_before_any_run(spec, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        sweep.expand(spec, config_lib.default_config())


def test_dry_run_prints_one_command_a_run_and_a_bad_spec_exits_2(tmp_path):
    args = [
        sys.executable,
        "launch.py",
        "--experiment=fashion_dcgan",
        f"--workdir={tmp_path}",
        "--config.train.num_steps=50",
    ]
    dry = subprocess.run(
        [*args, "--sweep=seed=0,1,2 loss.generator=minimax,non_saturating", "--sweep_dry_run"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    lines = dry.stdout.strip().splitlines()
    assert len(lines) == 6
    assert lines[0] == (
        f"python launch.py --experiment=fashion_dcgan --workdir={tmp_path}/seed=0,loss.generator=minimax "
        "--config.train.num_steps=50 --config.seed=0 --config.loss.generator=minimax"
    )
    assert not list(tmp_path.iterdir())  # Nothing was run.
    bad = subprocess.run([*args, "--sweep=seed=0,x"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "error: --sweep: seed='x' is not a valid int" in bad.stderr


def test_sweep_runs_the_grid_skips_finished_runs_resumes_unfinished_and_tabulates(tmp_path):
    base = tiny_config(num_steps=4)
    runs = sweep.expand("seed=0,1", base)
    # As if a first attempt had been killed during the second run: checkpoint at step 2, no status.
    dcgan_jax.train(sweep.configure(tiny_config(num_steps=2), runs[1]), tmp_path / runs[1].name)
    (tmp_path / runs[1].name / control.STATUS_FILE).unlink()
    trained = []

    def train(config, workdir):
        trained.append(workdir.name)
        return dcgan_jax.train(config, workdir)

    rows = sweep.run_sweep(base, runs, tmp_path, train)
    assert trained == ["seed=0", "seed=1"]
    assert "Resumed from" in (tmp_path / "seed=1" / "train.log").read_text()
    assert [(r["run"], r["seed"], r["steps"], r["status"]) for r in rows] == [
        ("seed=0", 0, 4, "finished"),
        ("seed=1", 1, 4, "finished"),
    ]
    assert all(r["wall_s"] > 0 and r["g_loss"] is not None for r in rows)
    with (tmp_path / "results.csv").open() as f:
        assert [row["run"] for row in csv.DictReader(f)] == ["seed=0", "seed=1"]
    assert "| run | seed | steps |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "g_loss.png").stat().st_size > 1000
    # A rerun finds both finished and trains nothing.
    trained.clear()
    sweep.run_sweep(base, runs, tmp_path, train)
    assert trained == []


def test_results_command_on_a_folder_without_runs_names_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dcgan_jax.sweep", f"--runs={tmp_path}"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and f"no runs (folders with a config.json) in {tmp_path}" in result.stderr


def test_a_diverged_run_is_marked_and_the_sweep_goes_on(tmp_path):
    from dcgan_jax.control import TrainingDiverged

    base = tiny_config(num_steps=2)
    runs = sweep.expand("seed=0,1", base)

    def train(config, workdir):  # Seed 0 ends as a diverged run does: its status.json says so, then it raises.
        if config.seed == 0:
            workdir.mkdir(parents=True)
            (workdir / "config.json").write_text(config.to_json())
            message = "training diverged at step 1: non-finite d_loss=nan (discriminator)"
            control.write_status(workdir, 2, 1, "diverged", 0.5, message)
            raise TrainingDiverged(message, 1)
        return dcgan_jax.train(config, workdir)

    rows = sweep.run_sweep(base, runs, tmp_path, train)
    assert [(r["run"], r["status"]) for r in rows] == [("seed=0", "diverged"), ("seed=1", "finished")]
    assert "non-finite d_loss" in control.read_status(tmp_path / "seed=0")["detail"]


def test_results_show_the_last_evaluation_and_the_best_fid(tmp_path):
    """Read from the run folders alone (config.json, metrics.jsonl, status.json)."""
    for seed, fids in ((0, (200.0, 150.0, 160.0)), (1, ())):
        run = tmp_path / f"seed={seed}"
        run.mkdir()
        config = tiny_config()
        config.seed = seed
        (run / "config.json").write_text(config.to_json())
        lines = [{"step": 10, "d_loss": 0.5, "g_loss": 2.0, "d_real_acc": 0.9, "d_fake_acc": 0.8}]
        lines += [
            {
                "step": 10 * (i + 1),
                "eval/fid": fid,
                "eval/kid": fid / 10,
                "eval/precision": 0.5 + i / 10,
                "eval/recall": 0.4,
                "eval/classes_covered": 10.0,
            }
            for i, fid in enumerate(fids)
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        (run / control.STATUS_FILE).write_text(json.dumps({"step": 30, "finished": True, "wall_seconds": 12.0}))
    evaluated, not_evaluated = sweep.results(tmp_path)
    assert (evaluated["final_fid"], evaluated["best_fid"], evaluated["final_kid"]) == (160.0, 150.0, 16.0)
    last = (evaluated["final_precision"], evaluated["final_recall"], evaluated["final_classes_covered"])
    assert last == (0.7, 0.4, 10)
    assert not_evaluated["final_fid"] is None and not_evaluated["final_precision"] is None
    assert (evaluated["seed"], evaluated["steps"], evaluated["status"]) == (0, 30, "finished")
