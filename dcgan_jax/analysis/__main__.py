"""``python -m dcgan_jax.analysis --workdir=W [--step=N | --best] [--seed=S]``: every picture of
:mod:`dcgan_jax.analysis` for one run, into ``W/analysis/``, one path a line."""

from pathlib import Path

from absl import flags

from dcgan_jax import evaluation
from dcgan_jax.evaluation import classifier
from dcgan_jax.gan import sampling
from dcgan_jax.run import cli, control, images, writers
from dcgan_jax.tools import analysis, trained

flags.DEFINE_string("workdir", None, "The run folder.", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
flags.DEFINE_bool("best", False, "The checkpoint of the lowest FID (best_checkpoint/).")
flags.DEFINE_integer(
    "seed", 0, "Seed of the latent vectors.", lower_bound=0, upper_bound=sampling.MAX_SEED
)
flags.DEFINE_string("experiment", None, "Check that the run belongs to this experiment.")
flags.DEFINE_list("compare", [], "Other run folders to plot the metrics of beside this one.")
flags.DEFINE_list("metrics", ["g_loss", "d_loss", "eval/fid"], "Metrics to plot over steps.")
flags.DEFINE_string("output_dir", None, "Where the pictures go (default: <workdir>/analysis).")
flags.DEFINE_string(
    "data_dir",
    None,
    "Where the run's real images are here, when not where it trained (its dataset.data_dir).",
)
FLAGS = flags.FLAGS


def _metrics(runs):
    """The metrics to plot: the default list less what no run logged; one named by --metrics must
    exist."""
    rows_per_run = [writers.read_metrics(Path(w) / "metrics.jsonl") for w in runs]
    if not FLAGS["metrics"].present:
        logged = {key for rows in rows_per_run for row in rows for key in row}
        return [m for m in FLAGS.metrics if m in logged]
    for metric in FLAGS.metrics:
        images.check_metric(rows_per_run, metric)
    return FLAGS.metrics


def _memorisation(run, out):
    """The memorisation picture (and the ratio) when the dataset has a classifier and a training
    split."""
    known = classifier.datasets()
    if run.config.dataset.name not in known:
        print(
            f"skipped the memorisation check: no classifier of {run.config.dataset.name} (only of "
            f"{', '.join(known)})"
        )
        return []
    try:
        evaluator = evaluation.evaluator_for(run.config, "classifier")
    except classifier.ClassifierMissingError as e:
        print(f"skipped the memorisation check: {e}")
        return []
    if evaluator.train_features is None:
        print(f"skipped the memorisation check: {evaluator.provenance['memorisation']}")
        return []
    ratio, picture = analysis.memorisation(run, evaluator, out, seed=FLAGS.seed)
    print(
        f"memorisation ratio {ratio:.2f} on 10000 samples (1: as new as test images; 20: all "
        "copies)"
    )
    return [picture]


def main(argv: list[str]) -> None:
    out = Path(FLAGS.output_dir or Path(FLAGS.workdir) / "analysis")
    run = trained.load(
        FLAGS.workdir,
        FLAGS.step,
        best=FLAGS.best,
        experiment=FLAGS.experiment,
        data_dir=FLAGS.data_dir,
    )
    control.check_writable_folder(out, "--output_dir")  # Before the work, so none of it is lost.
    if missing := [
        folder for folder in FLAGS.compare if not (Path(folder) / "metrics.jsonl").is_file()
    ]:
        cli.fail(f"--compare: no run's metrics.jsonl in {', '.join(missing)}")
    metrics = _metrics([FLAGS.workdir, *FLAGS.compare])
    train_images = analysis.training_images(run)  # Read once for both neighbour pictures.
    written = [
        analysis.training_grid(run, out),
        analysis.sample_grid(run, out, seed=FLAGS.seed),
        analysis.interpolation_strips(run, out, seed=FLAGS.seed),
        analysis.nearest_training_images(
            run, out, seed=FLAGS.seed, space="pixel", train_images=train_images
        ),
        analysis.progress_grid(FLAGS.workdir, out, seed=FLAGS.seed),
    ]
    try:
        neighbours = analysis.nearest_training_images(
            run, out, seed=FLAGS.seed, space="feature", train_images=train_images
        )
        written.append(neighbours)
    except classifier.ClassifierMissingError as e:
        print(f"skipped the feature-space neighbours: {e}")
    written += _memorisation(run, out)
    for metric in metrics:
        path = out / f"{metric.replace('/', '_')}.png"
        written.append(analysis.metric_curves([FLAGS.workdir, *FLAGS.compare], path, metric))
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    cli.run(main)
