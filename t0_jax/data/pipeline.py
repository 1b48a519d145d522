"""Mixture or task → (packed) EncDec features → per-host numpy batches.

Training: `seqio.get_mixture_or_task(name).get_dataset(..., num_epochs=None)` (infinite,
shuffled with `seed`, this host's shard) → `seqio.EncDecFeatureConverter(pack=True)` →
`batch(batch_size // num_shards, drop_remainder=True)` → numpy. Everything is a deterministic
function of (name, split, lengths, batch size, seed, shard). Resuming at step k: `TrainIterator`
saves and restores its tf.data iterator (`tf.train.Checkpoint(iterator=...)`, T5X's
checkpoint_dataset), so the stream continues without rebuilding the k batches; when some stage
cannot be checkpointed (a Python generator) it falls back to "skip k batches", which reproduces
the same stream at O(k) cost. Python functions inside tf.data (`numpy_function` over a pure
function of the example index) are saved with ExternalStatePolicy.IGNORE: their state is not
needed; a generator still refuses to save and so takes the replay path.

Evaluation: same features, unshuffled, one epoch, the last batch padded with all-zero rows
(decoder_loss_weights 0) so every batch has the same shape and compiles once.

Features (seqio EncDecFeatureConverter; see docs/internals.md): encoder_input_tokens,
decoder_target_tokens, decoder_input_tokens (shifted right per segment, 0 = start),
decoder_loss_weights, and when packed encoder/decoder_segment_ids and _positions.
"""
from __future__ import annotations

import os
from typing import Iterator, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf

PREFETCH = tf.data.AUTOTUNE


def _converter(pack: bool, passthrough_features=None) -> seqio.EncDecFeatureConverter:
    return seqio.EncDecFeatureConverter(pack=pack, passthrough_features=passthrough_features)


def _provider(name: str):
    try:
        return seqio.get_mixture_or_task(name)
    except ValueError as e:  # the closest registered names, as `t0-tasks` suggests them
        from t0_jax.data import registry  # noqa: PLC0415 - registry imports this layer's peers

        known = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
        raise registry.UnknownNameError("task or mixture", name, known) from e


def _check_sharding(batch_size: int, shard_index: int, num_shards: int) -> int:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} must be in [0, num_shards={num_shards}).")
    if batch_size % num_shards:
        raise ValueError(f"BATCH_SIZE={batch_size} is not divisible by the {num_shards} input "
                         "shards (hosts); use a multiple.")
    return batch_size // num_shards


def features_dataset(name: str, split: str, feature_lengths: Mapping[str, int], *,
                     pack: bool, shuffle: bool, seed: Optional[int], shard_index: int = 0,
                     num_shards: int = 1, num_epochs: Optional[int] = None,
                     passthrough_features=None, use_cached: bool = False,
                     try_in_mem_cache: bool = True) -> tf.data.Dataset:
    """Unbatched model features of a task or mixture (tf.data); `use_cached` reads the seqio
    caches (TFRecords) of the tasks instead of rendering them. `try_in_mem_cache`: seqio keeps
    tasks under 10,000 examples in memory (`Dataset.cache()`), which tf.data cannot save in an
    iterator checkpoint: training turns it off so its input state can be saved."""
    ds = _provider(name).get_dataset(
        sequence_length=dict(feature_lengths), split=split, shuffle=shuffle, seed=seed,
        shard_info=seqio.ShardInfo(shard_index, num_shards), num_epochs=num_epochs,
        use_cached=use_cached, try_in_mem_cache=try_in_mem_cache)
    return _converter(pack, passthrough_features)(ds, dict(feature_lengths))


def _deterministic(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def train_dataset(name: str, split: str, feature_lengths: Mapping[str, int], batch_size: int,
                  pack: bool = True, seed: int = 0, shard_index: int = 0, num_shards: int = 1,
                  shuffle: bool = True, use_cached: bool = False) -> tf.data.Dataset:
    """The infinite batched training stream of this host (`batch_size // num_shards` rows)."""
    local = _check_sharding(batch_size, shard_index, num_shards)
    ds = features_dataset(name, split, feature_lengths, pack=pack, shuffle=shuffle, seed=seed,
                          shard_index=shard_index, num_shards=num_shards, num_epochs=None,
                          use_cached=use_cached, try_in_mem_cache=False)
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return _deterministic(ds.batch(local, drop_remainder=True)).with_options(options)


class InputStateError(RuntimeError):
    """The iterator's state cannot be saved or restored (the caller replays instead)."""


class TrainIterator:
    """Numpy batches of `dataset` from position `start`, whose exact state can be saved
    (`save`) and restored into a fresh iterator of the same dataset (`restore`).

    The tf.data iterator is checkpointed with its read-ahead buffers (prefetch, shuffle), so
    after `restore` the next batch is the one after the last batch this object returned.
    """

    PREFIX = "iterator"

    def __init__(self, dataset: tf.data.Dataset, start: int = 0, skip: bool = True):
        self._dataset = dataset
        self.position = start  # batches of the stream returned so far (incl. skipped ones)
        # skip(0) when restoring: the saved and the restored iterator have the same stages
        ds = dataset.skip(start if skip else 0)
        self._iterator = iter(ds.prefetch(PREFETCH))

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._iterator)  # StopIteration ends the stream
        self.position += 1
        return {k: v.numpy() for k, v in batch.items()}

    def save(self, directory: str) -> None:
        """Write the iterator state into `directory`; InputStateError when some stage (a Python
        generator) cannot be checkpointed."""
        try:
            tf.train.Checkpoint(iterator=self._iterator).write(
                os.path.join(directory, self.PREFIX))
        except (tf.errors.OpError, ValueError, TypeError) as e:
            raise InputStateError(_first_line(e)) from e

    @classmethod
    def restored(cls, dataset: tf.data.Dataset, directory: str, position: int) -> "TrainIterator":
        """A fresh iterator of `dataset` set to the state saved in `directory` (at `position`)."""
        it = cls(dataset, position, skip=False)
        try:
            tf.train.Checkpoint(iterator=it._iterator).read(
                os.path.join(directory, cls.PREFIX)).assert_consumed()
        except (tf.errors.OpError, ValueError, AssertionError) as e:
            raise InputStateError(_first_line(e)) from e
        return it


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def train_batches(name: str, split: str, feature_lengths: Mapping[str, int], batch_size: int,
                  pack: bool = True, seed: int = 0, shard_index: int = 0, num_shards: int = 1,
                  skip_batches: int = 0, shuffle: bool = True,
                  use_cached: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Infinite host-local batches of `batch_size // num_shards` rows (a TrainIterator).

    `skip_batches=k` yields exactly what a fresh iterator yields after its first k batches (the
    skipped batches are still built — packing couples examples — but never leave tf.data).
    """
    ds = train_dataset(name, split, feature_lengths, batch_size, pack=pack, seed=seed,
                       shard_index=shard_index, num_shards=num_shards, shuffle=shuffle,
                       use_cached=use_cached)
    return TrainIterator(ds, skip_batches)


def eval_batches(name: str, split: str, feature_lengths: Mapping[str, int], batch_size: int,
                 pack: bool = False, shard_index: int = 0, num_shards: int = 1,
                 passthrough_features=None) -> Iterator[dict[str, np.ndarray]]:
    """One pass in dataset order; the last batch padded with zero rows to `batch_size // shards`.

    `passthrough_features` ({name: seqio.FeatureConverter.FeatureSpec}, unpacked only) carries
    extra task features such as a score-eval task's `idx`/`is_correct`; their lengths must be in
    `feature_lengths`. Padded rows are all zeros (loss weight 0): callers drop them by weight.
    """
    local = _check_sharding(batch_size, shard_index, num_shards)
    ds = features_dataset(name, split, feature_lengths, pack=pack, shuffle=False, seed=None,
                          shard_index=shard_index, num_shards=num_shards, num_epochs=1,
                          passthrough_features=passthrough_features)
    ds = _deterministic(ds.batch(local, drop_remainder=False)).prefetch(PREFETCH)
    for batch in ds.as_numpy_iterator():
        yield pad_batch(batch, local)


def pad_batch(batch: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Zero-pad every feature along axis 0 to `rows` rows."""
    out = {}
    for k, v in batch.items():
        missing = rows - v.shape[0]
        out[k] = np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)]) if missing else v
    return out


def nonpad_fraction(batches, num_batches: Optional[int] = None) -> dict[str, float]:
    """Fraction of encoder/decoder positions holding real tokens (benchmarks: packing gain).

    Counts `encoder_input_tokens != 0` and `decoder_target_tokens != 0` over the first
    `num_batches` batches (all when None).
    """
    real = {"encoder": 0, "decoder": 0}
    total = {"encoder": 0, "decoder": 0}
    for i, batch in enumerate(batches):
        if num_batches is not None and i >= num_batches:
            break
        for side, key in (("encoder", "encoder_input_tokens"),
                          ("decoder", "decoder_target_tokens")):
            x = np.asarray(batch[key])
            real[side] += int(np.count_nonzero(x))
            total[side] += x.size
    if not total["encoder"]:
        raise ValueError("nonpad_fraction got no batches")
    return {side: real[side] / total[side] for side in real}
