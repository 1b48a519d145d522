"""seqio caches of our tasks: written with Apache Beam (`t0-cache`), read by training and scoring.

T0 never rendered prompts while training: P3 *is* a seqio cache, written by seqio's Beam
pipeline (`seqio/scripts/cache_tasks_main.py`), and T5X reads it with `USE_CACHED_TASKS` and
`--seqio_additional_cache_dirs`. This module does the same with our tasks.

Writing   `cache_build.cache_tasks(names, output_cache_dir, ...)` (`t0-cache`): seqio's Beam
          pipeline over our tasks/mixtures, in seqio's format: `<dir>/<task>/<split>.tfrecord-
          NNNNN-of-NNNNN`, `info.<split>.json`, `stats.<split>.json`, `COMPLETED`. What is cached
          is the task up to its `CacheDatasetPlaceholder` (tokenize → append_eos → cache, as T0).
Reading   `use_cache_dirs(dirs)` validates the folders and adds them to seqio's global cache
          dirs; `check_cached(names, split)` checks every task of `names` is cached for `split`
          (one error naming the missing tasks and every directory searched); then
          `pipeline.features_dataset(..., use_cached=True)` / `train_batches(use_cached=True)`
          read through seqio's cached source, sharded by files per host (`ShardInfo`: host i
          reads files i, i+H, ... when there are at least H files, else every H-th example).
Errors    a missing dir, a task folder without COMPLETED, info files of another feature set or
          fixed feature lengths, ids from another vocabulary (the first example is re-tokenized),
          missing or corrupt shards: CacheError naming the file or task and what to do.
P3        a bigscience/P3 `data/` folder in the TFRecord layout is such a cache dir: its folder
          names are our task names. The parquet layout is converted by `p3.import_p3`.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Iterable, Optional, Sequence

import seqio
import tensorflow as tf

from t0_jax import storage
from t0_jax.data import registry

log = logging.getLogger(__name__)

COMPLETED = "COMPLETED"
TMP_PREFIX = ".t0-cache-tmp-"
# Features every cached task needs, and what the score-eval twins add (REFERENCE §8).
TEXT_FEATURES = ("inputs", "targets")
SCORE_FEATURES = ("idx", "is_correct")


class CacheError(ValueError):
    """A cache the user pointed at or asked for is missing, incomplete or does not fit."""


class CacheBuildError(RuntimeError):
    """The Beam pipeline failed; names the task and split whose step failed."""


# ----------------------------------------------------------------------------- names


def expand_tasks(names: Iterable[str]) -> list:
    """Task names of `names` (tasks or mixtures, recursively), in order, without repeats."""
    from t0_jax.data import mixtures  # noqa: F401  registers the T0 mixtures

    out: list = []
    for name in names:
        if name in seqio.MixtureRegistry.names():
            tasks = [t.name for t in seqio.MixtureRegistry.get(name).tasks]
        else:
            registry.task_info(name)  # UnknownNameError with the closest names
            tasks = [name]
        out += [t for t in tasks if t not in out]
    return out


def split_names(value) -> list:
    """'a,b' or ['a', 'b,c'] -> ['a', 'b', 'c'] (flags and gin lists alike)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


# ----------------------------------------------------------------------------- folders


def task_folder(root: str, name: str) -> str:
    return storage.join(root, seqio.get_task_dir_from_name(name))


def is_completed(task_dir: str) -> bool:
    """seqio's completion marker, written after every shard and info file."""
    return storage.is_complete(task_dir, COMPLETED)


def cached_splits(task_dir: str) -> list:
    return sorted(n[len("info."):-len(".json")] for n in storage.listdir(task_dir)
                  if n.startswith("info.") and n.endswith(".json"))


def stats_figures(task_dir: str, split: str) -> dict:
    path = seqio.get_cached_stats_path(task_dir, split)
    if not storage.exists(path):
        return {}
    stats = json.loads(storage.read_text(path))
    return {"examples": stats.get("examples"), "inputs_tokens": stats.get("inputs_tokens"),
            "targets_tokens": stats.get("targets_tokens")}


# ----------------------------------------------------------------------------- reading


def use_cache_dirs(dirs) -> list:
    """Validate cache folders and add them to seqio's global cache dirs (searched in order).

    `dirs`: a list or a comma-separated string (T5X's --seqio_additional_cache_dirs). Each must
    exist and hold task folders named like our tasks; a folder of a known task must be
    COMPLETED with readable info files. Folders with unknown names are logged (with the closest
    task names) and ignored; a directory with none we know is an error. Returns the dirs added.
    """
    dirs = split_names(dirs)
    known = set(registry.list_tasks(score_eval=True))
    for cache_dir in dirs:
        if not storage.isdir(cache_dir):
            raise CacheError(f"cache dir {cache_dir} does not exist; build it with "
                             "`t0-cache --tasks ... --output_cache_dir DIR` or fix the path.")
        if is_completed(cache_dir) or cached_splits(cache_dir):
            raise CacheError(f"{cache_dir} is ONE task's cache folder; give the folder that holds "
                             f"it ({storage.dirname(cache_dir)}).")
        folders = [n for n in storage.listdir(cache_dir)
                   if not n.startswith(".") and storage.isdir(storage.join(cache_dir, n))]
        unknown = [n for n in folders if n not in known]
        if unknown and len(unknown) == len(folders):
            raise CacheError(_unknown_folders_message(cache_dir, unknown, known))
        if unknown:
            log.warning("%s", _unknown_folders_message(cache_dir, unknown, known))
        for name in folders:
            if name in known:
                validate_task_cache(storage.join(cache_dir, name), name, sample=False)
    seqio.add_global_cache_dirs(dirs)
    return dirs


def _unknown_folders_message(cache_dir: str, unknown: list, known) -> str:
    return (f"{cache_dir} holds folders that are not our task names: "
            f"{describe_unknown(unknown, known)}. seqio reads <cache_dir>/<task_name>/: point at "
            "the folder that holds the task folders (for P3: P3/data), or rename folders to the "
            "names `t0-tasks list` shows.")


def describe_unknown(unknown: Sequence[str], known, shown: int = 5) -> str:
    """"'a' (closest: b, c); 'd' and N more": unknown names with the closest task names."""
    parts = []
    for name in sorted(unknown)[:shown]:
        close = registry.closest_names(name, known, n=3)
        parts.append(f"'{name}'" + (f" (closest: {', '.join(close)})" if close else ""))
    more = f" and {len(unknown) - shown} more" if len(unknown) > shown else ""
    return "; ".join(parts) + more


def use_caches(names, split: str, cache_dirs=(), *, check: bool = True) -> dict:
    """Add `cache_dirs` to seqio's cache dirs, then (with `check`) `check_cached(names,
    split)`: what t0-train and t0-score do for USE_CACHED_TASKS / CACHE_DIRS."""
    if cache_dirs:
        use_cache_dirs(list(cache_dirs))
    return check_cached(names, split) if check else {}


def check_cached(names, split: str) -> dict:
    """{task: its cache folder} for every task of `names` (mixtures expand), checked for `split`.

    One CacheError lists every task that is not cached and every directory searched.
    """
    tasks = expand_tasks(split_names(names))
    found, missing = {}, []
    for name in tasks:
        task_dir = seqio.get_mixture_or_task(name).cache_dir
        if task_dir is None:
            missing.append(name)
            continue
        validate_task_cache(task_dir, name, split=split)
        found[name] = task_dir
    if missing:
        searched = seqio.utils.get_global_cache_dirs() or ["(none: no cache dirs were given)"]
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20
                                            else "")
        raise CacheError(f"{len(missing)} of {len(tasks)} task(s) are not cached: {shown}. "
                         f"Searched: {', '.join(searched)}. Cache them with `t0-cache --tasks "
                         "NAMES --output_cache_dir DIR` (or --mixture) and pass that DIR "
                         "(--seqio_additional_cache_dirs / CACHE_DIRS), or set "
                         "USE_CACHED_TASKS = False.")
    return found


def validate_task_cache(task_dir: str, name: str, split: Optional[str] = None,
                        sample: bool = True) -> dict:
    """Check one task folder (COMPLETED, info/stats of `split` or of every split, the shard files,
    and with `sample` the first example against our vocabulary). Returns {split: info}."""
    if not is_completed(task_dir):
        raise CacheError(f"{task_dir} has no {COMPLETED} file: an interrupted or partial cache "
                         f"of '{name}'. Delete the folder and rerun t0-cache (it writes to a "
                         "temporary folder and renames on success), or re-download it.")
    splits = [split] if split else cached_splits(task_dir)
    infos = {}
    for one in splits:
        info_path = seqio.get_cached_info_path(task_dir, one)
        if not storage.exists(info_path):
            raise CacheError(f"the cache of '{name}' at {task_dir} has no split '{one}' (no "
                             f"{os.path.basename(info_path)}; it has: "
                             f"{', '.join(cached_splits(task_dir)) or 'none'}). Cache it with "
                             f"`t0-cache --tasks {name} --splits {one}` into another dir.")
        infos[one] = info = _read_json(info_path, name)
        _check_features(info, info_path, name)
        for path in (seqio.get_cached_stats_path(task_dir, one),):
            if not storage.exists(path):
                raise CacheError(f"{path} is missing (cache of '{name}'): rebuild the task.")
        shards = _shard_files(task_dir, one, info, name)
        if sample and shards:
            _check_first_example(shards[0], info, name)
    return infos


def _read_json(path: str, name: str) -> dict:
    try:
        return json.loads(storage.read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CacheError(f"{path} (cache of '{name}') is not valid JSON ({error}); rebuild or "
                         "re-download the task folder.") from error


def _check_features(info: dict, path: str, name: str) -> None:
    features = info.get("features") or {}
    needed = TEXT_FEATURES + (SCORE_FEATURES if name.endswith(registry.SCORE_EVAL_SUFFIX) else ())
    absent = [f for f in needed if f not in features]
    if absent:
        raise CacheError(f"{path}: the cache of '{name}' lacks feature(s) {', '.join(absent)} "
                         f"(it has {', '.join(sorted(features)) or 'none'}): it was written for "
                         "another feature set; rebuild it with t0-cache.")
    for feature in TEXT_FEATURES:
        desc = features[feature]
        if desc.get("dtype") not in ("int32", "int64") or list(desc.get("shape", [])) != [None]:
            raise CacheError(
                f"{path}: feature '{feature}' of '{name}' is {desc}; expected variable-length "
                "int32 token ids (shape [null]). The cache was written with fixed feature "
                "lengths or a different pipeline; rebuild it with t0-cache (caches hold "
                "untrimmed ids; lengths are applied when training).")


def _shard_files(task_dir: str, split: str, info: dict, name: str) -> list:
    num = int(info.get("num_shards", 0))
    prefix = seqio.get_cached_tfrecord_prefix(task_dir, split)
    files = storage.glob(f"{prefix}-*-of-{num:05d}")
    if num and len(files) != num:
        raise CacheError(f"the cache of '{name}' at {task_dir} should hold {num} '{split}' "
                         f"shards ({os.path.basename(prefix)}-*-of-{num:05d}) but has "
                         f"{len(files)}: an incomplete copy; re-download or rebuild the task.")
    return files


def _check_first_example(path: str, info: dict, name: str) -> None:
    """Re-tokenize the first example's text: ids from another vocabulary, or trimmed to other
    feature lengths, do not match."""
    features = info["features"]
    spec = {k: tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True)
            for k in TEXT_FEATURES}
    spec.update({f"{k}_pretokenized": tf.io.FixedLenFeature([], tf.string, default_value="")
                 for k in TEXT_FEATURES if f"{k}_pretokenized" in features})
    try:
        records = list(tf.data.TFRecordDataset(path).take(1).as_numpy_iterator())
    except tf.errors.OpError as error:
        raise CacheError(corrupt_shard_message(path, name, error)) from error
    if not records:
        return
    example = tf.io.parse_single_example(records[0], spec)
    vocab = registry.task_vocabulary()
    for key in TEXT_FEATURES:
        text = example.get(f"{key}_pretokenized")
        if text is None:
            continue
        ids = example[key].numpy().tolist()
        expected = vocab.encode(text.numpy().decode("utf-8")) + ([vocab.eos_id]
                                                                  if key == "targets" else [])
        if ids == expected:
            continue
        if ids and ids == expected[:len(ids)]:
            raise CacheError(f"{path}: '{key}' of the first example of '{name}' is trimmed to "
                             f"{len(ids)} of {len(expected)} tokens: the cache was written with "
                             "other feature lengths; rebuild it with t0-cache (untrimmed).")
        raise CacheError(f"{path}: the token ids of '{name}' do not match our vocabulary "
                         f"({vocab}) for the same text: the cache was written with another "
                         "vocabulary. Pass that vocabulary (VOCAB_PATH / --vocab_path) or "
                         "rebuild the cache with ours.")


def corrupt_shard_message(path: str, name: str, error: Exception) -> str:
    return (f"cannot read {path} (cache of '{name}'): {str(error).splitlines()[0][:200]}. "
            "The shard is corrupt or truncated: re-download it or delete the task folder and "
            "rebuild it with t0-cache.")


def verify_shards(names, split: str) -> dict:
    """Read every record of every shard of the cached tasks (a full CRC check, slow on P3):
    {task: examples}; a corrupt shard raises a CacheError naming the file."""
    out = {}
    for name, task_dir in check_cached(names, split).items():
        info = validate_task_cache(task_dir, name, split=split, sample=False)[split]
        count = 0
        for path in _shard_files(task_dir, split, info, name):
            try:
                count += int(tf.data.TFRecordDataset(path).reduce(0, lambda n, _: n + 1))
            except tf.errors.OpError as error:
                raise CacheError(corrupt_shard_message(path, name, error)) from error
        out[name] = count
    return out
