"""The evaluation with the shipped classifier, on real Fashion-MNIST from $DCGAN_JAX_DATA_DIR."""

import hashlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, shared_dataset_dir, tiny_config, tmpfs, traced_peak

import dcgan_jax
from dcgan_jax import evaluation
from dcgan_jax.evaluation import classifier, references, reports
from dcgan_jax.gan import ConfigError, data
from dcgan_jax.run import checkpoints, writers
from dcgan_jax.tools import scoring, trained

N = 2000  # Per scored set: enough to rank, quick on a CPU.


@pytest.fixture(scope="module")
def fashion():
    """(train images in [-1, 1], train labels, the folder) of the shared Fashion-MNIST."""
    folder = shared_dataset_dir("fashion_mnist")
    train_images, train_labels = data.load_idx_folder(folder, "train")
    return data.to_model_range(train_images), train_labels, folder


@pytest.fixture(scope="module")
def evaluator(fashion, tmp_path_factory):
    return evaluation.Evaluator(
        evaluation.reference_config("fashion_mnist", "test", fashion[2]),
        cache_dir=tmp_path_factory.mktemp("cache"),
    )


def _blur(x, passes=2):
    for _ in range(passes):  # 3x3 box filter, edges replicated.
        padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="edge")
        x = sum(padded[:, i : i + 28, j : j + 28] for i in range(3) for j in range(3)) / 9
    return x


def _evaluation_command(workdir, *flags: str) -> list[str]:
    return [sys.executable, "-m", "dcgan_jax.evaluation", f"--workdir={workdir}", *flags]


def test_metrics_rank_real_above_noisy_above_blurred_collapsed_and_random(fashion, evaluator):
    train_images, train_labels, _ = fashion
    rng = np.random.default_rng(0)
    real = train_images[rng.choice(len(train_images), N, replace=False)]
    sets = {
        "real": real,
        "noisy": np.clip(real + rng.normal(0, 0.1, real.shape), -1, 1),
        "blurred": _blur(real),
        "collapsed": train_images[train_labels == 0][:N],
        "random": rng.uniform(-1, 1, real.shape),
    }
    scores = {name: evaluator(images_) for name, images_ in sets.items()}
    for name, s in scores.items():
        print(name, {k: round(s[k], 4) for k in reports.SUMMARY_KEYS})
    fid = {name: s["fid"] for name, s in scores.items()}
    assert fid["real"] < fid["noisy"] < min(fid["blurred"], fid["collapsed"], fid["random"])
    kid = {name: s["kid"] for name, s in scores.items()}
    assert kid["real"] < kid["noisy"] < min(kid["blurred"], kid["collapsed"], kid["random"])
    assert scores["real"]["precision"] > 0.6 and scores["real"]["recall"] > 0.6
    assert scores["collapsed"]["recall"] < 0.3 < scores["real"]["recall"]
    # k-NN precision is lenient with outliers (real outliers have wide balls); recall is not.
    assert (
        scores["random"]["recall"] < 0.01
        and scores["random"]["precision"] < scores["real"]["precision"] / 2
    )
    assert scores["real"]["classes_covered"] == 10 and scores["collapsed"]["classes_covered"] <= 2
    assert scores["real"]["inception_score"] > 7 > scores["collapsed"]["inception_score"]
    # Density ~1 for real images. Coverage ~1 - e^-1 = 0.63 with 2,000 samples against 10,000 real
    # balls of k=5 (0.97 needs as many samples as real images); one class covers little. Blurred
    # images pile up where real images are dense: high precision and density, almost no coverage.
    assert 0.8 < scores["real"]["density"] < 1.2 and 0.5 < scores["real"]["coverage"] < 0.75
    assert scores["collapsed"]["coverage"] < 0.3 * scores["real"]["coverage"]
    assert scores["blurred"]["density"] > 2 and scores["blurred"]["coverage"] < 0.2
    assert scores["random"]["density"] < 0.15 and scores["random"]["coverage"] < 0.01
    assert scores["real"]["memorisation_ratio"] > 15  # These "samples" are training images.


def test_memorisation_ratio_tells_copies_of_training_images_from_new_images(fashion, evaluator):
    test_images = data.to_model_range(data.load_idx_folder(fashion[2], "test")[0])
    new = evaluator(test_images[:N])["memorisation_ratio"]
    copies = evaluator(fashion[0][-N:])["memorisation_ratio"]
    half = evaluator(np.concatenate([fashion[0][-N // 2 :], test_images[-N // 2 :]]))[
        "memorisation_ratio"
    ]
    assert 0.7 < new < 1.3 and copies > 15 and 8 < half < 13, (new, copies, half)


def test_a_run_trained_on_the_test_split_is_checked_for_copies_of_the_test_split(
    fashion, evaluator, caplog
):
    """``dataset.split=test`` (MNIST's only split on this machine): the memorisation ratio compares
    the samples with the run's training images, the test split, the train split held out. Before,
    it compared them with the train split, so copies of the run's training images read as new.
    Scores against the split it trained on come with a warning."""
    config = tiny_config()
    config.dataset.update(name="fashion_mnist", data_dir=str(fashion[2]), split="test")
    on_test = evaluation.evaluator_for(config)
    assert "eval.split=test is the split the run trains on" in caplog.text
    assert np.array_equal(on_test.train_features, evaluator.real_features)
    test_pixels = data.load_idx_folder(fashion[2], "test")[0]
    copies = on_test(data.to_model_range(test_pixels[:N]))["memorisation_ratio"]
    new = on_test(fashion[0][:N])["memorisation_ratio"]
    assert copies > 15 and 0.7 < new < 1.3, (copies, new)
    assert on_test.provenance["memorisation"]["heldout"].startswith("fashion_mnist train split")
    assert np.array_equal(on_test.training_images(), test_pixels)


def test_evaluate_takes_an_array_and_returns_the_documented_keys(fashion, tmp_path):
    scores = dcgan_jax.evaluate(
        fashion[0][:1000], dataset="fashion_mnist", data_dir=fashion[2], cache_dir=tmp_path
    )
    for key in (
        "fid",
        "kid",
        "kid_std",
        "precision",
        "recall",
        "inception_score",
        "classes_covered",
    ):
        assert np.isfinite(scores[key]), key
    assert len(list(tmp_path.glob("reference_fashion_mnist_test_*.npz"))) == 1


def test_class_agreement_counts_samples_the_classifier_puts_in_their_requested_class(
    fashion, evaluator
):
    images_, labels = fashion[0][:N], fashion[1][:N]
    true = evaluator(images_, labels=labels)
    assert true["class_agreement"] > 0.85  # The classifier's accuracy on training images.
    assert min(true["class_agreement_per_class"]) > 0.5
    assert "eval/class_agreement" in reports.scalar_metrics(true)
    assert len(true["intra_fid_per_class"]) == 10 and "eval/intra_fid" in reports.scalar_metrics(
        true
    )
    asked_wrong = evaluator(images_, labels=(labels + 1) % 10)
    assert asked_wrong["intra_fid"] > 5 * true["intra_fid"] and asked_wrong["fid"] == true["fid"]
    _, probs = evaluator.features_of(images_)
    # Every image asked for another class.
    wrong = evaluation.class_agreement(probs, (labels + 1) % 10)
    assert wrong["class_agreement"] < 0.1
    with pytest.raises(evaluation.EvaluationError, match="one per image"):
        evaluation.class_agreement(probs, labels[:10])


def test_reference_features_are_cached_and_reused(fashion, tmp_path, monkeypatch):
    first = evaluation.Evaluator(
        evaluation.reference_config("fashion_mnist", "test", fashion[2]), cache_dir=tmp_path
    )

    def no_data(*args, **kwargs):
        raise AssertionError("the cached reference should have been used")

    monkeypatch.setattr(data, "load_dataset", no_data)
    second = evaluation.Evaluator(
        evaluation.reference_config("fashion_mnist", "test", fashion[2]), cache_dir=tmp_path
    )
    np.testing.assert_array_equal(first.real_features, second.real_features)
    # Files read otherwise by a newer dcgan_jax (EXIF orientation, ...): the cache is not reused.
    monkeypatch.setattr(data, "READING_VERSION", data.READING_VERSION + 1)
    with pytest.raises(AssertionError, match="the cached reference should have been used"):
        evaluation.Evaluator(
            evaluation.reference_config("fashion_mnist", "test", fashion[2]), cache_dir=tmp_path
        )


def test_a_reference_is_computed_without_a_float_copy_of_the_whole_split(tmp_path, monkeypatch):
    """An image folder of 100,000 photos at 128x128 is 4.9 GB as uint8, 20 GB as float32."""
    images = np.random.default_rng(0).integers(0, 256, (20_000, 28, 28, 1), np.uint8)
    monkeypatch.setattr(data, "load_dataset", lambda *_: (images, np.zeros(20_000, np.int64)))
    network = evaluation.network_for("classifier", "fashion_mnist")
    network.apply(images[:10])  # Compiled before the measurement.
    config = evaluation.reference_config("fashion_mnist")
    reference, peak = traced_peak(lambda: references.reference(config, network, tmp_path))
    assert reference["features"].shape == (20_000, classifier.FEATURE_DIM)
    assert peak < 2 * images.nbytes  # A float32 copy alone is 4 times the images.


@pytest.mark.parametrize(
    "images_, message",
    [
        (
            np.zeros((1000, 32, 32, 3), np.float32),
            r"shape \(N, 28, 28, 1\), got \(1000, 32, 32, 3\)",
        ),
        (np.zeros((10, 28, 28, 1), np.float32), "10 images are too few for a stable FID"),
        (np.full((1000, 28, 28, 1), np.nan, np.float32), "1000 of 1000 images contain NaN"),
        (
            np.full((1000, 28, 28, 1), 255.0, np.float32),
            r"\[-1, 1\], got values in \[255, 255\] \(uint8 pixels",
        ),
    ],
)
def test_bad_images_are_a_clear_error(evaluator, images_, message):
    with pytest.raises(evaluation.EvaluationError, match=message):
        evaluator(images_)


def test_uint8_pixels_are_read_as_pixels_and_other_integer_images_refused():
    """uint8 images were taken as floats: black (0) read as mid-grey, a 0/1 mask as images in
    [0, 1], scored without a word. They are pixels now, as a FeatureNetwork takes them; integers of
    other types, whose range no one can tell, are refused."""
    pixels = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), np.uint8)
    np.testing.assert_array_equal(
        evaluation.features(pixels), evaluation.features(data.to_model_range(pixels))
    )
    with pytest.raises(evaluation.EvaluationError, match=r"dtype int64: pass floats in \[-1, 1\]"):
        evaluation.features(pixels.astype(np.int64) // 128)


def test_images_in_zero_one_as_torchvision_gives_them_are_named_not_scored_silently(caplog):
    """A PyTorch user's images in [0, 1] lie inside [-1, 1], so no range check refused them: they
    were scored as brighter images without a word. None of a GAN's tanh images, and no real
    image, lacks every value below 0."""
    images = np.random.default_rng(0).uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    evaluation.features(2 * images - 1)
    assert "no value below 0" not in caplog.text
    evaluation.features(images)
    assert "The images hold no value below 0 of [-1, 1]" in caplog.text
    assert "passed as 2 * x - 1" in caplog.text


def test_checked_images_are_not_copied_once_more():
    """10,000 CelebA samples at 64x64 are 491 MB as float32: float32 images were copied by the
    check, uint8 ones converted and then copied; now float32 ones pass as they are."""
    samples = np.random.default_rng(0).uniform(-1, 1, (1000, 28, 28, 1)).astype(np.float32)
    assert evaluation.check_images(samples) is samples
    pixels = data.to_uint8(samples)
    checked, peak = traced_peak(lambda: evaluation.check_images(pixels))
    assert checked.dtype == np.float32 and peak < 2.5 * samples.nbytes


def test_features_of_no_images_say_so_without_speaking_of_an_fid():
    with pytest.raises(
        evaluation.EvaluationError, match=r"^0 images are too few: pass at least 1 "
    ):
        evaluation.features(np.zeros((0, 28, 28, 1), np.float32))


def test_missing_classifier_weights_say_how_to_train_them(tmp_path, monkeypatch):
    monkeypatch.setattr(classifier, "ASSETS_DIR", tmp_path)
    with pytest.raises(
        classifier.ClassifierMissingError,
        match="python -m dcgan_jax.classifier --config.dataset.name=fashion_mnist",
    ):
        evaluation.Evaluator(evaluation.reference_config("fashion_mnist"))


def test_shipped_classifier_is_small_and_accurate():
    folder = classifier.weights_dir("fashion_mnist")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 5 * 2**20
    params, info = classifier.load_params("fashion_mnist")
    assert info["heldout_accuracy"] >= 0.92 and info["params_hash"] == classifier.params_hash(
        params
    )


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_epochs", 0, "--config.num_epochs=0: must be a finite number > 0"),
        ("batch_size", -1, "--config.batch_size=-1: must be a finite number > 0"),
        ("learning_rate", float("nan"), "--config.learning_rate=nan: must be a finite number > 0"),
        ("seed", -1, "--config.seed=-1: must be in 0 .. 2147483647"),
        ("eval_split", "validation", "--config.eval_split='validation': one of train, test"),
        ("dataset.name", "cifar10", "--config.dataset.name='cifar10': one of fashion_mnist, mnist"),
        # Read only sometimes: before, ignored silently.
        ("dataset.image_size", 64, "image_size=64: fashion_mnist keeps its 28x28 images; set 0"),
        ("holdout", 0, "--config.holdout=0 changes nothing: the images are held out of the"),
    ],
)
def test_the_classifiers_training_refuses_what_it_cannot_take_before_any_work(
    field, value, message, tmp_path
):
    """Not a ZeroDivisionError, a NumPy seeding traceback, eight epochs of NaN weights, nor zero
    epochs writing untrained weights (over the shipped ones, by default)."""
    config = classifier.default_config()
    config.update_from_flattened_dict({field: value})
    with pytest.raises(ConfigError, match=re.escape(message)):
        classifier.train_classifier(config, tmp_path)
    assert not any(tmp_path.iterdir())


def test_the_classifiers_training_never_overwrites_the_shipped_weights_by_default(tmp_path):
    """Every FID is measured with them: a trial run of the command must not replace them, nor lose
    its training to an output folder it cannot write."""
    shipped = classifier.weights_dir("fashion_mnist")
    before = {f: f.stat().st_mtime_ns for f in shipped.rglob("*")}
    with pytest.raises(
        ConfigError, match=f"{shipped} holds the shipped weights every fashion_mnist"
    ):
        classifier.train_classifier(classifier.default_config())
    with pytest.raises(ConfigError, match="holds the shipped weights"):  # The config's own "".
        classifier.train_classifier(classifier.default_config(), "")
    assert {f: f.stat().st_mtime_ns for f in shipped.rglob("*")} == before
    (tmp_path / "file").write_text("")
    command = [sys.executable, "-m", "dcgan_jax.classifier"]
    result = subprocess.run(
        [*command, f"--config.output_dir={tmp_path / 'file'}"], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "a file is in the way (a folder is needed); choose another --config.output_dir"
    )


def test_classifier_experiment_reproduces_weights(tmp_path):
    shared_dataset_dir("mnist")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dcgan_jax.classifier",
            "--config.dataset.name=mnist",
            "--config.dataset.split=test",
            "--config.num_epochs=1",
            "--config.holdout=8000",
            f"--config.output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "info.json").read_text())
    # One epoch on 2,000 images: far from the shipped weights, far above chance.
    assert (
        info["heldout"] == "last 8000 images of the test split" and info["heldout_accuracy"] > 0.5
    )
    assert (tmp_path / "params").is_dir()


@pytest.fixture(scope="module")
def evaluated_run(fashion, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("evaluated")
    config = tiny_config(num_steps=4)
    config.dataset.name = "fashion_mnist"
    config.dataset.data_dir = str(fashion[2])
    config.eval.update(every=2, num_samples=1000)
    dcgan_jax.train(config, workdir)
    return workdir


def test_training_logs_the_metrics_and_keeps_the_best_checkpoint(evaluated_run):
    rows = [r for r in writers.read_metrics(evaluated_run / "metrics.jsonl") if "eval/fid" in r]
    assert [r["step"] for r in rows] == [2, 4]
    best_row = min(rows, key=lambda r: r["eval/fid"])
    assert checkpoints.Checkpointer(
        evaluated_run, create=False, subdir=checkpoints.BEST_SUBDIR
    ).all_steps() == [best_row["step"]]
    assert dcgan_jax.load(evaluated_run, best=True).step == best_row["step"]
    log = (evaluated_run / "train.log").read_text()
    assert "eval step 4: FID" in log and "classes covered" in log


def test_a_resume_that_measures_the_fid_otherwise_starts_a_new_best(evaluated_run, tmp_path):
    """FIDs of other sample counts or reference splits are not comparable (the FID's bias follows
    N): before, the resumed run's FIDs were ranked against the stored best's, silently."""
    shutil.copytree(evaluated_run, tmp_path / "run")
    config = tiny_config(num_steps=6)
    config.dataset.update(name="fashion_mnist", data_dir=str(shared_dataset_dir("fashion_mnist")))
    config.eval.update(every=2, num_samples=2000)
    dcgan_jax.train(config, tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "The best checkpoint's FID was measured with {'eval.num_samples': 1000}" in log
    best = checkpoints.Checkpointer(tmp_path / "run", create=False, subdir=checkpoints.BEST_SUBDIR)
    assert best.all_steps() == [6]


def test_evaluation_command_scores_every_checkpoint(evaluated_run):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dcgan_jax.evaluation",
            f"--workdir={evaluated_run}",
            "--all_steps",
            "--num_samples=1000",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # N in the names.
    assert "| step | latents | fid1k | kid1k | kid1k_std | precision |" in result.stdout
    rows = json.loads((evaluated_run / "eval" / "results.json").read_text())
    assert [r["step"] for r in rows] == [3, 4] and all(np.isfinite(r["fid"]) for r in rows)
    assert (evaluated_run / "eval" / "step_0000004.json").exists()


def test_scoring_every_step_of_a_running_run_leaves_out_a_checkpoint_it_prunes(
    evaluated_run, tmp_path, monkeypatch
):
    """``--all_steps`` on a run that is training: while step 3 is loaded the run saves 9 and removes
    3. Before, the command stopped there (`no checkpoint for step 3`); now it scores the others."""
    shutil.copytree(evaluated_run, tmp_path / "run")
    folder = tmp_path / "run" / "checkpoints"
    load = trained.load

    def load_racing(workdir, step=None, **kwargs):
        if step == 3 and (folder / "3").exists():
            shutil.copytree(folder / "4", folder / "9")
            shutil.rmtree(folder / "3")
        return load(workdir, step, **kwargs)

    monkeypatch.setattr(trained, "load", load_racing)
    rows = scoring.evaluate_run(tmp_path / "run", num_samples=1000, all_steps=True)
    assert [row["step"] for row in rows] == [4]


def test_evaluation_command_prints_the_fid_of_the_training_log_line(evaluated_run):
    """By default the command scores the latents the in-training evaluation scored, so its FID for a
    step is the one that step's log line shows; --seed scores another draw, and says so."""
    logged = next(
        r["eval/fid"]
        for r in writers.read_metrics(evaluated_run / "metrics.jsonl")
        if r["step"] == 4 and "eval/fid" in r
    )
    command = _evaluation_command(evaluated_run, "--step=4")
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stored = json.loads((evaluated_run / "eval" / "step_0000004.json").read_text())
    assert stored["fid"] == logged and stored["latents"] == "evaluation stream of seed 0"
    assert stored["num_samples"] == 1000  # The run's eval.num_samples.
    assert f"| 4 | evaluation stream of seed 0 | {logged:.3f} |" in result.stdout
    assert f"eval step 4: FID {logged:.3f} |" in (evaluated_run / "train.log").read_text()
    # --seed=1 is evaluate_run(..., seed=1): its own draw, stored beside the training's.
    other = scoring.evaluate_run(evaluated_run, [4], seed=1)
    seeded = json.loads((evaluated_run / "eval" / "step_0000004_seed1.json").read_text())
    assert seeded["latents"] == "key(1)" and seeded["fid"] != logged and seeded == other[0]
    assert "| 4 | key(1) |" in reports.markdown_table(other)


def test_evaluation_command_scores_the_best_checkpoint_after_its_step_was_pruned(
    evaluated_run, tmp_path
):
    """--best scores best_checkpoint/, which a run keeps when its step leaves checkpoints/ (by
    train.keep_checkpoints): before, that step could not be scored again (say, by Inception)."""
    shutil.copytree(evaluated_run, tmp_path / "run")
    rows = [r for r in writers.read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/fid" in r]
    best_row = min(rows, key=lambda r: r["eval/fid"])
    shutil.rmtree(checkpoints.checkpoint_dir(tmp_path / "run") / str(best_row["step"]))
    command = _evaluation_command(tmp_path / "run", "--best")
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [scored] = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert (scored["step"], scored["fid"]) == (best_row["step"], best_row["eval/fid"])
    with pytest.raises(ConfigError, match="--best and --all_steps: give one of them"):
        scoring.evaluate_run(tmp_path / "run", best=True, all_steps=True)
    # The command's refusals are evaluate_run's, so a script gets them too, before any work.
    with pytest.raises(ConfigError, match="--step=2,4 and --all_steps: give one of them"):
        scoring.evaluate_run(tmp_path / "run", [2, 4], all_steps=True)
    with pytest.raises(ConfigError, match="--export_features writes one step's features"):
        scoring.evaluate_run(tmp_path / "run", [2, 4], export_path=tmp_path / "f.npz")
    with pytest.raises(ConfigError, match="seeds past 2147483647"):
        scoring.evaluate_run(tmp_path / "run", seed=2**31 - 2, draws=3)


def test_evaluation_of_a_read_only_run_refuses_before_the_work_and_takes_an_output_dir(
    evaluated_run, tmp_path
):
    with tmpfs(tmp_path / "mount", "64m") as point:
        shutil.copytree(evaluated_run, point / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        command = [
            sys.executable,
            "-m",
            "dcgan_jax.evaluation",
            f"--workdir={point / 'run'}",
            "--step=4",
        ]
        refused = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(
            f"error: --output_dir={point / 'run' / 'eval'}: cannot "
        )
        # Create it, or write.
        assert errors[0].endswith("(Read-only file system); choose another --output_dir")
        assert "| step |" not in refused.stdout
        result = subprocess.run(
            [*command, f"--output_dir={tmp_path / 'scores'}"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert (tmp_path / "scores" / "step_0000004.json").exists() and (
            tmp_path / "scores" / "results.json"
        ).exists()


def test_a_run_whose_images_moved_is_scored_and_analysed_with_data_dir(fashion, tmp_path):
    """A run trained with --config.dataset.data_dir on another machine: its commands read the
    real images from that path, and said to pass --config.dataset.data_dir, which they lack."""
    here = fashion[2].resolve()  # $DCGAN_JAX_DATA_DIR may be relative (.ci/run's is).
    moved = tmp_path / "data_there"
    moved.mkdir()
    for idx_file in here.iterdir():
        (moved / idx_file.name).symlink_to(idx_file)
    config = tiny_config(num_steps=2)
    config.dataset.update(name="fashion_mnist", data_dir=str(moved))
    dcgan_jax.train(config, tmp_path / "run")
    shutil.rmtree(moved)
    command = [sys.executable, "-m", "dcgan_jax.evaluation", f"--workdir={tmp_path / 'run'}"]
    command.append("--num_samples=1000")
    lost = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert lost.returncode == 2 and f"error: {moved} is not a folder" in lost.stderr
    assert "or a command's --data_dir" in lost.stderr
    found = subprocess.run(
        [*command, f"--data_dir={here}"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert found.returncode == 0, found.stderr[-3000:]
    assert (tmp_path / "run" / "eval" / "step_0000002.json").exists()
    assert dcgan_jax.load(tmp_path / "run", data_dir=here).config.dataset.data_dir == str(here)


def test_truncated_evaluation_is_stored_beside_the_plain_one(evaluated_run):
    plain, truncated = (
        scoring.evaluate_run(evaluated_run, [4], 1000, truncation=t)[0] for t in (1.0, 0.5)
    )
    assert (plain["truncation"], truncated["truncation"]) == (1.0, 0.5)
    assert plain["fid"] != truncated["fid"]
    stored = json.loads((evaluated_run / "eval" / "step_0000004_truncation0.5.json").read_text())
    assert stored["fid"] == truncated["fid"] and stored["truncation"] == 0.5
    assert (
        json.loads((evaluated_run / "eval" / "step_0000004.json").read_text())["fid"]
        == plain["fid"]
    )


def test_evaluation_command_names_a_missing_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dcgan_jax.evaluation", f"--workdir={tmp_path / 'nothing'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode != 0 and f"no run folder at {tmp_path / 'nothing'}" in result.stderr


def test_draws_give_a_spread_and_every_json_names_its_provenance(evaluated_run, fashion):
    command = _evaluation_command(evaluated_run, "--step=4")
    result = subprocess.run(
        [*command, "--draws=3", "--seed=5"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stored = json.loads((evaluated_run / "eval" / "step_0000004_draws3_seed5.json").read_text())
    fids = [r["fid"] for r in stored["runs"]]
    assert [r["latents"] for r in stored["runs"]] == ["key(5)", "key(6)", "key(7)"] and len(
        set(fids)
    ) == 3
    assert stored["spread"]["fid"]["mean"] == pytest.approx(np.mean(fids))
    assert (
        stored["spread"]["fid"]["sd"] == pytest.approx(np.std(fids, ddof=1))
        and stored["spread"]["fid"]["sd"] > 0
    )
    assert "step 4, mean +- sd over 3 draws of 1000 latents: fid1k " in result.stdout
    provenance = stored["runs"][0]["provenance"]
    test_uint8 = data.load_idx_folder(fashion[2], "test")[0]
    assert provenance["reference"] == {
        "dataset": "fashion_mnist",
        "split": "test",
        "num_images": 10_000,
        "images_sha256": hashlib.sha256(test_uint8.tobytes()).hexdigest(),
    }
    info = classifier.load_params("fashion_mnist")[1]
    assert (
        info["params_hash"] in provenance["feature_weights_hash"]
        and "penultimate" in provenance["feature_layer"]
    )
    assert (provenance["num_samples"], provenance["latents"], provenance["truncation"]) == (
        1000,
        "key(5)",
        1.0,
    )
    # The in-training evaluation.
    training = json.loads((evaluated_run / "eval" / "provenance.json").read_text())
    assert training["reference"] == provenance["reference"] and training["num_samples"] == 1000
    assert "one fixed draw" in training["latents"]
    for draws in (0, 101):
        bad = subprocess.run(
            [*command, f"--draws={draws}"], capture_output=True, text=True, cwd=REPO, timeout=300
        )
        assert bad.returncode == 2 and f"--draws={draws}: {draws} is not an integer" in bad.stderr


def test_features_are_exported_for_samples_and_reference(evaluated_run, fashion, tmp_path):
    out = tmp_path / "features.npz"
    command = [
        sys.executable,
        "-m",
        "dcgan_jax.evaluation",
        f"--workdir={evaluated_run}",
        f"--export_features={out}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stored = np.load(out)
    assert stored["sample_features"].shape == (1000, 128) and stored["real_features"].shape == (
        10_000,
        128,
    )
    assert stored["real_labels"].shape == (10_000,) and "penultimate" in str(stored["layer"])
    assert json.loads(str(stored["provenance"]))["latents"] == "evaluation stream of seed 0"
    samples, _ = dcgan_jax.load(evaluated_run).evaluation_samples()
    np.testing.assert_allclose(
        dcgan_jax.features(samples), stored["sample_features"], rtol=1e-5, atol=1e-5
    )
    refused = subprocess.run(
        [*command, "--all_steps"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert (
        refused.returncode == 2
        and "error: --export_features writes one step's features" in refused.stderr
    )


def test_analysis_memorisation_gives_the_ratio_and_the_most_suspicious_samples(
    evaluated_run, tmp_path
):
    from PIL import Image

    from dcgan_jax.tools import analysis

    run = dcgan_jax.load(evaluated_run)
    ratio, path = analysis.memorisation(
        run, evaluation.evaluator_for(run.config), tmp_path, num=4, num_samples=1000
    )
    assert path.name == "memorisation_step4_seed0.png" and 0 <= ratio <= 20
    width, height = Image.open(path).size
    assert width < height  # 4 rows of (sample, nearest training image).


def test_scores_biased_by_n_are_named_with_n():
    names = [
        reports.metric_name(k, n)
        for k, n in (("fid", 10_000), ("kid", 50_000), ("intra_fid", 2500))
    ]
    assert names == ["fid10k", "kid50k", "intra_fid2500"]
    assert reports.metric_name("precision", 10_000) == "precision"
    rows = [
        {
            "step": 1,
            "latents": "key(0)",
            "seconds": 1.0,
            "num_samples": n,
            **dict.fromkeys(reports.SUMMARY_KEYS, 1),
        }
        for n in (1000, 2000)
    ]
    assert "| fid | kid |" in reports.markdown_table(rows)  # Different N: no single name to give.
