"""Stopping without losing work: SIGTERM, a second trainer on one MODEL_DIR, failed writes.

In-process (tiny model, synthetic batches, 8 fake CPU devices): a SIGTERM delivered during
step 3 stops the run after that step with step 3 saved (not a checkpoint-period step), and the
rerun ends bitwise equal to an uninterrupted run; a checkpoint write that fails in Orbax's
background commit (disk full) stops the run with the previous checkpoint intact (its arrays
equal the uninterrupted run's) and the rerun resumes from it. Real process: `python -m
t0_jax.bin.train` (the SIGKILL test's command line: a seqio cache of real MRPC) gets SIGTERM
once its lock file exists (the handler is installed by then), finishes exactly one step, saves
it, exits 143 with a line saying where it stopped; the rerun of the same command ends bitwise
equal to an in-process uninterrupted run. Two hosts (two processes, jax.distributed over gloo):
SIGTERM to one of them, and both stop at the same step.
"""
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from t0_jax.bin import train as train_cli
from t0_jax.convert import auto
from t0_jax.train import checkpoints, preemption
from tests.train import test_kill_resume as kill_resume
from tests.train.test_trainer import _assert_same_params, _run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _sigterm_at(step_wanted):
    def callback(step, _):
        if step == step_wanted:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler takes it
    return callback


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """6 uninterrupted steps (checkpoints at 2, 4, 6: all kept)."""
    directory = tmp_path_factory.mktemp("straight")
    return directory, _run(directory, 6)


def test_sigterm_saves_the_current_step_and_resumes_exactly(tmp_path, straight):
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(preemption.Preempted) as stopped:
        _run(tmp_path, 6, step_callback=_sigterm_at(3))
    assert signal.getsignal(signal.SIGTERM) is previous  # handler restored
    assert stopped.value.step == 3 and "stopped at step 3 of 6" in str(stopped.value)
    assert stopped.value.checkpoint == str(tmp_path / "3")
    ckpt = checkpoints.Checkpointer(tmp_path)
    assert ckpt.all_steps() == [2, 3]
    ckpt.close()
    assert not (tmp_path / preemption.LOCK_FILE).exists()
    resumed = _run(tmp_path, 6)
    assert resumed.step == 6 and resumed.batches_consumed == 6
    _assert_same_params(straight[1].state.params, resumed.state.params)


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, straight, monkeypatch):
    handler = ocp.JsonCheckpointHandler
    original = handler._save_fn

    async def disk_full(self, x, directory):
        if str(directory.parent.name).startswith("4"):  # the step-4 save, in the background
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return await original(self, x, directory)

    monkeypatch.setattr(handler, "_save_fn", disk_full)
    with pytest.raises(preemption.CheckpointWriteError) as failed:
        _run(tmp_path, 6)
    message = str(failed.value)
    assert "No space left on device" in message
    assert f"the last good checkpoint is {tmp_path / '2'} (intact)" in message
    monkeypatch.undo()
    ckpt = checkpoints.Checkpointer(tmp_path)
    assert ckpt.all_steps() == [2]
    ckpt.close()
    kept, reference = (auto.load_checkpoint(d / "2").params for d in (tmp_path, straight[0]))
    _assert_same_params(reference, kept)
    resumed = _run(tmp_path, 6)  # disk fixed: the rerun resumes from step 2
    _assert_same_params(straight[1].state.params, resumed.state.params)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Orbax's loop
def test_damaged_latest_checkpoint_is_named(tmp_path):
    from t0_jax.convert.layout import CheckpointFormatError

    _run(tmp_path, 2)
    shutil.rmtree(tmp_path / "2" / "params" / "d")  # the array files of the newest step
    with pytest.raises(CheckpointFormatError, match=f"{tmp_path / '2'} could not be restored"):
        _run(tmp_path, 4)
    assert not (tmp_path / preemption.LOCK_FILE).exists()


def test_second_trainer_on_one_model_dir_refuses(tmp_path):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = tmp_path / preemption.LOCK_FILE
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                    "started": "earlier"}))
        with pytest.raises(preemption.RunLockedError, match=f"pid {holder.pid} on "):
            _run(tmp_path, 2)
        assert json.loads(lock.read_text())["pid"] == holder.pid  # not taken over
        assert not (tmp_path / "config.gin").exists() and not (tmp_path / "2").exists()
    finally:
        holder.kill()
        holder.wait()
    result = _run(tmp_path, 2)  # the holder is gone: its lock is stale and taken over
    assert result.step == 2 and not lock.exists()


def test_lock_from_another_host_is_taken_over_only_when_its_heartbeat_stops(tmp_path):
    holder = preemption.RunLock(tmp_path, lease_s=0.8).acquire()  # beats every 0.2 s
    other = preemption.RunLock(tmp_path, lease_s=0.8, progress=lambda line: None)
    other._me["host"] = "elsewhere-" + socket.gethostname()  # no shared process table
    with pytest.raises(preemption.RunLockedError, match="heartbeat .* is alive"):
        other.acquire()
    assert json.loads((tmp_path / preemption.LOCK_FILE).read_text())["pid"] == os.getpid()
    holder._stop.set()  # the holder dies without releasing (SIGKILL, a lost machine)
    holder._beat.join()
    other.acquire()  # after one lease without a beat
    assert other.held and json.loads((tmp_path / preemption.LOCK_FILE).read_text())[
        "host"].startswith("elsewhere-")
    other.release()
    assert not (tmp_path / preemption.LOCK_FILE).exists()


def test_sigterm_to_the_console_script_stops_after_one_step_and_resumes_bitwise(
        tmp_path, shared_data_dir, spm_model_path, mrpc_cache):
    reference_dir, stopped_dir = tmp_path / "reference", tmp_path / "stopped"
    assert train_cli.main(kill_resume._argv(reference_dir, shared_data_dir, spm_model_path,
                                            mrpc_cache)) == 0
    argv = kill_resume._argv(stopped_dir, shared_data_dir, spm_model_path, mrpc_cache)
    log = tmp_path / "stopped.log"
    with kill_resume._train_process(argv, log) as proc:
        _wait_for(lambda: (stopped_dir / preemption.LOCK_FILE).exists() or
                  proc.poll() is not None, "the trainer's lock file")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(240)
    text = log.read_text()
    assert code == preemption.EXIT_PREEMPTED, text[-3000:]
    assert "t0-train: stopped: SIGTERM received: stopped at step 1 of 8" in text
    assert "Rerun the same command to resume" in text and "Traceback" not in text
    assert kill_resume._finalized_steps(stopped_dir) == [1]  # one step, saved, nothing more
    assert not (stopped_dir / preemption.LOCK_FILE).exists()

    with kill_resume._train_process(argv, tmp_path / "resumed.log") as proc:
        assert proc.wait(240) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    want, got = (kill_resume._final_params(d) for d in (reference_dir, stopped_dir))
    assert jax.tree.structure(want) == jax.tree.structure(got)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


_HOST = """
import sys, time
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2,
                           process_id=int(sys.argv[1]))
from jax.experimental import multihost_utils
from t0_jax.train import preemption
watch = preemption.StopWatch().install()
print("ready", preemption._preemption_service() is not None, flush=True)
for step in range(1, 3000):
    time.sleep(0.02)
    multihost_utils.sync_global_devices(f"step {step}")  # as a train step's collectives do
    if watch.should_stop(step):
        print("stop", step, flush=True)
        break
"""


def test_two_hosts_stop_at_the_same_step_when_one_gets_sigterm(tmp_path):
    """Two real processes (jax.distributed over gloo, JAX's preemption service on): SIGTERM
    reaches host 1 only, and both stop at the same step."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    env = dict(kill_resume._env(), XLA_FLAGS="--xla_force_host_platform_device_count=2")
    hosts = [subprocess.Popen([sys.executable, "-c", _HOST, str(i), address], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        assert all(_ready(h) for h in hosts)
        time.sleep(0.5)
        hosts[1].send_signal(signal.SIGTERM)
        stops = [h.communicate(timeout=120)[0] for h in hosts]
    finally:
        for h in hosts:
            h.kill()
    steps = [[int(line.split()[1]) for line in out.splitlines() if line.startswith("stop ")]
             for out in stops]
    assert len(steps[0]) == 1 and steps[0] == steps[1], stops


def _ready(host) -> bool:
    """The host's "ready" line (after any start-up warnings): True with the service on."""
    for line in host.stdout:
        if line.startswith("ready"):
            return line.split() == ["ready", "True"]
    return False


def _wait_for(condition, what, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
