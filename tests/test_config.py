import subprocess
import sys

import ml_collections
import pytest
from conftest import REPO, tiny_config

import dcgan_jax
from dcgan_jax.gan import config as config_lib
from dcgan_jax.run import cli

EXPERIMENTS = REPO / "experiments"


def test_every_experiment_loads_and_validates():
    names = cli.available_experiments(EXPERIMENTS)
    assert {"fashion_dcgan", "mnist_dcgan", "fashion_cdcgan"} <= set(names)
    for name in names:
        config_lib.validate(cli.load_experiment(name, EXPERIMENTS))


def test_the_lucic_experiment_is_the_main_job_at_the_papers_widths_and_budget():
    """fashion_dcgan_lucic changes only what its docstring says, so it reads no label either."""
    main = config_lib.flatten(cli.load_experiment("fashion_dcgan", EXPERIMENTS))
    lucic = config_lib.flatten(cli.load_experiment("fashion_dcgan_lucic", EXPERIMENTS))
    changed = {field: lucic[field] for field in main if lucic[field] != main[field]}
    assert changed == {"model.base_width": 64, "train.num_steps": 15_600}
    assert lucic["dataset.labels"] == "clusters"


def test_evaluation_needs_a_dataset_with_a_classifier():
    config = config_lib.default_config()
    config.dataset.name = "synthetic"
    with pytest.raises(config_lib.ConfigError, match="not synthetic; set --config.eval.every=0"):
        config_lib.validate(config)
    config.eval.every = 0
    config_lib.validate(config)


def test_required_fields_exist():
    fields = config_lib.flatten(cli.load_experiment("fashion_dcgan", EXPERIMENTS))
    for name in (
        "seed dataset.name dataset.data_dir dataset.split train.batch_size train.num_steps "
        "train.log_every "
        "train.sample_every train.checkpoint_every model.latent_dim optimizer.learning_rate "
        "optimizer.beta1 "
        "loss.generator train.d_steps"
    ).split():
        assert name in fields, name


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("optimizer.learning_rate", -1e-4, "--config.optimizer.learning_rate=-0.0001: must be > 0"),
        (
            "optimizer.learning_rate",
            5.0,
            r"--config.optimizer.learning_rate=5.0: must be in \[0, 1\) \(Adam's usual range",
        ),
        ("train.batch_size", 0, "--config.train.batch_size=0: must be > 0"),
        ("train.num_steps", -5, "--config.train.num_steps=-5"),
        ("train.d_steps", -1, "--config.train.d_steps=-1: must be >= 0"),
        (
            "loss.name",
            "wgan",
            r"--config.loss.name='wgan': must be one of bce, hinge, lsgan, wgan_gp\. Did you mean "
            r"wgan_gp\?",
        ),
        (
            "loss.name",
            "wgan_gp",
            "--config.loss.name=wgan_gp: .*add --config.model.d_batch_norm=false",
        ),
        ("loss.r1_every", 0, "--config.loss.r1_every=0: must be > 0"),
        ("train.ema_decay", 1.0, r"--config.train.ema_decay=1.0: must be in \[0, 1\)"),
        (
            "train.compute_dtype",
            "float16",
            "--config.train.compute_dtype='float16': must be one of float32, bfloat16",
        ),
        (
            "optimizer.d_learning_rate",
            2.0,
            r"--config.optimizer.d_learning_rate=2.0: must be in \[0, 1\)",
        ),
        ("model.num_classes", -1, "--config.model.num_classes=-1: must be >= 0"),
        (
            "model.conv_algorithm",
            "fft",
            "--config.model.conv_algorithm='fft': must be one of auto, direct, fourier",
        ),
        ("train.steps_per_dispatch", -1, "--config.train.steps_per_dispatch=-1: must be >= 0"),
        (
            "dataset.name",
            "image_folder",
            "--config.dataset.name=image_folder needs --config.dataset.data_dir=DIR",
        ),
        ("optimizer.beta1", 1.0, r"--config.optimizer.beta1=1.0: must be in \[0, 1\)"),
        (
            "loss.generator",
            "hinge",
            "--config.loss.generator='hinge': must be one of non_saturating, minimax",
        ),
        (
            "dataset.name",
            "fashion-mnist",
            r"--config.dataset.name='fashion-mnist': must be one of .*\. Did you mean "
            r"fashion_mnist\?",
        ),
        ("dataset.name", "cifar", "--config.dataset.name='cifar'"),
        ("dataset.split", "validation", "--config.dataset.split='validation'"),
        ("train.max_seconds", -1.0, "--config.train.max_seconds=-1.0"),
        (
            "train.top_k_decay",
            1.0,
            r"--config.train.top_k_decay=1.0: must be in \[0, 1\) \(0 = off\)",
        ),
        ("loss.label_smoothing", 1.0, r"--config.loss.label_smoothing=1.0: must be in \[0, 1\)"),
        (
            "train.top_k_min",
            0.0,
            r"--config.train.top_k_min=0.0: must be in \(0, 1\], a share of the batch",
        ),
    ],
)
def test_impossible_values_name_their_flag(field, value, flag):
    config = config_lib.default_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(config_lib.ConfigError, match=flag):
        config_lib.validate(config)


def test_every_integer_field_refuses_what_jax_cannot_hold_and_the_seed_a_negative():
    """Steps, seeds and indices reach JAX as int32, the seed NumPy's generator too: a value either
    rejects is the user's mistake, named, not a traceback from inside a library."""
    defaults = config_lib.flatten(config_lib.default_config())
    integers = [f for f, v in defaults.items() if isinstance(v, int) and not isinstance(v, bool)]
    assert "seed" in integers and "train.num_steps" in integers
    for field in integers:
        config = config_lib.default_config()
        config.update_from_flattened_dict({field: 2**31})
        with pytest.raises(config_lib.ConfigError, match=rf"--config.{field}=2147483648: must fit"):
            config_lib.validate(config)
    config = config_lib.default_config()
    config.seed = -1
    with pytest.raises(config_lib.ConfigError, match="--config.seed=-1: must be >= 0"):
        config_lib.validate(config)
    config.update_from_flattened_dict({"seed": 2**31 - 1, "eval.num_samples": 0})
    with pytest.raises(config_lib.ConfigError, match="--config.eval.num_samples=0: must be > 0"):
        config_lib.validate(config)


def test_unknown_override_suggests_the_closest_field():
    config = config_lib.default_config()
    message = r"--config.train.batchsize: no such config field.*train.batch_size"
    with pytest.raises(config_lib.ConfigError, match=message):
        cli.check_override_names(["launch.py", "--config.train.batchsize=32"], config)
    cli.check_override_names(["launch.py", "--config.train.batch_size=32", "--workdir=x"], config)
    with pytest.raises(config_lib.ConfigError, match=r"--noconfig.train.reuse_fak: no such"):
        cli.check_override_names(["launch.py", "--noconfig.train.reuse_fak"], config)


@pytest.mark.parametrize(
    "command, flag",
    [
        (["launch.py", "--experiment=fashion_dcgan"], "--noconfig.train.reuse_fak"),
        (["-m", "dcgan_jax.classifier"], "--config.train.foo=3"),
    ],
)
def test_every_command_names_an_unknown_config_field_not_an_attribute_error(command, flag):
    """Both --config flags: launch.py's and the classifier's (its config has no train.* at all);
    launch.py's --config.X=V: test_launch_rejects_unknown_field_wrong_type_and_bad_value..."""
    done = subprocess.run(
        [sys.executable, *command, flag], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    field = flag.split("=")[0]
    assert done.returncode == 2 and f"error: {field}: no such config field" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_config_not_of_the_defaults_shape_is_refused_before_any_work(tmp_path):
    """A typo'd field set in a script or an experiment file, a missing one, a None, a plain dict:
    each named, not ignored or a traceback; in train() and in an experiment file alike, and an
    experiment file without get_config()."""
    typo = config_lib.default_config()
    typo.train.learnig_rate = 1e-3
    partial = ml_collections.ConfigDict({"seed": 0})
    unset = config_lib.default_config()
    unset.train.batch_size = None
    cases = [
        ({"seed": 0}, r"config: a dict, not an ml_collections.ConfigDict"),
        (partial, r"--config.dataset.data_dir: missing"),
        (unset, r"--config.train.batch_size=None: must be of type int"),
        (typo, r"--config.train.learnig_rate: no such config field"),
    ]
    for config, message in cases:
        with pytest.raises(config_lib.ConfigError, match=message):
            dcgan_jax.train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (tmp_path / "typo.py").write_text(
        "from dcgan_jax import default_config\n\n\ndef get_config():\n"
        "    config = default_config()\n    config.model.latnet_dim = 8\n    return config\n"
    )
    with pytest.raises(config_lib.ConfigError, match=r"typo.py: .*Did you mean: model.latent_dim"):
        cli.load_experiment("typo", tmp_path)
    (tmp_path / "bare.py").write_text("get_config = None\n")
    with pytest.raises(config_lib.ConfigError, match=r"bare.py: defines no get_config\(\)"):
        cli.load_experiment("bare", tmp_path)
    # The experiment's own code failing: its file and line, as one error (no traceback).
    (tmp_path / "syntax.py").write_text("def get_config()\n    return None\n")
    with pytest.raises(config_lib.ConfigError, match=r"syntax.py: SyntaxError: .*line 1"):
        cli.load_experiment("syntax", tmp_path)
    (tmp_path / "name.py").write_text("def get_config():\n\n    return base()\n")
    with pytest.raises(config_lib.ConfigError, match=r"name.py, line 3: NameError: name 'base'"):
        cli.load_experiment("name", tmp_path)


def _launch(*args, timeout=120):
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_launch_rejects_unknown_experiment_naming_the_closest_and_listing_the_known_ones():
    result = _launch("--experiment=fashion_gan")
    assert result.returncode == 2
    assert "error: --experiment=fashion_gan: no such experiment" in result.stderr
    assert "Did you mean: fashion_dcgan" in result.stderr and "mnist_dcgan" in result.stderr


def test_launch_help_without_an_experiment_lists_the_experiments_and_the_flags():
    for flag in ("--help", "--helpfull"):
        result = _launch(flag)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Available experiments: " in result.stdout and "fashion_dcgan" in result.stdout
        assert (
            "--experiment: Name of a file in experiments/" in result.stdout
            and "--sweep_slurm" in result.stdout
        )
        assert "--experiment is required" not in result.stderr


def test_launch_rejects_unknown_field_wrong_type_and_bad_value_before_work(tmp_path):
    workdir = tmp_path / "run"
    unknown = _launch(
        "--experiment=fashion_dcgan", f"--workdir={workdir}", "--config.train.batchsize=8"
    )
    assert (
        unknown.returncode == 2
        and "--config.train.batchsize: no such config field" in unknown.stderr
    )
    wrong_type = _launch(
        "--experiment=fashion_dcgan", f"--workdir={workdir}", "--config.train.batch_size=big"
    )
    assert wrong_type.returncode != 0 and "--config.train.batch_size=big" in wrong_type.stderr
    bad_value = _launch(
        "--experiment=fashion_dcgan", f"--workdir={workdir}", "--config.optimizer.learning_rate=-1"
    )
    assert (
        bad_value.returncode == 2
        and "--config.optimizer.learning_rate=-1.0: must be > 0" in bad_value.stderr
    )
    assert not workdir.exists()  # Nothing was started.
    missing = _launch()
    assert missing.returncode == 2 and "--experiment is required" in missing.stderr


def test_flags_in_a_flagfile_are_checked_and_applied_as_on_the_command_line(tmp_path):
    """absl's --flagfile: its --experiment was not seen (`--experiment is required`), and an unknown
    field in it was an AttributeError traceback."""
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--experiment=fashion_dcgan\n--config.train.batchsize=8\n")
    unknown = _launch(f"--flagfile={flagfile}", f"--workdir={tmp_path / 'run'}")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr, unknown.stderr[-2000:]
    assert "error: --config.train.batchsize: no such config field" in unknown.stderr
    flagfile.write_text("--experiment=fashion_dcgan\n--config.train.num_steps=50\n")
    dry = _launch(f"--flagfile={flagfile}", "--sweep=seed=0", "--sweep_dry_run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert dry.stdout.split()[4:] == ["--config.train.num_steps=50", "--config.seed=0"]
    missing = _launch(f"--flagfile={tmp_path / 'none.txt'}")
    assert missing.returncode == 2 and "error: Unable to open flagfile" in missing.stderr
    assert not (tmp_path / "run").exists()


def test_an_image_size_the_dataset_keeps_not_is_an_error_not_ignored(tmp_path):
    """--config.dataset.image_size=64 on Fashion-MNIST trained on its 28x28 images, silently."""
    config = tiny_config()
    config.dataset.image_size = 64
    with pytest.raises(
        config_lib.ConfigError, match=r"image_size=64: synthetic keeps its images' "
    ):
        dcgan_jax.train(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    config.dataset.image_size = 28  # Its own size, said outright.
    assert int(dcgan_jax.train(config, tmp_path).step) == config.train.num_steps


def test_launch_without_data_says_how_to_point_at_local_files(tmp_path):
    result = _launch(
        "--experiment=fashion_dcgan",
        f"--workdir={tmp_path / 'run'}",
        f"--config.dataset.data_dir={tmp_path / 'none'}",
    )
    assert result.returncode == 2
    assert (
        f"{tmp_path / 'none'} is not a folder (the IDX files' folder: --config.dataset.data_dir or"
        in (result.stderr)
    )


def test_automatic_fields_resolve_as_the_run_uses_them():
    config = config_lib.default_config()
    assert config.train.d_steps == 0 and config_lib.resolved(config).train.d_steps == 1
    config.loss.name = "wgan_gp"
    assert config_lib.resolved(config).train.d_steps == 5
    config.train.d_steps = 2
    assert config_lib.resolved(config).train.d_steps == 2
    # One step per dispatch on this CPU, several where steps are short (accelerators).
    assert (
        config.train.steps_per_dispatch == 0
        and config_lib.resolved(config).train.steps_per_dispatch == 1
    )
    config.train.steps_per_dispatch = 4
    assert config_lib.resolved(config).train.steps_per_dispatch == 4


def test_a_stored_config_from_before_a_field_existed_gets_its_default():
    stored = config_lib.default_config().to_dict()
    del stored["train"]["ema_decay"], stored["loss"]["name"]
    stored["model"]["base_width"] = 32
    config = config_lib.with_defaults(stored)
    assert (
        config.train.ema_decay == 0.0
        and config.loss.name == "bce"
        and config.model.base_width == 32
    )


def test_label_smoothing_needs_the_bce_loss():
    config = config_lib.default_config()
    config.loss.update(name="hinge", label_smoothing=0.1)
    with pytest.raises(config_lib.ConfigError, match="--config.loss.name=hinge has no labels"):
        config_lib.validate(config)
    config.loss.name = "bce"
    config_lib.validate(config)
