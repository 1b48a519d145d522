"""Wires the task layer to training (DESIGN.md: training and the task layer stay separate).

`train(...)` is what gin binds as `t0_jax.train.train`: the trainer's arguments plus the data
ones (MIXTURE_OR_TASK_NAME, DATA_DIR, SPLIT, PACK, USE_CACHED_TASKS, CACHE_DIRS). It builds a
`PipelineSource` over `t0_jax.data.pipeline` and hands it to `t0_jax.train.trainer.train`.

`PipelineSource` is a BatchSource (t0_jax/train/input_source.py) whose position is a tf.data
iterator checkpoint, saved with every trainer checkpoint and restored on resume, so a restart at
step k does not rebuild the k batches already consumed. Stages that cannot be checkpointed (a
Python generator) make `save_state` answer False: the trainer then resumes by replay and says so.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from typing import Mapping, Optional, Sequence

from t0_jax import storage
from t0_jax.train import trainer

log = logging.getLogger(__name__)

STATE_FILE = "source.json"
BATCH_LOG_ENV = "T0_INPUT_LOG"  # debug: a directory; each host appends "position sha1" per batch


class PipelineSource:
    """Packed training batches of a registered task or mixture, resumable from saved state."""

    def __init__(self, name: str, split: str, feature_lengths: Mapping[str, int],
                 batch_size: int, *, pack: bool = True, seed: int = 0,
                 use_cached: bool = False):
        self.args = dict(name=name, split=split, feature_lengths=dict(feature_lengths),
                         batch_size=batch_size, pack=pack, seed=seed, use_cached=use_cached)
        self._iterator = None
        self._restored: Optional[tuple[str, int]] = None  # (directory, position)
        self._checked = None  # ((shard_index, num_shards), dataset) built by check(), reused once
        self.opened_from_state = False

    def _dataset(self, shard_index: int, num_shards: int):
        from t0_jax.data import pipeline  # noqa: PLC0415 - TF boundary

        a = self.args
        return pipeline.train_dataset(a["name"], a["split"], a["feature_lengths"],
                                      a["batch_size"], pack=a["pack"], seed=a["seed"],
                                      shard_index=shard_index, num_shards=num_shards,
                                      use_cached=a["use_cached"])

    def check(self, num_shards: int) -> None:
        """Build the dataset (names, splits, caches and shapes checked; nothing is read).
        `open` reuses it for the same shard: building a mixture traces every task's functions
        (seconds per call for a few dozen tasks)."""
        self._checked = ((0, num_shards), self._dataset(0, num_shards))

    def open(self, batches_consumed: int, shard_index: int, num_shards: int):
        from t0_jax.data import pipeline  # noqa: PLC0415 - TF boundary

        checked, self._checked = self._checked, None
        ds = (checked[1] if checked and checked[0] == (shard_index, num_shards)
              else self._dataset(shard_index, num_shards))
        restored, self._restored = self._restored, None
        self.opened_from_state = False
        if restored is not None and restored[1] == batches_consumed:
            try:
                self._iterator = pipeline.TrainIterator.restored(ds, restored[0],
                                                                 batches_consumed)
                self.opened_from_state = True
                return _logged(self._iterator, shard_index, num_shards)
            except pipeline.InputStateError as e:
                log.warning("input: the saved tf.data state in %s does not restore (%s); "
                            "replaying %d batches instead", restored[0], e, batches_consumed)
        self._iterator = pipeline.TrainIterator(ds, batches_consumed)
        return _logged(self._iterator, shard_index, num_shards)

    def save_state(self, directory: str, step: int) -> bool:
        from t0_jax.data import pipeline  # noqa: PLC0415 - TF boundary

        if self._iterator is None:
            return False
        try:
            self._iterator.save(directory)
        except pipeline.InputStateError as e:
            log.warning("input: the tf.data pipeline of %r cannot be checkpointed (%s)",
                        self.args["name"], e)
            return False
        storage.write_text(storage.join(directory, STATE_FILE),
                           json.dumps({"position": self._iterator.position, "step": step}))
        return True

    def restore_state(self, directory: str, step: int) -> bool:
        try:
            position = int(json.loads(storage.read_text(storage.join(directory, STATE_FILE)))[
                "position"])
        except (OSError, ValueError, KeyError):
            return False
        self._restored = (directory, position)
        return True


def _logged(iterator, shard_index: int, num_shards: int):
    """`iterator`, and with $T0_INPUT_LOG set, one line per batch it yields (multi-host tests:
    which batches each host produced, and that a resumed run rebuilt none of them)."""
    directory = os.environ.get(BATCH_LOG_ENV)
    if not directory:
        return iterator
    path = os.path.join(directory, f"shard_{shard_index}-of-{num_shards}.txt")

    def generate():
        for batch in iterator:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{iterator.position - 1} {batch_digest(batch)}\n")
            yield batch
    return generate()


def batch_digest(batch) -> str:
    """The $T0_INPUT_LOG hash of a host batch (tests compare against it)."""
    digest = hashlib.sha1()
    for name in sorted(batch):
        digest.update(name.encode() + batch[name].tobytes())
    return digest.hexdigest()


def use_caches(use_cached_tasks: bool, cache_dirs: Sequence[str], name: str,
               split: str) -> None:
    """Point seqio at CACHE_DIRS and, with USE_CACHED_TASKS, check every task is cached."""
    if not (use_cached_tasks or cache_dirs):
        return
    from t0_jax.data import caches  # noqa: PLC0415 - TF boundary

    caches.use_caches([name], split, cache_dirs, check=use_cached_tasks)


def pipeline_source(mixture_or_task_name: str, split: str, task_feature_lengths: Mapping,
                    batch_size: int, *, pack: bool, seed: int, data_dir: Optional[str],
                    vocab_path: Optional[str], use_cached_tasks: bool = False,
                    cache_dirs: Sequence[str] = ()) -> PipelineSource:
    """The real input: registry tasks/mixtures (or their caches) → packed features.

    Registration happens here so an unknown name fails before any compute.
    """
    import jax  # noqa: PLC0415

    from t0_jax.data import registry, sources  # noqa: PLC0415 - TF boundary

    if data_dir:
        sources.set_data_dir(data_dir)
    registry.register_all(vocab_path=vocab_path)
    from t0_jax.data import mixtures  # noqa: PLC0415,F401 - importing registers the T0 mixtures

    source = PipelineSource(mixture_or_task_name, split, task_feature_lengths, batch_size,
                            pack=pack, seed=seed, use_cached=use_cached_tasks)
    try:
        use_caches(use_cached_tasks, cache_dirs or (), mixture_or_task_name, split)
    except ValueError as e:  # caches.CacheError: names the task and the directories searched
        raise trainer.ConfigError(str(e)) from e
    try:
        source.check(jax.process_count())
    except (ValueError, KeyError) as e:
        raise trainer.ConfigError(f"MIXTURE_OR_TASK_NAME={mixture_or_task_name!r}: {e}") from e
    return source


_TRAINER_PARAMETERS = set(inspect.signature(trainer.train).parameters)


def train(*, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
          batch_size: int, data_dir: Optional[str] = None, vocab_path: Optional[str] = None,
          split: str = "train", pack: bool = True, seed: int = 0,
          use_cached_tasks: bool = False, cache_dirs: Optional[Sequence[str]] = None,
          dry_run: bool = False, **trainer_kwargs) -> Optional[trainer.TrainResult]:
    """`t0_jax.train.trainer.train` on the seqio pipeline of `mixture_or_task_name`.

    The configuration is checked first (no data, no compute); `dry_run` stops there.
    """
    unknown = sorted(set(trainer_kwargs) - _TRAINER_PARAMETERS)
    if unknown:
        raise trainer.ConfigError(f"unknown train parameter(s) {unknown}; see "
                                  "t0_jax.train.trainer.train for the accepted ones.")
    batch_source = trainer_kwargs.pop("batch_source", None)
    common = dict(task_feature_lengths=task_feature_lengths, batch_size=batch_size,
                  vocab_path=vocab_path, seed=seed, **trainer_kwargs)
    trainer.train(**common, dry_run=True)
    if dry_run:
        return None
    source = batch_source or pipeline_source(
        mixture_or_task_name, split, task_feature_lengths, batch_size, pack=pack, seed=seed,
        data_dir=data_dir, vocab_path=vocab_path, use_cached_tasks=use_cached_tasks,
        cache_dirs=cache_dirs or ())
    return trainer.train(**common, batch_source=source)
