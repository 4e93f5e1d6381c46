"""Going on from a checkpoint: resuming a run (a change that would not take effect is refused, a new
learning rate applied), and returning to the last good state after a divergence; the rates in force
from each step, and why, go to ``learning_rates.jsonl``."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from dcgan_jax.gan import config as config_lib
from dcgan_jax.gan import loop, parallel
from dcgan_jax.gan import state as state_lib
from dcgan_jax.gan.state import GanState
from dcgan_jax.run import checkpoints, control, writers


def learning_rates(state: GanState) -> tuple[float, float]:
    """G's and D's learning rates as the state holds them."""
    return float(parallel.to_host(state.g.learning_rate)), float(
        parallel.to_host(state.d.learning_rate)
    )


def config_changes(stored: ml_collections.ConfigDict, current: ml_collections.ConfigDict) -> str:
    old, new = config_lib.flatten(stored), config_lib.flatten(current)
    return ", ".join(
        f"{k}: {old.get(k)!r} -> {v!r}" for k, v in sorted(new.items()) if old.get(k) != v
    )


# Fields a resume may not change: the checkpoint's random stream and batch order follow the seed,
# and its weights were fitted to this data; a change would half-apply or mix two runs.
FIXED_ON_RESUME = tuple(
    "seed dataset.name dataset.split dataset.labels dataset.image_size "
    "dataset.num_synthetic".split()
)


def _check_resumable(stored, config, where):
    old, new = config_lib.flatten(stored), config_lib.flatten(config)
    for key in FIXED_ON_RESUME:
        if old.get(key) != new.get(key):
            raise checkpoints.CheckpointMismatchError(
                f"--config.{key}={new.get(key)!r}: {where} was trained with {old.get(key)!r}, and "
                "a resume cannot "
                f"change it; use another --workdir, or --config.{key}={old.get(key)!r} to resume"
            )
    if bool(old.get("train.ema_decay")) != bool(new.get("train.ema_decay")):
        raise checkpoints.CheckpointMismatchError(
            f"--config.train.ema_decay={new.get('train.ema_decay')}: {where} was trained with "
            f"{old.get('train.ema_decay')}; an EMA can be neither started nor dropped on resume "
            "(use another --workdir)"
        )


def _with_changed_rates(state, stored, config, workdir):
    """The rates the user set anew since the checkpoint, from its step on; else the state's (which
    may have been lowered after a divergence)."""
    old, new = (
        state_lib.learning_rates(stored.optimizer),
        state_lib.learning_rates(config.optimizer),
    )
    held = learning_rates(state)
    rates = tuple(n if n != o else h for n, o, h in zip(new, old, held, strict=True))
    if rates != held:
        state = _set_rates(state, rates, workdir, "changed by the user on resume")
    return state


def _set_rates(state, rates, workdir, why):
    """``state`` with G's and D's learning rates ``rates``, recorded as in force from its step."""
    record_rates(workdir, state.host_step, rates, why)
    g_rate, d_rate = rates
    return state.replace(g=state.g.with_learning_rate(g_rate), d=state.d.with_learning_rate(d_rate))


def record_rates(workdir: Path, step: int, rates: tuple[float, float], why: str) -> None:
    """Appends to ``workdir/learning_rates.jsonl`` the rates in force from ``step`` on, and why."""
    if jax.process_index() == 0:
        record = {"step": step, "g": rates[0], "d": rates[1], "why": why}
        writers.append_line(workdir / "learning_rates.jsonl", json.dumps(record))


def _keep_rates_before(workdir: Path, step: int, held: tuple[float, float], why: str) -> None:
    """Drops the records of ``learning_rates.jsonl`` from ``step`` on (of steps a resume redoes, or
    rates a crash or a divergence kept from reaching a checkpoint); then records ``held``, the rates
    going on, from ``step`` unless the records left end in them."""
    path = workdir / "learning_rates.jsonl"
    rows = writers.read_metrics(path, (int, float, str))
    kept = [row for row in rows if row["step"] < step]
    if len(kept) < len(rows) and jax.process_index() == 0:
        writers.write_atomically(path, "".join(json.dumps(row) + "\n" for row in kept))
    last = kept[-1] if kept else {}
    # The state holds float32 rates; a record, the float the user gave.
    if not np.allclose([last.get("g", np.nan), last.get("d", np.nan)], held, rtol=1e-6, atol=0):
        record_rates(workdir, step, held, why)


def restore_or_init(run: loop.Run, ckpt: checkpoints.Checkpointer) -> GanState:
    """The newest good checkpoint, or the initial state; a model-shape mismatch also names the
    config fields that changed, a change a resume cannot make is refused, a new learning rate
    applied."""
    state = run.init()
    workdir = ckpt.directory.parent
    if not ckpt.all_steps():
        _keep_rates_before(
            workdir, 0, state_lib.learning_rates(run.config.optimizer), "the config's"
        )
        return state
    try:
        state = ckpt.restore(state, set_aside_damaged=True)
    except checkpoints.CheckpointMismatchError as e:
        stored = ckpt.restore_config()[1]
        # The field at fault, when it is one of these.
        _check_resumable(stored, run.config, workdir)
        raise checkpoints.CheckpointMismatchError(
            f"{e} Changed fields: {config_changes(stored, run.config)}"
        ) from e
    step = state.host_step
    _keep_rates_before(workdir, step, learning_rates(state), "the checkpoint's")
    stored = ckpt.restore_config(step)[1]
    _check_resumable(stored, run.config, workdir)
    if changes := config_changes(stored, run.config):
        logging.warning(
            "Resuming with a config that differs from the checkpoint's (from step %d): %s",
            step,
            changes,
        )
    state = _with_changed_rates(state, stored, run.config, workdir)
    logging.info("Resumed from %s at step %d.", ckpt.directory, step)
    return state


def nonfinite_networks(state: GanState) -> jax.Array:
    """[generator, discriminator]: True where any parameter or statistic (G's EMA included) is NaN
    or inf."""

    def bad(*trees) -> jax.Array:
        return jnp.any(jnp.array([~jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(trees)]))

    return jnp.stack(
        [
            bad(state.g.params, state.g.batch_stats, state.g_ema),
            bad(state.d.params, state.d.batch_stats),
        ]
    )


_nonfinite = jax.jit(nonfinite_networks)


# Named only when no loss is non-finite.
HEALTH_MONITORS = ("g_grad_norm", "d_grad_norm", "d_logit_gap")


def divergence(state: GanState, step: int, stacked: dict | None) -> control.Divergence | None:
    """Non-finite metrics (of the steps of ``stacked``, up to ``step``) or parameters: the first bad
    step and what went bad (the health monitors only when they alone are); None when all is finite.
    """
    problems, first_bad = [], step
    if stacked:
        bad_rows = ~np.all([np.isfinite(v) for v in stacked.values()], axis=0)
        if bad_rows.any():
            row = int(np.argmax(bad_rows))
            first_bad = step - len(bad_rows) + row + 1
            named = [name for name, values in stacked.items() if not np.isfinite(values[row])]
            primary = [name for name in named if name not in HEALTH_MONITORS]
            network = {"d": "discriminator", "g": "generator"}
            problems += [
                f"{n}={stacked[n][row]} ({network.get(n.split('_')[0], 'model')})"
                for n in primary or named
            ]
    bad = parallel.to_host(_nonfinite(state))
    problems += [
        f"{name} parameters"
        for name, b in zip(("generator", "discriminator"), bad, strict=True)
        if b
    ]
    return control.Divergence(first_bad, problems, learning_rates(state)) if problems else None


def check_restore_allowed(
    config, divergence: control.Divergence, restores_done: int, kept: str
) -> None:
    """TrainingDiverged unless ``train.on_divergence`` says restore and restores are left; ``kept``
    names the last good checkpoint."""
    train = config.train
    restoring = train.on_divergence == "restore"
    if restoring and restores_done < train.max_divergence_restores:
        return
    limit = f"train.max_divergence_restores={train.max_divergence_restores}"
    why = f" after {restores_done} restores ({limit})" if restoring else ""
    advice = control.divergence_advice(config, divergence)
    raise control.TrainingDiverged(
        f"training diverged at {divergence}{why}. {kept} {advice}", divergence.step
    )


def recover(
    run: loop.Run, ckpt: checkpoints.Checkpointer, divergence, restores_done: int
) -> GanState:
    """``train.on_divergence=restore``: the last good state with lower learning rates; else
    TrainingDiverged."""
    ckpt.wait()
    steps = ckpt.all_steps()
    kept = "No checkpoint had been written yet."
    if steps:
        kept = f"The newest checkpoint, {ckpt.directory / str(steps[-1])}, is the last good state."
    check_restore_allowed(run.config, divergence, restores_done, kept)
    state = restore_or_init(run, ckpt)
    # Below both the checkpoint's rates and those that diverged.
    factor = run.config.train.divergence_lr_factor
    g_rate, d_rate = (
        min(s, d) * factor
        for s, d in zip(learning_rates(state), divergence.learning_rates, strict=True)
    )
    state = _set_rates(state, (g_rate, d_rate), ckpt.directory.parent, "lowered after divergence")
    state = jax.device_put(state, parallel.replicated(run.mesh))
    step = state.host_step
    taken = f"checkpoint {ckpt.directory / str(step)}" if ckpt.all_steps() else "the initial state"
    rates = f"learning rates G {g_rate:.3g}, D {d_rate:.3g}"
    count = f"restore {restores_done + 1} of {run.config.train.max_divergence_restores}"
    logging.warning(
        f"Diverged at {divergence}. {kept} Going on from step {step} ({taken}) with {rates} "
        f"({count})."
    )
    return state
