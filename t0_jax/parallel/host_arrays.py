"""Host-local numpy batches ↔ global jax.Arrays, and a background prefetcher to devices.

Each process's input pipeline yields only its own rows (`batch_size // process_count`); the
global batch is assembled with `jax.make_array_from_process_local_data`, which places each
process's rows on its local devices along the `data` mesh axis without any cross-host copy.
The prefetcher does that transfer on a background thread, a few batches ahead, so the host
input pipeline and the host→device copy overlap the training step instead of stalling it.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, Mapping, Optional

import jax
import numpy as np
from jax.sharding import Mesh

from t0_jax.parallel import mesh as mesh_lib


def host_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local rows → global arrays sharded [batch] over `data`.

    The global batch is process_count × the local rows; the local rows must split evenly over
    this process's share of the data axis.
    """
    out = {}
    for name, local in batch.items():
        local = np.asarray(local)
        sharding = mesh_lib.batch_sharding(mesh, local.ndim)
        global_shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
        data_size = mesh.shape["data"]
        if global_shape[0] % data_size:
            raise ValueError(f"global batch of {global_shape[0]} rows (feature {name!r}) does not "
                             f"split over the data axis of size {data_size}; make BATCH_SIZE a "
                             f"multiple of {data_size}.")
        out[name] = jax.make_array_from_process_local_data(sharding, local, global_shape)
    return out


def global_to_host(tree):
    """Global arrays → numpy arrays of the full values (fully addressable or replicated ones)."""
    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)
    return jax.tree.map(fetch, tree)


class _End:
    """Marks the end of the source iterator (or carries its exception)."""

    def __init__(self, error: Optional[BaseException] = None):
        self.error = error


def prefetch_to_device(batches: Iterable[Mapping[str, np.ndarray]], mesh: Mesh,
                       size: int = 2, join_timeout: float = 10.0) -> Iterator[dict[str, jax.Array]]:
    """Yield global arrays built `size` batches ahead on a daemon thread.

    Errors in the source pipeline are re-raised in the consumer (not lost in the thread).
    Closing the generator stops the thread after its current pull and waits up to
    `join_timeout` s for it: a thread left inside native code (tf.data) can abort the
    interpreter at exit.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def producer():
        try:
            for batch in batches:
                if not put(host_to_global(batch, mesh)):
                    return
            put(_End())
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(_End(e))

    thread = threading.Thread(target=producer, name="t0_jax-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        if thread is not threading.current_thread():
            thread.join(join_timeout)
