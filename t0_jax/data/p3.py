"""bigscience/P3 downloads as our seqio caches.

P3 is the seqio cache T0 trained from, one folder per task under `data/`, named exactly like
our tasks (`registry.task_name`, REFERENCE §4). Two layouts exist:

TFRecord  `data/<task>/<split>.tfrecord-NNNNN-of-NNNNN`, `info.<split>.json`,
          `stats.<split>.json`, `COMPLETED` (written by an older seqio). This IS a cache dir:
          pass `.../P3/data` to `caches.use_cache_dirs` (`--seqio_additional_cache_dirs`).
          seqio reads the older info files as they are (int32/bool stored as int64 are cast
          back from the info dtypes), so nothing is converted.
Parquet   what the Hugging Face hub serves today: the same columns (`inputs`, `targets` int32
          lists, `inputs_pretokenized`, `targets_pretokenized`, and on score-eval tasks `idx`,
          `is_correct`, `weight`, `answer_choices`) in `<task>/<split>/*.parquet`,
          `<task>/<split>-*.parquet` or `<task>/<split>.parquet`. We CONVERT it once into the
          TFRecord cache layout with a Beam pipeline (`import_p3`, `t0-cache --import_p3 SRC
          --output_cache_dir DIR`), rather than reading parquet while training: the trainer
          then has one reader (seqio's cached source, with its per-host file sharding) for
          our caches and P3 alike.

A folder whose name is not one of our tasks is an error naming it and the closest task names
(P3 was built with an older promptsource; such a task cannot be matched to our templates).
"""
from __future__ import annotations

import os
import time
from typing import Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from t0_jax.data import cache_build, caches, registry

REQUIRED_COLUMNS = ("inputs", "inputs_pretokenized", "targets", "targets_pretokenized")
SCORE_COLUMNS = ("idx", "is_correct", "weight", "answer_choices")


def parquet_splits(folder: str) -> dict:
    """{split: [parquet files]} of one P3 task folder, whichever parquet layout it uses."""
    out: dict = {}
    for entry in sorted(tf.io.gfile.listdir(folder)):
        entry = entry.rstrip("/")
        path = os.path.join(folder, entry)
        if tf.io.gfile.isdir(path):
            files = sorted(tf.io.gfile.glob(os.path.join(path, "*.parquet")))
            if files:
                out.setdefault(entry, []).extend(files)
        elif entry.endswith(".parquet"):
            split = entry[:-len(".parquet")].split("-")[0]
            out.setdefault(split, []).append(path)
    return out


def task_folders(src_dir: str, tasks: Optional[Sequence[str]] = None) -> dict:
    """{task: folder} of the P3 download at `src_dir` (its `data/` folder or the P3 root)."""
    if tf.io.gfile.isdir(os.path.join(src_dir, "data")):
        src_dir = os.path.join(src_dir, "data")
    if not tf.io.gfile.isdir(src_dir):
        raise caches.CacheError(f"P3 folder {src_dir} does not exist; download bigscience/P3 "
                                "(its data/ folder) and pass that path.")
    folders = {n.rstrip("/"): os.path.join(src_dir, n.rstrip("/"))
               for n in tf.io.gfile.listdir(src_dir)
               if not n.startswith(".") and tf.io.gfile.isdir(os.path.join(src_dir, n))}
    if tasks:
        absent = [t for t in tasks if t not in folders]
        if absent:
            raise caches.CacheError(f"{src_dir} has no folder for task(s) {', '.join(absent)}.")
        folders = {t: folders[t] for t in tasks}
    known = set(registry.list_tasks(score_eval=True))
    unknown = [name for name in folders if name not in known]
    if unknown:
        raise caches.CacheError(_unknown_message(src_dir, unknown, known))
    return folders


def _unknown_message(src_dir: str, unknown: list, known) -> str:
    return (f"P3 folder(s) in {src_dir} are not tasks we know: "
            f"{caches.describe_unknown(unknown, known)}. Import only known tasks with --tasks, "
            "or rename a folder to its task name (`t0-tasks list --mixture NAME`).")


def check_columns(path: str, name: str) -> list:
    """The P3 columns of one parquet file; a file without them is an error naming it."""
    import pyarrow.parquet as pq

    try:
        columns = pq.read_schema(path).names
    except Exception as error:  # noqa: BLE001  pyarrow raises several types for bad files
        raise caches.CacheError(f"cannot read {path} (P3 task '{name}') as parquet: {error}; "
                                "re-download it.") from error
    needed = REQUIRED_COLUMNS + (SCORE_COLUMNS[:2] if name.endswith(registry.SCORE_EVAL_SUFFIX)
                                 else ())
    absent = [c for c in needed if c not in columns]
    if absent:
        raise caches.CacheError(f"{path} (P3 task '{name}') lacks column(s) {', '.join(absent)} "
                                f"(it has {', '.join(columns)}); it is not a P3 file.")
    return [c for c in REQUIRED_COLUMNS + SCORE_COLUMNS if c in columns]


def to_example(row: dict) -> dict:
    """One parquet row -> the example dict seqio's cache writers take (P3's dtypes)."""
    out = {}
    for key, value in row.items():
        if key in ("inputs", "targets", "idx"):
            out[key] = np.asarray(value, np.int32)
        elif key == "is_correct":
            out[key] = np.bool_(value)
        elif key == "weight":
            out[key] = np.float32(value)
        elif key == "answer_choices":
            out[key] = np.asarray([str(c) for c in value], dtype=object)
        elif key.endswith("_pretokenized"):
            out[key] = str(value)
    return out


def import_p3(src_dir: str, output_cache_dir: str, *, tasks: Optional[Sequence[str]] = None,
              splits: Optional[Sequence[str]] = None,
              pipeline_options: Optional[Sequence[str]] = None, min_shards: int = 1,
              progress=print) -> cache_build.CacheReport:
    """Convert P3 parquet task folders into seqio caches under `output_cache_dir` (a Beam
    pipeline: ReadAllFromParquet → seqio's writers; same skip/temporary-folder rules as
    `cache_build.cache_tasks`)."""
    import apache_beam as beam

    start = time.perf_counter()
    options = list(pipeline_options) if pipeline_options else (
        cache_build.default_pipeline_options())
    folders = task_folders(src_dir, tasks)
    rows, pending = cache_build.existing_outputs(list(folders), output_cache_dir, progress)
    plan = {}  # task -> {split: (files, columns)}
    for name in pending:
        found = parquet_splits(folders[name])
        wanted = list(splits) if splits else sorted(found)
        absent = [s for s in wanted if s not in found]
        if absent or not found:
            raise caches.CacheError(f"P3 folder {folders[name]} has no parquet files for split(s) "
                                    f"{', '.join(absent) or 'any'} (found: "
                                    f"{', '.join(found) or 'none'}); is it the TFRecord layout? "
                                    "Then use it directly as a cache dir.")
        plan[name] = {s: (found[s], check_columns(found[s][0], name)) for s in wanted}

    def build(pipeline, tmp_root):
        for name, by_split in plan.items():
            out_dir = caches.task_folder(tmp_root, name)
            features = seqio.get_mixture_or_task(name).output_features
            completion = []
            for split, (files, columns) in by_split.items():
                label = f"{name}_{split}"
                examples = (pipeline | f"{label}_files" >> beam.Create(files)
                            | f"{label}_read" >> beam.io.ReadAllFromParquet(columns=columns)
                            | f"{label}_example" >> beam.Map(to_example))
                completion += cache_build.add_write_steps(
                    examples, label, out_dir, split, max(len(files), min_shards), features)
            cache_build.add_completed_step(completion, name, out_dir)

    todo = {name: list(by_split) for name, by_split in plan.items()}
    rows += cache_build.run_and_install(build, todo, output_cache_dir, options, progress)
    return cache_build.CacheReport(output_cache_dir, rows, time.perf_counter() - start, options)
