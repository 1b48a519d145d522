"""One trainer per MODEL_DIR, on a disk or on object storage: a lock object with a heartbeat.

`RunLock` creates MODEL_DIR/LOCK_FILE with `storage.create_exclusive` (O_EXCL on a disk, a
create-if-absent precondition on GCS/S3: two hosts racing for it get one winner) holding the
holder's pid, host, start time, `heartbeat` (unix seconds) and `lease_s`. While it holds the
lock, the holder rewrites the heartbeat every lease/4 seconds on a daemon thread. Multi-host,
process 0 holds it and the others learn the outcome by broadcast.

A second trainer that finds the lock decides, in this order:
  * it is this very process (an earlier call that did not release): take it;
  * a LOCAL lock from this host: the process table answers at once (pid gone: take it over;
    pid alive: refuse);
  * otherwise watch the heartbeat for up to one lease: if it moves, the holder lives and this
    trainer stops with a message naming it; if it does not move (the holder was SIGKILLed, its
    machine was lost — the usual restart after a crash on a pod, where processes share no
    process table and host names repeat across containers), the lock is stale and taken over.
    A heartbeat already older than the lease (by this host's clock) is stale at once.
So rerunning the same command after a crash resumes after at most one lease of waiting, and a
live trainer is never displaced. Known limit: object stores delete without a precondition here,
so two trainers taking over the same stale lock in the same instant could both succeed; start
one trainer per MODEL_DIR, as the lock is meant to remind.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Callable, Optional

import jax
import numpy as np

from t0_jax import storage

LOCK_FILE = ".t0-train.lock"
DEFAULT_LEASE_S = 120.0


class RunLockedError(RuntimeError):
    """Another trainer holds MODEL_DIR (a user error: exit 2)."""


class RunLock:
    """MODEL_DIR/LOCK_FILE held for the life of a run by process 0 (a context manager)."""

    def __init__(self, model_dir: str | os.PathLike, lease_s: float = DEFAULT_LEASE_S,
                 progress: Callable[[str], None] = print):
        self.model_dir = storage.absolute(model_dir)
        self.path = storage.join(self.model_dir, LOCK_FILE)
        self.lease_s = float(lease_s)
        self.held = False
        self._progress = progress
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None
        self._me = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "lease_s": self.lease_s}

    def acquire(self) -> "RunLock":
        error = None
        if jax.process_index() == 0:
            try:
                self._take()
            except RunLockedError as e:
                error = e
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils  # noqa: PLC0415

            failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
            if failed and error is None:
                error = RunLockedError(f"{self.model_dir} is in use by another trainer "
                                       "(process 0 could not take its lock).")
        if error is not None:
            raise error
        return self

    def _content(self) -> bytes:
        return json.dumps({**self._me, "heartbeat": time.time()}).encode()

    def _take(self) -> None:
        for _ in range(3):
            if storage.create_exclusive(self.path, self._content()):
                self._hold()
                return
            holder = self._holder()
            if not self._may_take_over(holder):
                raise RunLockedError(_locked_message(self.path, self.model_dir, holder or {},
                                                     self._me))
            storage.remove(self.path)  # stale: take it over
        raise RunLockedError(f"could not take {self.path}: another trainer keeps recreating it.")

    def _hold(self) -> None:
        self.held = True
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="t0-lock-heartbeat",
                                      daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            with contextlib.suppress(OSError):  # a missed beat only shortens the margin
                storage.write_bytes(self.path, self._content())

    def _holder(self) -> Optional[dict]:
        try:
            holder = json.loads(storage.read_text(self.path))
            return holder if isinstance(holder, dict) and "pid" in holder else None
        except (OSError, ValueError):
            return None

    def _may_take_over(self, holder: Optional[dict]) -> bool:
        me = self._me
        if holder is not None and holder.get("host") == me["host"] and int(holder["pid"]) == me["pid"]:
            return True
        if holder is not None and not storage.is_remote(self.path) and holder.get("host") == me["host"]:
            return _dead_here(holder, me)  # one process table: ask it, do not wait
        return not self._heartbeat_moves(holder)

    def _heartbeat_moves(self, holder: Optional[dict]) -> bool:
        """Watch the holder's heartbeat for one lease (its own, or ours if it has none)."""
        lease = float((holder or {}).get("lease_s") or self.lease_s)
        first = (holder or {}).get("heartbeat")
        if first is not None and time.time() - float(first) > lease:
            return False
        self._progress(f"t0-train: {self.path} is held ({_who(holder)}); watching its heartbeat "
                       f"for up to {lease:.0f} s to see whether that trainer still runs")
        deadline = time.monotonic() + lease
        while time.monotonic() < deadline:
            time.sleep(min(2.0, max(lease / 20, 0.2)))
            now = self._holder()
            if now is None and storage.exists(self.path) is False:
                return False  # released meanwhile: take it
            if now is not None and now.get("heartbeat") != first:
                return True
        return False

    def release(self) -> None:
        if self.held:
            self._stop.set()
            if self._beat is not None:
                self._beat.join(timeout=10)
            with contextlib.suppress(OSError):
                storage.remove(self.path)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _dead_here(holder: dict, me: dict) -> bool:
    """The holder's pid no longer runs on this host (a lock from another host: unknown)."""
    if holder.get("host") != me["host"]:
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it runs, as another user
    return False


def _who(holder: Optional[dict]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "an unknown holder"


def _locked_message(path: str, model_dir: str, holder: dict, me: dict) -> str:
    since = f", started {holder['started']}" if holder.get("started") else ""
    return (f"MODEL_DIR {model_dir} is in use by another trainer ({_who(holder)}{since}; its "
            f"heartbeat in {path} is alive): stop it first, or use another MODEL_DIR.")
