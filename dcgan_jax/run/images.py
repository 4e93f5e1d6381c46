"""Pictures a researcher looks at: sample grids and training curves, as PNG files."""

import math
from pathlib import Path

import numpy as np
from PIL import Image

from dcgan_jax.evaluation import references
from dcgan_jax.gan import RunError
from dcgan_jax.run import cli, writers


class MetricError(RunError, ValueError):
    """A metric no run logged (a typo, or an evaluation that never ran); the message lists those
    logged."""


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """(N, H, W, C) in [-1, 1], or uint8 pixels (a dataset's), -> one uint8 (rows*(H+p)+p,
    cols*(W+p)+p, C) image, row-major."""
    images = references.pixels(np.asarray(images))
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full(
        (rows * (h + padding) + padding, columns * (w + padding) + padding, c), 255, np.uint8
    )
    for i in range(n):
        top, left = (
            padding + (i // columns) * (h + padding),
            padding + (i % columns) * (w + padding),
        )
        grid[top : top + h, left : left + w] = images[i]
    return grid


def save_grid(
    images: np.ndarray, path: str | Path, columns: int | None = None, scale: int = 2
) -> Path:
    # Nearest-neighbour upscaling.
    grid = make_grid(images, columns).repeat(scale, axis=0).repeat(scale, axis=1)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_series(axis, rows, key, label):
    """``key`` over steps from the rows that have it (training and evaluation rows are logged
    apart)."""
    kept = [r for r in rows if key in r]
    axis.plot(
        [r["step"] for r in kept],
        [r[key] for r in kept],
        label=label,
        marker="." if len(kept) < 30 else "",
    )


def _label(axis, ylabel=""):
    """``axis`` labelled (steps, ``ylabel``), with a grid and a legend."""
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)


def _save(fig, out_path):
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    _pyplot().close(fig)
    return out_path


def plot_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Losses, D's accuracies and mean outputs over steps, from ``metrics.jsonl``."""
    rows = writers.read_metrics(metrics_path)
    if not rows:
        return None
    panels = [
        ("losses", ("d_loss", "g_loss")),
        ("discriminator accuracy", ("d_real_acc", "d_fake_acc")),
        ("mean D output", ("d_real", "d_fake")),
    ]
    if any("eval/fid" in r for r in rows):
        panels.append(("FID (classifier features)", ("eval/fid",)))
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(5 * len(panels), 3.5))
    for axis, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            _plot_series(axis, rows, key, label=key)
        axis.set_title(title)
        _label(axis)
    return _save(fig, out_path)


def check_metric(rows_per_run: list[list[dict]], metric: str) -> None:
    """A MetricError unless some run logged ``metric``, with the closest names it did log."""
    logged = sorted({key for rows in rows_per_run for row in rows for key in row} - {"step"})
    if metric not in logged:
        hint = cli.did_you_mean(metric, logged)
        raise MetricError(
            f"metric {metric!r} is in no run's metrics.jsonl.{hint} Logged: {', '.join(logged)}"
        )


def plot_metric(run_dirs: list[Path], metric: str, out_path: Path) -> Path:
    """``metric`` over steps from each run's ``metrics.jsonl``, one line per run."""
    rows_per_run = [writers.read_metrics(Path(run_dir) / "metrics.jsonl") for run_dir in run_dirs]
    check_metric(rows_per_run, metric)
    fig, axis = _pyplot().subplots(figsize=(8, 4.5))
    for run_dir, rows in zip(run_dirs, rows_per_run, strict=True):
        _plot_series(axis, rows, metric, label=Path(run_dir).name)
    _label(axis, metric)
    return _save(fig, out_path)


def _band_points(series: list[dict[int, float]]) -> tuple[list[float], np.ndarray]:
    """(steps, values (runs, steps)): the steps every run logged and, when runs ended at different
    steps (a time limit), their last values at the mean last step (a final evaluation's point)."""
    steps = sorted(set.intersection(*(set(s) for s in series)))
    values = [[s[step] for step in steps] for s in series]
    last_steps = [max(s) for s in series]
    if len(set(last_steps)) > 1:
        steps.append(float(np.mean(last_steps)))
        for run_values, s, last in zip(values, series, last_steps, strict=True):
            run_values.append(s[last])
    return steps, np.array(values, dtype=np.float64).reshape(len(series), len(steps))


def plot_metric_bands(groups: dict[str, list[Path]], metric: str, out_path: Path) -> Path:
    """``metric`` over steps, one mean curve per group of runs (a setting's seeds) with a band of
    +- one standard deviation, over the steps every run of the group logged."""
    rows_per_group = {
        label: [writers.read_metrics(Path(d) / "metrics.jsonl") for d in dirs]
        for label, dirs in groups.items()
    }
    check_metric([rows for group in rows_per_group.values() for rows in group], metric)
    fig, axis = _pyplot().subplots(figsize=(8, 4.5))
    for label, runs in rows_per_group.items():
        series = [{r["step"]: r[metric] for r in rows if metric in r} for rows in runs]
        if not all(series):
            continue
        steps, values = _band_points(series)
        mean = values.mean(axis=0)
        sd = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
        # Evaluations: markers and error bars, which a band of one point lacks.
        few = len(steps) < 20
        (line,) = axis.plot(
            steps, mean, marker="o" if few else None, label=f"{label} (n={len(values)})"
        )
        axis.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
        if few:
            axis.errorbar(steps, mean, yerr=sd, fmt="none", ecolor=line.get_color(), capsize=3)
    _label(axis, f"{metric}, mean +- sd over seeds")
    return _save(fig, out_path)
