"""How a training run stops without losing work: preemption, one trainer per MODEL_DIR, and
checkpoint writes that fail.

Preemption. TPU/GPU clouds and schedulers (SLURM, Kubernetes, GCE spot) stop a job with SIGTERM
and a grace period. `StopWatch` turns it into "finish the current step, save, exit":
  one host     a Python SIGTERM handler sets a flag; the loop polls `should_stop(step)` after
               every step (a step in flight always completes: Python runs the handler when the
               jitted call returns).
  many hosts   only some hosts may get the signal, and all must save the SAME step. With JAX's
               preemption service (on by default after `jax.distributed.initialize()`; it
               listens for SIGTERM itself), `multihost_utils.reached_preemption_sync_point(step)`
               answers True on every host at the same step (the max step any host had reached,
               plus one). Without the service, each host's flag is all-gathered every step and
               the stop happens where any host has one.
The run then raises `Preempted` (exit code `EXIT_PREEMPTED` from t0-train) naming the step and
its checkpoint; rerunning the same command resumes from it exactly.

One trainer per MODEL_DIR: `run_lock.RunLock` (a lock object with a heartbeat; re-exported here).

Failed checkpoint writes (disk full, permission or read-only file system mid-run): Orbax writes
a step into a temporary directory and renames it only when complete, so the previous step stays
intact; `CheckpointWriteError` says which one that is and what to fix.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Optional

import jax
import numpy as np

from t0_jax import storage
from t0_jax.train.run_lock import (  # noqa: F401 - re-exported: callers import them from here
    DEFAULT_LEASE_S, LOCK_FILE, RunLock, RunLockedError)

EXIT_PREEMPTED = 143  # 128 + SIGTERM: what schedulers expect of a job stopped by SIGTERM


class Preempted(Exception):
    """Training stopped early on a signal, after saving the step it reached."""

    label = "stopped"  # t0-train prints `t0-train: stopped: ...`

    def __init__(self, step: int, train_steps: int, checkpoint: Optional[str], signal_name: str):
        self.step, self.train_steps, self.checkpoint = step, train_steps, checkpoint
        where = (f"checkpoint {checkpoint}" if checkpoint else "no checkpoint could be written")
        super().__init__(f"{signal_name} received: stopped at step {step} of {train_steps}; "
                         f"{where}. Rerun the same command to resume from it.")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the newest finalized one is intact (exit 2)."""


# ----------------------------------------------------------------------------- preemption


class StopWatch:
    """Did someone ask this run to stop? Polled once per step, the same answer on every host."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.signals = tuple(signals)
        self.received: Optional[str] = None  # name of the first signal seen on this host
        self._previous: dict = {}

    def install(self) -> "StopWatch":
        """Handle the signals (main thread only; elsewhere the default action stays)."""
        if _preemption_service() is not None:
            return self  # JAX's service has its own SIGTERM notifier: do not replace it
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name

    def request(self, name: str = "SIGTERM") -> None:
        """Ask for a stop as a signal would (tests, embedding code)."""
        self._handle(signal.Signals[name], None)

    def should_stop(self, step: int) -> bool:
        """True at the step where every host stops (call after each step, on every host)."""
        service = _preemption_service()
        from jax.experimental import multihost_utils  # noqa: PLC0415

        if service is not None:
            if multihost_utils.reached_preemption_sync_point(step):
                self.received = self.received or "SIGTERM"
                return True
            return False
        if jax.process_count() == 1:
            return self.received is not None
        flags = multihost_utils.process_allgather(np.int32(self.received is not None))
        if np.any(flags):
            self.received = self.received or "SIGTERM (on another host)"
            return True
        return False

    def __enter__(self) -> "StopWatch":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()


def _preemption_service():
    """JAX's preemption sync manager when this is a multi-host run that has one."""
    from jax._src import distributed  # noqa: PLC0415 - where jax keeps the runtime client

    state = distributed.global_state
    if state.client is None or jax.process_count() == 1:
        return None
    return state.preemption_sync_manager


def start_run(model_dir, lock_lease_s: float = DEFAULT_LEASE_S) -> tuple[RunLock, StopWatch]:
    """Install the SIGTERM watch, then take MODEL_DIR's lock: once the lock file exists, a
    SIGTERM stops the run cleanly (after at least one step)."""
    watch = StopWatch().install()
    try:
        return RunLock(model_dir, lease_s=lock_lease_s).acquire(), watch
    except BaseException:
        watch.restore()
        raise


def end_run(lock: "RunLock", watch: StopWatch, ckpt) -> None:
    """Restore the signal handlers, let an in-flight save finish (a failed write is reported
    as `CheckpointWriteError`), release the lock."""
    watch.restore()
    try:
        if ckpt is not None:
            with checkpoint_writes(ckpt):
                ckpt.close()
    finally:
        lock.release()


def stop_at(step: int, train_steps: int, ckpt, watch: StopWatch, save=None) -> None:
    """Save `step` (unless `save` is None: already saved), wait until it is final, raise
    `Preempted`. Every host calls this at the same step."""
    with checkpoint_writes(ckpt, step):
        if save is not None:
            save()
        ckpt.wait()
    directory = storage.join(ckpt.directory, str(step))
    raise Preempted(step, train_steps, str(directory), watch.received or "a stop request")


# ----------------------------------------------------------------------------- failed writes


@contextlib.contextmanager
def checkpoint_writes(ckpt, step: Optional[int] = None):
    """Turn a file-system failure while writing a checkpoint (now, or an earlier asynchronous
    save surfacing here) into a `CheckpointWriteError` naming the last good checkpoint."""
    try:
        yield
    except CheckpointWriteError:
        raise
    except Exception as error:  # noqa: BLE001 - only OS-level write failures are converted
        converted = checkpoint_write_error(error, step, ckpt.directory, _last_good(ckpt))
        if converted is None:
            raise
        raise converted from error


def _last_good(ckpt) -> Optional[int]:
    try:
        return ckpt.latest_step()
    except Exception:  # noqa: BLE001 - a broken disk may fail this too; say "unknown"
        return None


def checkpoint_write_error(error: BaseException, step: Optional[int], model_dir,
                           last_good: Optional[int]) -> Optional[CheckpointWriteError]:
    """A `CheckpointWriteError` for an OS-level write failure (None for anything else)."""
    os_error = _os_error_in(error)
    if os_error is None:
        return None
    root = storage.absolute(model_dir)
    kept = (f"the last good checkpoint is {storage.join(root, str(last_good))} (intact)"
            if last_good is not None else "no finished checkpoint is in MODEL_DIR yet")
    reason = os_error.strerror or str(os_error)
    where = os_error.filename or root
    what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
    result = CheckpointWriteError(
        f"could not write {what} ({where}: {reason}); {kept}. Free disk space or fix the "
        f"permissions of {root}, then rerun the same command to resume.")
    result.errno = os_error.errno
    return result


def _os_error_in(error: Optional[BaseException]) -> Optional[OSError]:
    """The OSError in an exception chain (Orbax and tensorstore wrap file-system errors)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError):
            return error
        if _looks_like_io_failure(error):
            return OSError(None, str(error).splitlines()[0][:300])
        error = error.__cause__ or error.__context__
    return None


def _looks_like_io_failure(error: BaseException) -> bool:
    """tensorstore reports file-system failures as ValueError text with the POSIX reason."""
    text = str(error)
    return isinstance(error, (ValueError, RuntimeError)) and any(
        reason in text for reason in ("No space left on device", "Permission denied",
                                      "Read-only file system", "Disk quota exceeded"))
