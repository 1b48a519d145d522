"""The trainer's input feed: a BatchSource's host batches → global arrays, prefetched on a
thread, with the input position saved beside every checkpoint and restored on resume.

Why the position stays exact although the thread reads ahead: the feed keeps every host batch
it has pulled from the source but the step has not consumed yet ("pending", at most the
prefetch depth). A save freezes the thread (a lock around each pull), asks the source to save
its state — which is the state after the last pulled batch — and writes the pending batches
beside it. A restart yields the pending batches first and then continues the restored source,
so batch n of the resumed run is batch n of an uninterrupted one, whatever step the save came
at (periodic, final, or a preemption).

Layout, per checkpoint step and host (see `checkpoints.input_state_directory`):
    MODEL_DIR/input_state/<step>/host_<i>-of-<n>/
      position.json   {"batches_consumed", "pending", "step"}
      pending.npz     the pending host batches (keys "<k>/<feature>")
      ...             whatever the source writes (a tf.data iterator checkpoint)
"""
from __future__ import annotations

import collections
import io
import json
import logging
import threading
import time
from typing import Iterator, Optional, Sequence

import numpy as np

from t0_jax import storage
from t0_jax.parallel import host_arrays, mesh as mesh_lib
from t0_jax.train import checkpoints
from t0_jax.train.input_source import BatchSource, HostBatch

log = logging.getLogger(__name__)

POSITION = "position.json"
PENDING = "pending.npz"
RESTORED, REPLAYED, FRESH = "restored", "replayed", "fresh"


def _write_pending(directory: str, batches: Sequence[HostBatch]) -> None:
    arrays = {f"{k}/{name}": np.asarray(v) for k, b in enumerate(batches) for name, v in b.items()}
    buffer = io.BytesIO()  # one object (storage): a local file or one upload to a bucket
    np.savez(buffer, **arrays)
    storage.write_bytes(storage.join(directory, PENDING), buffer.getvalue())


def _read_pending(directory: str, count: int) -> list[dict]:
    if not count:
        return []
    with np.load(io.BytesIO(storage.read_bytes(storage.join(directory, PENDING)))) as data:
        out = [dict() for _ in range(count)]
        for key in data.files:
            k, name = key.split("/", 1)
            out[int(k)][name] = data[key]
    return out


class Feed:
    """Global batches for the loop; `save(model_dir, step, batches_consumed)` beside each
    checkpoint. Build with `open_feed`."""

    def __init__(self, source: BatchSource, iterator: Iterator[HostBatch], mesh,
                 pending: Sequence[HostBatch] = (), size: int = 2):
        self.source = source
        self._iterator = iterator
        self._lock = threading.Lock()
        self._pending = collections.deque(pending)  # pulled, not consumed (oldest first)
        self.pulled = 0          # batches pulled from the source by this feed
        self.pull_seconds = 0.0  # time spent pulling them
        self.checkpointable = True
        self._batches = host_arrays.prefetch_to_device(self._host_batches(list(pending)), mesh,
                                                       size=size)

    def _host_batches(self, restored: list) -> Iterator[HostBatch]:
        """The restored pending batches (already in `_pending`), then the source's, each
        recorded as pending under the lock that `save` takes."""
        yield from restored
        while True:
            with self._lock:
                start = time.perf_counter()
                batch = next(self._iterator, None)
                if batch is None:
                    return
                self.pull_seconds += time.perf_counter() - start
                self.pulled += 1
                self._pending.append(batch)
            yield batch

    def next(self) -> Optional[dict]:
        """The next global batch, or None when the source ended."""
        item = next(self._batches, None)
        if item is not None:
            with self._lock:
                self._pending.popleft()
        return item

    @property
    def seconds_per_batch(self) -> float:
        return self.pull_seconds / max(self.pulled, 1)

    def save(self, model_dir: str, step: int, batches_consumed: int) -> bool:
        """This host's input position at `batches_consumed`; False (logged once) when the
        source cannot be checkpointed, and a restart will replay instead."""
        if not self.checkpointable:
            return False
        directory = checkpoints.input_state_directory(model_dir, step)
        checkpoints.clear_directory(directory)
        with self._lock:  # the thread cannot pull while the source saves
            ok = self.source.save_state(str(directory), step)
            if ok:
                _write_pending(directory, list(self._pending))
                storage.write_text(storage.join(directory, POSITION), json.dumps({
                    "batches_consumed": int(batches_consumed), "pending": len(self._pending),
                    "step": int(step)}))
        if not ok:
            self.checkpointable = False
            checkpoints.clear_directory(directory, recreate=False)
            log.warning("the input pipeline cannot save its state; a restart will replay the "
                        "batches already consumed (≈%.3g s per batch as measured here: at step "
                        "%d that is ≈%.0f s before the first step)", self.seconds_per_batch,
                        step, batches_consumed * self.seconds_per_batch)
        return ok

    def close(self) -> None:
        """Stop the prefetch thread and wait for it (see `host_arrays.prefetch_to_device`)."""
        self._batches.close()


def open_feed(source: BatchSource, mesh, *, model_dir: str, step: int,
              batches_consumed: int, resumed: bool, size: int = 2) -> tuple[Feed, str]:
    """The feed at `batches_consumed`, from the input state saved at `step` when there is one
    (`RESTORED`), else by replay (`REPLAYED`); `FRESH` at position 0. Logs the path taken."""
    shard_index, num_shards = mesh_lib.data_shard_info(mesh)
    pending: list = []
    path = FRESH if not batches_consumed else REPLAYED
    if resumed and batches_consumed:
        directory = checkpoints.input_state_directory(model_dir, step)
        position = _read_position(directory)
        if (position is not None and position["batches_consumed"] == batches_consumed
                and source.restore_state(str(directory), step)):
            pending = _read_pending(directory, position["pending"])
            path = RESTORED
    start = batches_consumed + len(pending)
    iterator = source.open(start, shard_index, num_shards)
    if path == RESTORED:
        log.info("input: restored the saved input state at step %d (%d batches consumed, %d "
                 "pending); nothing is replayed", step, batches_consumed, len(pending))
    elif path == REPLAYED:
        log.warning("input: no usable saved input state at step %d; resuming by replay (%d "
                    "batches are rebuilt and discarded)", step, batches_consumed)
    return Feed(source, iterator, mesh, pending, size=size), path


def _read_position(directory: str) -> Optional[dict]:
    try:
        return json.loads(storage.read_text(storage.join(directory, POSITION)))
    except (OSError, ValueError):
        return None

