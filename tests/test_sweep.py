"""Sweeps: the grid, its commands, running it (skipping finished runs, resuming an unfinished one)
and the results table."""

import csv
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, python, tiny_config, tiny_flags

import dcgan_jax
from dcgan_jax.gan import ConfigError
from dcgan_jax.gan import config as config_lib
from dcgan_jax.run import control, images
from dcgan_jax.tools import slurm, sweep


def test_grid_of_all_combinations_with_typed_values_and_readable_names():
    runs = sweep.expand(
        "optimizer.learning_rate=1e-4,2e-4 model.base_width=32,64 seed=0,1",
        config_lib.default_config(),
    )
    assert len(runs) == 8
    assert runs[0].name == "optimizer.learning_rate=1e-4,model.base_width=32,seed=0"
    assert runs[0].overrides == {"optimizer.learning_rate": 1e-4, "model.base_width": 32, "seed": 0}
    assert isinstance(runs[0].overrides["model.base_width"], int)
    assert len({r.name for r in runs}) == 8
    config = sweep.configure(config_lib.default_config(), runs[-1])
    assert (config.optimizer.learning_rate, config.model.base_width, config.seed) == (2e-4, 64, 1)


def test_a_value_that_is_a_path_names_one_folder_a_run_not_a_nest(tmp_path):
    """dataset.data_dir=/a/b: the run's folder is one name (its / written %2F), where the results
    and a SLURM array find it; the flag keeps the path."""
    runs = sweep.expand("dataset.data_dir=/data/a,b/c", config_lib.default_config())
    argvs = sweep.commands("fashion_dcgan", tmp_path, runs, {}, REPO / "launch.py")
    workdirs = [
        Path(a.split("=", 1)[1]) for argv in argvs for a in argv if a.startswith("--workdir")
    ]
    assert [w.parent for w in workdirs] == [tmp_path, tmp_path]
    assert workdirs[0].name == "dataset.data_dir=%2Fdata%2Fa"
    assert argvs[0][-1] == "--config.dataset.data_dir=/data/a" and runs[1].folder.count("/") == 0


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "optimizer.learnin_rate=1e-4,2e-4",
            r"optimizer.learnin_rate: no such config field. Did you mean: optimizer",
        ),
        ("model.base_width=", "model.base_width has an empty value"),
        ("model.base_width=32,,64", "model.base_width has an empty value"),
        ("model.base_width=32,wide", "model.base_width='wide' is not a valid int"),
        ("optimizer.learning_rate=2e-4,-1", r"--config.optimizer.learning_rate=-1.0: must be > 0"),
        ("model.base_width", "'model.base_width' is not FIELD=VALUE1,VALUE2"),
        ("", "--sweep is empty"),
        (  # Runs that would repeat each other: R1's period without R1.
            "loss.r1_every=2,4",
            r"--sweep: loss.r1_every=2: loss.r1_every=2 changes nothing with loss.r1_gamma=0.0",
        ),
        (  # The synthetic set's size for another dataset.
            "dataset.num_synthetic=256,512",
            r"num_synthetic=256 changes nothing with dataset.name=fashion_mnist",
        ),
        (  # A folder name the file system refuses (a run's first write failed with a traceback).
            f"dataset.data_dir=/{'d' * 250} seed=0,1",
            r"would be a name of 277 bytes, over the 255 a file system takes: give the fields",
        ),
    ],
)
def test_bad_sweep_specs_fail_before_any_run(spec, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        sweep.expand(spec, config_lib.default_config())


def test_a_command_setting_a_run_of_the_grid_never_reads_is_refused():
    """Each run's command repeats the sweep's --config flags, and a single run refuses one it never
    reads: so does the sweep, before any run."""
    base = config_lib.default_config()
    base.loss.gp_weight = 5.0
    base.model.d_batch_norm = False
    with pytest.raises(ConfigError, match=r"--sweep: loss.name=hinge: loss.gp_weight=5.0 changes"):
        sweep.expand("loss.name=wgan_gp,hinge", base, ["loss.gp_weight"])
    base.loss.name = "wgan_gp"
    runs = sweep.expand("seed=0,1", base, ["loss.gp_weight"])
    assert [run.name for run in runs] == ["seed=0", "seed=1"]


def test_dry_run_prints_one_absolute_command_a_run_and_a_bad_spec_exits_2(tmp_path):
    args = [
        sys.executable,
        "launch.py",
        "--experiment=fashion_dcgan",
        "--workdir=relative/sweep",
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
    # The interpreter, launcher and workdir absolute: the line runs from any folder, in a shell
    # without the virtualenv on its PATH (xargs, a scheduler).
    assert shlex.split(lines[0]) == [
        sys.executable,
        str(REPO / "launch.py"),
        "--experiment=fashion_dcgan",
        f"--workdir={REPO / 'relative/sweep'}/seed=0,loss.generator=minimax",
        "--config.train.num_steps=50",
        "--config.seed=0",
        "--config.loss.generator=minimax",
    ]
    assert not (REPO / "relative").exists()  # Nothing was run.
    # Overrides spelled "--config.X V" or "--noconfig.X" reach every run's command as values.
    spelled = [*args, "--config.train.log_every", "7", "--noconfig.train.reuse_fake"]
    other = subprocess.run(
        [*spelled, "--sweep=seed=0", "--sweep_dry_run"], capture_output=True, text=True, cwd=REPO
    )
    assert other.returncode == 0, other.stderr[-2000:]
    assert shlex.split(other.stdout)[4:] == [
        "--config.train.log_every=7",
        "--config.train.num_steps=50",
        "--config.train.reuse_fake=False",
        "--config.seed=0",
    ]
    bad = subprocess.run(
        [*args, "--sweep=seed=0,x"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert bad.returncode == 2 and "error: --sweep: seed='x' is not a valid int" in bad.stderr


def test_slurm_array_run_task_by_task_fills_the_local_sweeps_folders_and_the_results_read_it(
    tmp_path,
):
    """No scheduler here: each task runs as SLURM would start it, SLURM_ARRAY_TASK_ID set, from
    another folder with a PATH that lacks the virtualenv."""
    sweep_dir, script = tmp_path / "grid", tmp_path / "jobs" / "grid.sbatch"
    spec = "seed=0,1"
    made = python(
        "launch.py",
        "--experiment=fashion_dcgan",
        f"--workdir={sweep_dir}",
        *tiny_flags(num_steps=2),
        f"--sweep={spec}",
        f"--sweep_slurm={script}",
        "--sweep_max_parallel=3",
    )
    assert made.returncode == 0, made.stderr[-2000:]
    assert f"submit it with: sbatch {script}" in made.stdout
    text = script.read_text()
    assert (
        "#SBATCH --array=0-1%3\n" in text
        and f"#SBATCH --output={sweep_dir}/slurm_%A_%a.out" in text
    )
    manifest = json.loads((tmp_path / "jobs" / "grid.manifest.json").read_text())
    # run_sweep's folders.
    local_sweep = [str(sweep_dir / r.name) for r in sweep.expand(spec, tiny_config())]
    assert [t["workdir"] for t in manifest["tasks"]] == local_sweep
    jax_cache = {k: v for k, v in os.environ.items() if k.startswith("JAX_")}
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **jax_cache}
    for task in ("0", "1"):
        done = subprocess.run(
            ["bash", str(script)],
            env={**env, slurm.TASK_ENV: task},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["seed=0", "seed=1"]
    assert all(control.read_status(sweep_dir / name)["finished"] for name in ("seed=0", "seed=1"))
    again = subprocess.run(
        ["bash", str(script)], env={**env, slurm.TASK_ENV: "1"}, capture_output=True, text=True
    )
    assert (
        again.returncode == 0 and "Nothing to do: the checkpoint is at step 2 of 2" in again.stderr
    )
    # The array written anew with more steps: each task goes on from its run's checkpoint (it was
    # skipped as finished).
    longer = [f"--workdir={sweep_dir}", *tiny_flags(num_steps=3), f"--sweep={spec}"]
    made = python("launch.py", "--experiment=fashion_dcgan", *longer, f"--sweep_slurm={script}")
    assert made.returncode == 0, made.stderr[-2000:]
    for task in ("0", "1"):
        extended = subprocess.run(
            ["bash", str(script)], env={**env, slurm.TASK_ENV: task}, capture_output=True, text=True
        )
        assert extended.returncode == 0, extended.stderr[-3000:]
    assert [control.read_status(sweep_dir / n)["step"] for n in ("seed=0", "seed=1")] == [3, 3]
    # A run that ended out of time is skipped: its command would spend another budget.
    control.write_status(sweep_dir / "seed=0", 3, 3, "time_limit", 1.0)
    skipped = subprocess.run(
        ["bash", str(script)], env={**env, slurm.TASK_ENV: "0"}, capture_output=True, text=True
    )
    assert "Task 0 (seed=0): ended earlier, skipped." in skipped.stdout, skipped.stderr[-3000:]
    unset = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert (
        unset.returncode != 0
        and "run it with sbatch --array, or set SLURM_ARRAY_TASK_ID" in unset.stderr
    )
    collected = python("-m", "dcgan_jax.sweep", f"--runs={sweep_dir}", cwd=tmp_path)
    assert collected.returncode == 0, collected.stderr[-2000:]
    with (sweep_dir / "settings.csv").open() as f:
        (setting,) = csv.DictReader(f)  # Two seeds of one setting.
    assert (setting["n"], setting["seeds"], setting["steps_mean"]) == ("2", "0 1", "3.0")


@pytest.mark.parametrize(
    "manifest, message",
    [
        ([], "not a sweep manifest (TypeError("),
        ({"tasks": 5}, "not a sweep manifest (TypeError("),
        ({"tasks": [{"name": "a"}]}, "not a sweep manifest (KeyError("),
        ({"tasks": [{"name": "a", "workdir": "w", "argv": []}]}, "a name, a workdir and a command"),
        (
            {"tasks": [{"name": "a", "workdir": 5, "argv": ["x"]}]},
            "a name, a workdir and a command",
        ),
        ({"tasks": []}, "--task=0: the manifest has 0 tasks, numbered from 0"),
        (
            {"tasks": [{"name": "a", "workdir": "w", "argv": ["/no/python", "-m", "x"]}]},
            "task 0 cannot start /no/python (No such file or directory): write the job array again",
        ),
    ],
)
def test_a_damaged_manifest_or_a_missing_interpreter_is_one_error_naming_it(
    manifest, message, tmp_path
):
    """A manifest edited by hand, or a job array whose environment was since removed: not a
    TypeError, KeyError or FileNotFoundError traceback in the task's log."""
    path = tmp_path / "grid.manifest.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=re.escape(message)):
        slurm.run_task(path, 0)


def test_sweep_submit_hands_the_script_to_sbatch_and_says_so_without_one(
    tmp_path, monkeypatch, capsys
):
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch_args"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/sh\necho "$@" > {record}\necho "Submitted batch job 4242"\n')
    fake.chmod(0o755)
    plan = sweep.Plan(
        slurm=str(tmp_path / "a.sbatch"), max_parallel=2, submit=True, launcher=REPO / "launch.py"
    )
    launch = functools.partial(
        sweep.launch, "fashion_dcgan", tiny_config(), tmp_path / "runs", "seed=0,1,2", plan=plan
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    launch(train_fn=lambda *_: pytest.fail("a SLURM sweep trains nothing here"))
    assert record.read_text().split() == [str(tmp_path / "a.sbatch")]
    assert "Submitted batch job 4242" in capsys.readouterr().out
    assert "#SBATCH --array=0-2%2" in (tmp_path / "a.sbatch").read_text()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(
        config_lib.ConfigError,
        match=f"no sbatch on PATH here; on the cluster run: sbatch {tmp_path}",
    ):
        launch(train_fn=None)
    fake.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    with pytest.raises(
        config_lib.ConfigError, match="failed \\(1\\): sbatch: error: invalid partition"
    ):
        launch(train_fn=None)


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
    # With more steps, a rerun goes on from each run's checkpoint (it skipped them as finished).
    rows = sweep.run_sweep(tiny_config(num_steps=6), runs, tmp_path, train)
    assert trained == ["seed=0", "seed=1"] and [r["steps"] for r in rows] == [6, 6]


def test_a_sweep_reruns_a_run_with_steps_to_go_but_not_one_out_of_time_or_diverged(tmp_path):
    """Each rerun decides by this command's train.num_steps: a finished run with more steps to go
    resumes (every finished run was skipped), one stopped by a signal goes on; one that ran out of
    train.max_seconds or diverged is skipped, as before (another budget; the same divergence)."""
    ended = {"finished": 4, "signal": 2, "time_limit": 2, "diverged": 3}
    for how, step in ended.items():
        (tmp_path / how).mkdir()
        control.write_status(tmp_path / how, 4, step, how, 1.0)
    assert [control.nothing_to_do(tmp_path / how, 4) for how in ended] == [True, False, True, True]
    assert [control.nothing_to_do(tmp_path / how, 6) for how in ended] == [False, False, True, True]
    assert not control.nothing_to_do(tmp_path / "never_started", 4)


def test_results_command_on_a_folder_without_runs_names_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dcgan_jax.sweep", f"--runs={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        result.returncode != 0
        and f"no runs (folders with a config.json) in {tmp_path}" in result.stderr
    )
    # A run's own folder given for a folder of runs says so.
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="it is a run itself: give the folder that holds runs"):
        sweep.results(tmp_path)


def test_a_diverged_run_is_marked_and_the_sweep_goes_on(tmp_path):
    from dcgan_jax.run.control import TrainingDiverged

    base = tiny_config(num_steps=2)
    runs = sweep.expand("seed=0,1", base)

    # Seed 0 ends as a diverged run does: its status.json says so, then it raises.
    def train(config, workdir):
        if config.seed == 0:
            workdir.mkdir(parents=True)
            (workdir / "config.json").write_text(config.to_json())
            message = "training diverged at step 1: non-finite d_loss=nan (discriminator)"
            control.write_status(workdir, 2, 1, "diverged", 0.5, detail=message)
            raise TrainingDiverged(message, 1)
        return dcgan_jax.train(config, workdir)

    rows = sweep.run_sweep(base, runs, tmp_path, train)
    assert [(r["run"], r["status"]) for r in rows] == [
        ("seed=0", "diverged"),
        ("seed=1", "finished"),
    ]
    assert "non-finite d_loss" in control.read_status(tmp_path / "seed=0")["detail"]


def _fake_run(folder, seed, fids, learning_rate=2e-4, steps=30):
    """A finished run folder as training leaves it (config.json, metrics.jsonl, status.json): one
    training row, then one evaluation row per FID of ``fids`` at steps 10, 20, ..."""
    folder.mkdir()
    config = tiny_config()
    config.seed, config.optimizer.learning_rate = seed, learning_rate
    (folder / "config.json").write_text(config.to_json())
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
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / control.STATUS_FILE).write_text(
        json.dumps({"step": steps, "finished": True, "wall_seconds": 12.0})
    )


def test_results_show_the_last_evaluation_and_the_best_fid(tmp_path):
    """Read from the run folders alone (config.json, metrics.jsonl, status.json)."""
    _fake_run(tmp_path / "seed=0", 0, (200.0, 150.0, 160.0))
    _fake_run(tmp_path / "seed=1", 1, ())
    evaluated, not_evaluated = sweep.results(tmp_path)
    assert (evaluated["final_fid"], evaluated["best_fid"], evaluated["final_kid"]) == (
        160.0,
        150.0,
        16.0,
    )
    last = (
        evaluated["final_precision"],
        evaluated["final_recall"],
        evaluated["final_classes_covered"],
    )
    assert last == (0.7, 0.4, 10)
    assert not_evaluated["final_fid"] is None and not_evaluated["final_precision"] is None
    assert (evaluated["seed"], evaluated["steps"], evaluated["status"]) == (0, 30, "finished")


def test_seeds_of_a_setting_are_grouped_with_mean_sd_and_a_banded_plot(tmp_path, capsys):
    """2 learning rates x 3 seeds: a row per setting with mean +- sd (and n) beside a row per
    run."""
    final_fids = {1e-4: (100.0, 110.0, 120.0), 2e-4: (50.0, 60.0, 61.0)}
    for lr, fids in final_fids.items():
        for seed, fid in enumerate(fids):
            _fake_run(
                tmp_path / f"lr={lr},seed={seed}",
                seed,
                (fid + 40, fid),
                learning_rate=lr,
                steps=30 + seed,
            )
    rows = sweep.write_results(tmp_path)
    assert len(rows) == 6
    with (tmp_path / "settings.csv").open() as f:
        table = {float(r["optimizer.learning_rate"]): r for r in csv.DictReader(f)}
    slow, fast = table[1e-4], table[2e-4]
    assert (slow["n"], slow["seeds"], slow["final_fid_mean"], slow["final_fid_sd"]) == (
        "3",
        "0 1 2",
        "110.0",
        "10.0",
    )
    # stdev(50, 60, 61), n - 1.
    assert (fast["final_fid_mean"], fast["final_fid_sd"]) == ("57.0", "6.083")
    assert (fast["steps_mean"], fast["steps_sd"], fast["best_fid_mean"]) == ("31.0", "1.0", "57.0")
    text = (tmp_path / "results.md").read_text()
    assert "| optimizer.learning_rate | n | seeds | steps | final_fid | best_fid |" in text
    assert "| 0.0001 | 3 | 0 1 2 | 31 +- 1 | 110 +- 10 | 110 +- 10 |" in text
    assert text.index("## Per setting") < text.index("## Per run") and text.count("lr=") == 6
    with (tmp_path / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 6  # The CSV keeps every run too.
    assert (tmp_path / "eval_fid.png").stat().st_size > 1000
    assert (tmp_path / "eval_fid_bands.png").stat().st_size > 1000
    capsys.readouterr()
    with pytest.raises(
        images.MetricError, match="'eval/fidd' is in no run's metrics.jsonl. Did you mean: eval/fid"
    ):
        sweep.write_results(tmp_path, "eval/fidd")
    # The tables are printed before the plots' error, not lost with it.
    assert "| 0.0001 | 3 | 0 1 2 | 31 +- 1 |" in capsys.readouterr().out


def test_one_run_per_setting_gets_no_bands_and_no_sd(tmp_path):
    _fake_run(tmp_path / "a", 0, (80.0,), learning_rate=1e-4)
    _fake_run(tmp_path / "b", 0, (70.0,))
    sweep.write_results(tmp_path)
    assert not (tmp_path / "eval_fid_bands.png").exists()
    with (tmp_path / "settings.csv").open() as f:
        assert [(r["n"], r["final_fid_mean"], r["final_fid_sd"]) for r in csv.DictReader(f)] == [
            ("1", "80.0", ""),
            ("1", "70.0", ""),
        ]


def test_a_sweep_over_time_budgets_keeps_each_budget_a_setting_of_its_own(tmp_path):
    """train.max_seconds is a field like any other: runs of 300 s and of 600 s are not pooled."""
    for budget in (300.0, 600.0):
        for seed in (0, 1):
            folder = tmp_path / f"train.max_seconds={budget:g},seed={seed}"
            _fake_run(folder, seed, (budget / 10,))
            config = json.loads((folder / "config.json").read_text())
            config["train"]["max_seconds"] = budget
            (folder / "config.json").write_text(json.dumps(config))
    table = sweep.settings(sweep.results(tmp_path))
    assert [(s["train.max_seconds"], s["n"], s["final_fid_mean"]) for s in table] == [
        (300.0, 2, 30.0),
        (600.0, 2, 60.0),
    ]


def test_bands_keep_an_evaluation_made_only_at_the_end_of_time_limited_runs():
    """Seeds stopped by a time limit end at different steps; their final evaluations still make a
    point (at the mean last step), beside the steps every run logged."""
    series = [{100: 1.0, 926: 180.0}, {100: 3.0, 951: 190.0}, {100: 2.0, 951: 200.0}]
    steps, values = images._band_points(series)
    assert steps == [100, pytest.approx(942.667, abs=1e-3)]
    assert values.tolist() == [[1.0, 180.0], [3.0, 190.0], [2.0, 200.0]]
    same_end = [{100: 1.0, 200: 5.0}, {100: 2.0, 200: 6.0}]
    assert images._band_points(same_end)[0] == [100, 200]


def test_results_end_with_the_provenance_of_the_scores(tmp_path):
    provenance = {
        "feature_network": "dcgan_jax's fashion_mnist classifier",
        "feature_layer": "penultimate",
        "feature_weights_hash": "sha256:abc",
        "reference": {
            "dataset": "fashion_mnist",
            "split": "test",
            "num_images": 10000,
            "images_sha256": "f00",
        },
        "num_samples": 5000,
        "latents": "evaluation stream of seed 0 (one fixed draw)",
        "truncation": 1.0,
    }
    for seed in (0, 1):
        _fake_run(tmp_path / f"seed={seed}", seed, (90.0 + seed,))
        (tmp_path / f"seed={seed}" / "eval").mkdir()
        (tmp_path / f"seed={seed}" / "eval" / "provenance.json").write_text(json.dumps(provenance))
    sweep.write_results(tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert text.count("Scores: ") == 1  # The runs agree: one line.
    assert "Scores: 5000 samples of each run's evaluation stream of seed 0 (one fixed draw)" in text
    assert "reference: fashion_mnist/test, 10000 images, sha256:f00." in text
