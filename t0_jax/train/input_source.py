"""What the trainer reads its batches from: a `BatchSource`, built outside train/ (bin/ wires
the task layer to training; the trainer never imports t0_jax.data).

A source yields host-local numpy batches (`batch_size // num_shards` rows) and may save its
exact position with each checkpoint, per host, so that a restart at step k resumes the stream
where it stopped instead of rebuilding and discarding k batches (T5X's `checkpoint_dataset`).
A source that cannot save its state is resumed by replay: it is reopened `batches_consumed`
batches in, which is exact for a deterministic stream but costs O(k).

Plain callables `(skip_batches, shard_index, num_shards) -> iterator` (tests, notebooks) are
adapted by `as_batch_source` and always resume by replay.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping, Protocol, Union, runtime_checkable

import numpy as np

HostBatch = Mapping[str, np.ndarray]
BatchFunction = Callable[[int, int, int], Iterator[HostBatch]]


@runtime_checkable
class BatchSource(Protocol):
    """The trainer's input. Call order on resume: `restore_state` (maybe), then `open`."""

    def open(self, batches_consumed: int, shard_index: int,
             num_shards: int) -> Iterator[HostBatch]:
        """This host's batches from position `batches_consumed` on (from the restored state
        when `restore_state` returned True for that position, else by replay)."""

    def save_state(self, directory: str, step: int) -> bool:
        """Write this host's position (after the batches yielded so far) into `directory`;
        False when the stream cannot be checkpointed (the caller resumes by replay)."""

    def restore_state(self, directory: str, step: int) -> bool:
        """Load this host's state saved in `directory`; False when none is there or it does
        not apply (the next `open` replays)."""


class ReplaySource:
    """A plain `(skip, shard_index, num_shards) -> iterator` callable as a BatchSource."""

    replays = True

    def __init__(self, fn: BatchFunction):
        self.fn = fn

    def open(self, batches_consumed: int, shard_index: int,
             num_shards: int) -> Iterator[HostBatch]:
        return self.fn(batches_consumed, shard_index, num_shards)

    def save_state(self, directory: str, step: int) -> bool:
        return False

    def restore_state(self, directory: str, step: int) -> bool:
        return False


def as_batch_source(source: Union[BatchSource, BatchFunction]) -> BatchSource:
    """A BatchSource as is; a plain callable wrapped for replay."""
    if isinstance(source, BatchSource):
        return source
    if callable(source):
        return ReplaySource(source)
    raise TypeError(f"batch_source={source!r} is neither a BatchSource (open/save_state/"
                    "restore_state) nor a (skip, shard_index, num_shards) -> iterator callable.")
