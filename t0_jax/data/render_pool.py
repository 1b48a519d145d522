"""Rendering chunks of examples: in this process, or in a pool of worker processes.

Glossary
    job        `RenderJob`: which split (a `sources.SplitSpec`), which template, whether the
               answer choices travel with the rows. Small and picklable; no examples inside.
    chunk      an int64 array of global example indices; `render_chunk` reads them from the
               split, renders each with the template and returns
               ({inputs [rows], targets [rows], idx [rows]
                 (+ answer_choices [rows, most choices] padded with "", num_choices [rows])},
                dropped), rows = the examples whose rendering is exactly (inputs, targets).
    workers    `render_workers()`: `set_render_workers(n)`, else `$T0_RENDER_WORKERS`, else the
               number of cores. 0 or 1 renders in the calling thread; more sends each chunk to
               one of that many worker processes, so N concurrent callers keep N cores busy.

Why our own processes rather than `multiprocessing`: a spawned or forkserver child re-imports
the parent's `__main__` (for `t0-train` that is JAX, Flax and the trainer, in every worker).
Ours are fresh interpreters (never forked from a process with TensorFlow/JAX threads) that
import only this module, `sources` and `templates`; requests and replies are pickles over the
child's stdin/stdout. Each worker opens the split reader itself (`sources.reopen`), so only
indices and rendered strings cross the pipe. Workers start on first use, are shared by every
pipeline of the process and stop at exit (or when their stdin closes: the parent died).
"""
from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import itertools
import os
import pathlib
import pickle
import subprocess
import sys
import threading
from typing import Optional

import numpy as np

from t0_jax.data import sources, templates

WORKERS_ENV = "T0_RENDER_WORKERS"

_configured: Optional[int] = None


class RenderWorkerError(RuntimeError):
    """A render worker process died (the message says how to render in-process instead)."""


def set_render_workers(count: Optional[int]) -> None:
    """Render with `count` worker processes (0 or 1: in-process; None: back to the default)."""
    global _configured
    _configured = None if count is None else _checked(count, "set_render_workers")


def render_workers() -> int:
    """The worker count in effect (see the module docstring)."""
    if _configured is not None:
        return _configured
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if configured:
        return _checked(configured, f"${WORKERS_ENV}")
    return os.cpu_count() or 1


def _checked(value, where: str) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 0:
        raise ValueError(f"{where}: the number of render workers must be an integer >= 0 "
                         f"(0 or 1 renders in-process); got {value!r}.")
    return count


# ----------------------------------------------------------------------------- rendering


@dataclasses.dataclass(frozen=True)
class RenderJob:
    split: sources.SplitSpec
    template: templates.Template
    with_choices: bool


def render_chunk(job: RenderJob, indices) -> tuple:
    """(chunk arrays, dropped) for the examples at `indices` (see the module docstring)."""
    reader = sources.reopen(job.split)
    kept, dropped = [], 0
    for index, example in reader.read(indices):
        rendered = templates.render_example(job.template, example)
        if rendered is None:
            dropped += 1
        else:
            kept.append((index, rendered))
    return chunk_arrays(kept, job.with_choices), dropped


def chunk_arrays(kept: list, with_choices: bool) -> dict:
    """Column arrays of (index, RenderedExample) pairs; strings as object arrays of str."""
    chunk = {"inputs": np.array([r.inputs for _, r in kept], dtype=object),
             "targets": np.array([r.targets for _, r in kept], dtype=object),
             "idx": np.array([i for i, _ in kept], dtype=np.int32)}
    if with_choices:  # [rows, most choices] padded with "", and the true count per row
        lists = [r.answer_choices for _, r in kept]
        width = max((len(choices) for choices in lists), default=0)
        padded = np.empty((len(lists), width), dtype=object)
        for row, choices in enumerate(lists):
            padded[row] = list(choices) + [""] * (width - len(choices))
        chunk["answer_choices"] = padded
        chunk["num_choices"] = np.array([len(c) for c in lists], dtype=np.int32)
    return chunk


def run_chunk(job: RenderJob, indices, workers: Optional[int] = None) -> tuple:
    """`render_chunk` in a worker process when `workers` (default `render_workers()`) > 1, else
    right here; both give the same result."""
    count = render_workers() if workers is None else workers
    if count <= 1:
        return render_chunk(job, indices)
    return _pool(count).call((job, np.asarray(indices, np.int64)))


def submit_chunk(job: RenderJob, indices, workers: int) -> int:
    """Start rendering a chunk in the worker processes and return at once with a ticket for
    `collect_chunk` (0, and nothing started, when `workers` <= 1).

    tf.data runs the functions of parallel maps on a shared pool of about one thread per core;
    a call that blocks while a worker renders would hold one of them. Submitting from a
    sequential map and collecting after a prefetch keeps every pool thread free for TensorFlow.
    """
    if workers <= 1:
        return 0
    indices = np.asarray(indices, np.int64)
    ticket = _TICKET_BASE | next(_tickets)
    future = _pool(workers).submit((job, indices))
    with _pending_lock:
        _pending[ticket] = (job, indices.tobytes(), future)
    return ticket


def collect_chunk(ticket: int, job: RenderJob, indices, workers: int) -> tuple:
    """The result of `submit_chunk(job, indices)`: waits for it, or renders it now when this
    process never submitted it (an iterator restored from a checkpoint, or in-process)."""
    indices = np.asarray(indices, np.int64)
    with _pending_lock:
        entry = _pending.pop(int(ticket), None)
    if entry is not None and entry[0] == job and entry[1] == indices.tobytes():
        return entry[2].result()
    return run_chunk(job, indices, workers)


# Tickets: a random per-process base, so a ticket restored from another process's checkpoint
# never names a chunk of this one (and a match is checked against the job and indices anyway).
_TICKET_BASE = int.from_bytes(os.urandom(4), "little") << 31
_tickets = itertools.count(1)
_pending: dict = {}  # ticket -> (job, indices bytes, Future); popped when collected
_pending_lock = threading.Lock()


# ----------------------------------------------------------------------------- worker processes


class _Worker:
    """One child interpreter running `serve()`; used by one thread at a time."""

    def __init__(self):
        package_root = str(pathlib.Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from t0_jax.data.render_pool import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        _live.add(self.process.pid)

    def call(self, request) -> tuple:
        """("ok", arrays, dropped) or ("error", exception); RenderWorkerError if it died."""
        try:
            pickle.dump(request, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
            return pickle.load(self.process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as error:
            code = self.stop()
            raise RenderWorkerError(
                f"a render worker process (pid {self.process.pid}) stopped (exit code {code}); "
                f"its error, if any, is on stderr above. Set {WORKERS_ENV}=0 (or "
                f"set_render_workers(0)) to render in-process.") from error

    def stop(self, timeout: float = 2.0) -> Optional[int]:
        _live.discard(self.process.pid)
        try:
            self.process.stdin.close()  # the worker's loop ends at EOF
        except OSError:
            pass
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


class _Pool:
    """Up to `size` workers, started on demand; a caller borrows an idle one per chunk."""

    def __init__(self, size: int):
        self.size, self.idle, self.started = size, [], 0
        self.closed = False
        self.condition = threading.Condition()
        # one dispatching thread per worker: each blocks on its worker's pipe (GIL released)
        self.dispatch = concurrent.futures.ThreadPoolExecutor(size, "t0-render")

    def submit(self, request) -> concurrent.futures.Future:
        return self.dispatch.submit(self.call, request)

    def call(self, request) -> tuple:
        worker = self._acquire()
        try:
            status, *reply = worker.call(request)
        except BaseException:  # died, or interrupted mid-reply: the worker cannot be reused
            worker.stop()
            self._release(None)
            raise
        self._release(worker)
        if status == "error":
            raise reply[0]
        return tuple(reply)

    def _acquire(self) -> _Worker:
        with self.condition:
            while not self.idle and self.started >= self.size:
                self.condition.wait()
            if self.idle:
                return self.idle.pop()
            self.started += 1
        try:
            return _Worker()
        except BaseException:
            self._release(None)
            raise

    def _release(self, worker: Optional[_Worker]) -> None:
        with self.condition:
            if worker is None or self.closed:
                self.started -= 1
                if worker is not None:
                    worker.stop()
            else:
                self.idle.append(worker)
            self.condition.notify()

    def close(self) -> None:
        self.dispatch.shutdown(wait=False)  # submitted chunks still finish
        with self.condition:
            self.closed, idle, self.idle = True, self.idle, []
        for worker in idle:
            worker.stop()


_current: Optional[_Pool] = None
_live: set = set()  # pids of started, not yet stopped workers
_pool_lock = threading.Lock()


def _pool(size: int) -> _Pool:
    global _current
    with _pool_lock:
        if _current is None or _current.size != size:
            if _current is not None:
                _current.close()  # busy workers stop when they come back
            else:
                atexit.register(shutdown_render_workers)
            _current = _Pool(size)
        return _current


def worker_pids() -> list:
    """Process ids of the running workers (for CPU and memory accounting)."""
    return sorted(_live)


def shutdown_render_workers() -> None:
    """Stop every idle worker process (a later chunk starts fresh ones)."""
    global _current
    with _pool_lock:
        pool, _current = _current, None
    if pool is not None:
        pool.close()


def serve() -> None:
    """Worker loop: read (job, indices) pickles from stdin, write replies, stop at EOF."""
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt replies
    while True:
        try:
            job, indices = pickle.load(requests)
        except EOFError:
            return
        try:
            reply = ("ok",) + render_chunk(job, indices)
        except Exception as error:  # noqa: BLE001 - sent back and raised in the parent
            reply = ("error", error)
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            payload = pickle.dumps(("error", RuntimeError(f"{type(reply[1]).__name__}: "
                                                          f"{reply[1]}")))
        replies.write(payload)
        replies.flush()
