import errno
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import REPO, tiny_flags

from dcgan_jax.run import control


def test_second_holder_is_refused_with_the_first_ones_pid_and_host(tmp_path):
    with control.hold(tmp_path, control.StopRequests()) as path:
        holder = json.loads(path.read_text())
        message = rf"in use by process {holder['pid']} on {holder['host']}"
        with pytest.raises(control.WorkdirLockedError, match=message):
            with control.hold(tmp_path, control.StopRequests()):
                pass
    assert not path.exists()  # Released.


RACE_WORKER = """
import sys, time
from pathlib import Path
from dcgan_jax.run import control
folder, me, trials = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(folder / f"ready{me}").touch()
while len(list(folder.glob("ready*"))) < 3:
    time.sleep(0.01)
t0 = max(p.stat().st_mtime for p in folder.glob("ready*")) + 0.3
for trial in range(trials):
    while time.time() < t0 + 0.3 * trial:
        pass
    try:
        with control.hold(folder / str(trial), control.StopRequests()):
            print(trial, "held", flush=True)
            time.sleep(0.1)
    except control.WorkdirLockedError:
        print(trial, "refused", flush=True)
"""


def test_of_runs_started_together_on_one_workdir_one_holds_it(tmp_path):
    """Three processes take the lock at the same moment, eight times (half of the times over a
    stale lock): before, one often read another's lock while it was still empty, took it for a
    dead run's, removed it, and both trained in one folder."""
    trials = 8
    for trial in range(trials):
        (tmp_path / str(trial)).mkdir()
        if trial % 2:
            stale = {"pid": 2**22 + 1, "host": socket.gethostname()}  # Above Linux's pid_max.
            (tmp_path / str(trial) / control.LOCK_NAME).write_text(json.dumps(stale))
    command = [sys.executable, "-c", RACE_WORKER, str(tmp_path)]
    workers = [
        subprocess.Popen([*command, str(i), str(trials)], stdout=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    lines = [line.split() for w in workers for line in w.communicate(timeout=120)[0].splitlines()]
    held = [trial for trial, outcome in lines if outcome == "held"]
    assert len(lines) == 3 * trials
    assert sorted(held) == sorted(str(t) for t in range(trials))  # Exactly one holder each time.


def test_a_file_system_without_locks_still_holds_the_workdir(tmp_path, monkeypatch):
    """Lustre refuses flock by default (ENOSYS): runs there take the lock as before the guard."""

    def no_locks(*_):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(control.fcntl, "flock", no_locks)
    with control.hold(tmp_path, control.StopRequests()) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(control.WorkdirLockedError):
            with control.hold(tmp_path, control.StopRequests()):
                pass


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / control.LOCK_NAME).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname()})
    )
    with control.hold(tmp_path, control.StopRequests()) as path:
        assert json.loads(path.read_text())["pid"] != dead.pid


def test_half_written_lock_is_stale(tmp_path):
    (tmp_path / control.LOCK_NAME).write_text('{"pid": ')
    with control.hold(tmp_path, control.StopRequests()):
        pass


@pytest.mark.parametrize("holder", [[1], 5, {"pid": "x", "host": 3}, {"pid": -1}, {"pid": 0}])
def test_a_lock_of_another_shape_or_a_process_number_that_is_no_process_is_stale(holder, tmp_path):
    """Valid JSON that is not what hold() writes: not an AttributeError; pid 0 and -1 name process
    groups (os.kill(-1, 0) reaches every process), never a run that holds the lock."""
    if isinstance(holder, dict) and "host" not in holder:
        holder["host"] = socket.gethostname()
    (tmp_path / control.LOCK_NAME).write_text(json.dumps(holder))
    with control.hold(tmp_path, control.StopRequests()) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_lock_from_another_host_is_refused_with_a_hint(tmp_path):
    (tmp_path / control.LOCK_NAME).write_text(
        json.dumps({"pid": 1, "host": "elsewhere", "started": "then"})
    )
    with pytest.raises(
        control.WorkdirLockedError,
        match="on host elsewhere .* if that run is dead, delete the lock",
    ):
        with control.hold(tmp_path, control.StopRequests()):
            pass


def test_second_run_on_the_same_workdir_refuses_naming_the_first(tmp_path):
    args = [
        sys.executable,
        str(REPO / "launch.py"),
        "--experiment=fashion_dcgan",
        f"--workdir={tmp_path}",
    ]
    first = subprocess.Popen(
        [*args, *tiny_flags(num_steps=100_000, log_every=1)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        for line in first.stderr:
            if " step 2/100000 " in line:
                break
        second = subprocess.run(
            [*args, *tiny_flags()], capture_output=True, text=True, cwd=REPO, timeout=120
        )
        assert second.returncode == 2
        assert f"is in use by process {first.pid} on {socket.gethostname()}" in second.stderr
    finally:
        first.terminate()
        first.communicate(timeout=120)
    # Stopped by the SIGTERM of terminate(), with a final checkpoint.
    assert first.returncode == 143


def test_a_stop_signal_the_process_was_started_ignoring_stays_ignored():
    """nohup's SIGHUP: closing the terminal must not stop a run started under nohup (it stopped it,
    with a checkpoint); SIGTERM still stops it."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with control.stop_requests() as requests:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is requests
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
