"""A sweep as a SLURM job array (``launch.py --sweep=... --sweep_slurm=FILE [--sweep_submit]``): the
script and its manifest, task ``i`` running the manifest's ``i``-th command (a run out of time or
diverged skipped); ``python -m dcgan_jax.sweep --runs=DIR`` then tabulates the runs."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from dcgan_jax.gan import ConfigError
from dcgan_jax.run import cli, writers
from dcgan_jax.run.control import nothing_to_do

TASK_ENV = "SLURM_ARRAY_TASK_ID"


def write_array(
    script: Path, runs: list, argvs: list[list[str]], sweep_dir: Path, max_parallel: int
) -> Path:
    """The job-array script for ``runs`` (their ``argvs``) and its manifest; returns the script's
    path."""
    if max_parallel < 1:
        raise ConfigError(f"--sweep_max_parallel={max_parallel}: must be >= 1")
    script, sweep_dir = script.absolute(), sweep_dir.absolute()
    script.parent.mkdir(parents=True, exist_ok=True)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tasks = [
        {"name": run.name, "workdir": str(sweep_dir / run.folder), "argv": argv}
        for run, argv in zip(runs, argvs, strict=True)
    ]
    manifest = script.with_name(script.stem + ".manifest.json")
    writers.write_json(manifest, {"sweep_dir": str(sweep_dir), "tasks": tasks})
    task = shlex.join([sys.executable, "-m", "dcgan_jax.sweep", f"--manifest={manifest}"])
    if cli.has_control_characters(task + str(sweep_dir)):
        raise ConfigError(f"{sweep_dir!r}: control characters cannot go into a SLURM script")
    job_name = shlex.quote(f"dcgan_jax_{sweep_dir.name}")
    output = shlex.quote(f"{sweep_dir}/slurm_%A_%a.out")
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --job-name={job_name}\n"
        f"#SBATCH --array=0-{len(tasks) - 1}%{max_parallel}\n"
        f"#SBATCH --output={output}\n"
        "# Add your cluster's lines here (#SBATCH --gres=gpu:1, --time=..., --partition=...).\n"
        f"# Task i runs the i-th command of {manifest.name}: an unfinished run resumes, one "
        "out of time or diverged is skipped.\n"
        "set -euo pipefail\n"
        f'exec {task} --task="${{{TASK_ENV}:?run it with sbatch --array, or set {TASK_ENV}}}"\n'
    )
    script.chmod(0o755)
    return script


def submit(script: Path) -> str:
    """Hands ``script`` to ``sbatch``; returns what sbatch printed (its job id)."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            f"--sweep_submit: no sbatch on PATH here; on the cluster run: sbatch {script}"
        )
    done = subprocess.run(["sbatch", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(f"sbatch {script} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def _well_formed(task: dict) -> bool:
    """Whether ``task`` is what :func:`write_array` writes: a name, a workdir and a command."""
    argv = task["argv"]
    texts = [task["name"], task["workdir"], *argv]
    return isinstance(argv, list) and len(argv) > 0 and all(isinstance(t, str) for t in texts)


def run_task(manifest: str | Path, index: int) -> None:
    """Array task ``index``: its run's command (which resumes the run, or finds it at its
    ``train.num_steps``: the manifest may be written anew with more), unless the run ended out of
    time or diverged."""
    try:
        tasks = json.loads(Path(manifest).read_text())["tasks"]
        task = tasks[index] if 0 <= index < len(tasks) else None
        if task is not None and not _well_formed(task):
            raise TypeError("a task holds a name, a workdir and a command, all strings")
    except (OSError, ValueError, LookupError, TypeError) as e:
        raise ConfigError(f"--manifest={manifest}: not a sweep manifest ({e!r})") from None
    if task is None:
        raise ConfigError(f"--task={index}: the manifest has {len(tasks)} tasks, numbered from 0")
    # The command knows its train.num_steps: whether a finished run has more to do is its call.
    if nothing_to_do(task["workdir"], sys.maxsize):
        print(f"Task {index} ({task['name']}): ended earlier, skipped.")
        return
    print(f"Task {index} ({task['name']}): {shlex.join(task['argv'])}", flush=True)
    try:  # This task becomes the run: its exit status and signals are the run's.
        os.execv(task["argv"][0], task["argv"])
    except OSError as e:
        raise ConfigError(
            f"task {index} cannot start {task['argv'][0]} ({e.strerror}): write the job array "
            "again with launch.py --sweep_slurm from the environment that should run it"
        ) from None
