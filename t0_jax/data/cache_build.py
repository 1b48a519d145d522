"""`t0-cache`'s engine: seqio-format caches of our tasks, written by Beam, checked, then installed.

Output: exactly seqio's (and P3's) cache format, per task `<split>.tfrecord-NNNNN-of-NNNNN`,
`info.<split>.json`, `stats.<split>.json`, `COMPLETED`; `caches` and seqio read it.

How (see `shard_writer` for the Beam side):
1. plan: tasks/mixtures by our names; tasks already COMPLETED are skipped; for each (task, split)
   the launcher counts the source's examples itself (outside Beam) and makes a `SplitJob` of
   `min_shards` shards;
2. write: tasks are grouped into pipelines of at most `tasks_per_pipeline` tasks (memory and
   lost work on failure stay bounded whatever the number of tasks); in each, one DoFn call per
   shard renders + tokenizes + writes it, then one per split writes info/stats and the counts;
   the runner is chosen explicitly (`beam_runners`: FnApiRunner locally, never Prism or a
   silent fall back; Dataflow/Flink/Spark through `--runner`);
3. check: `cache_counts` compares the source count, the writers' counts, stats and the records
   in the shard files; a split that disagrees is not installed and the run fails naming the
   numbers;
4. install, COMPLETED LAST (object stores have no atomic folder rename): local caches are
   staged in `<dir>/.t0-cache-tmp/<task>/data` and renamed into place, remote ones are written
   straight into their final folder; `COMPLETED` is written after the check. A killed run
   leaves nothing that reads as complete; a rerun deletes that task's partial outputs first.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import time
import uuid
from typing import Callable, Optional, Sequence

import seqio

from t0_jax import storage
from t0_jax.data import (beam_runners, cache_counts, caches, registry, shard_writer, sources,
                         templates)

log = logging.getLogger(__name__)
DEFAULT_MIN_SHARDS = 64  # seqio's default: enough files for per-host sharding and shuffling
DEFAULT_TASKS_PER_PIPELINE = 64
WORK_DIR = ".t0-cache-tmp"  # hidden: `caches.use_cache_dirs` ignores dot folders
default_pipeline_options = beam_runners.default_pipeline_options


@dataclasses.dataclass
class CachedSplit:
    """One row of the t0-cache table."""

    task: str
    split: str
    status: str  # 'written', 'cached' (already COMPLETED), 'skipped' (split not available)
    examples: Optional[int] = None
    inputs_tokens: Optional[int] = None
    targets_tokens: Optional[int] = None
    dropped: Optional[int] = None  # renderings that were not exactly (inputs, targets)
    note: str = ""
    source: Optional[int] = None  # source examples counted by the launcher (written rows)


@dataclasses.dataclass
class CacheReport:
    output_cache_dir: str
    rows: list
    seconds: float
    pipeline_options: list
    runner: str = ""  # e.g. 'FnApiRunner (multi_processing, 2 workers)'

    @property
    def written_examples(self) -> int:
        return sum(r.examples or 0 for r in self.rows if r.status == "written")


def cache_tasks(names: Sequence[str], output_cache_dir: str, *, splits=None, data_dir=None,
                vocab_path=None, pipeline_options: Optional[Sequence[str]] = None,
                min_shards: int = DEFAULT_MIN_SHARDS, num_input_shards: Optional[int] = None,
                modules: Sequence[str] = (), progress: Callable[[str], None] = log.info,
                tasks_per_pipeline: int = DEFAULT_TASKS_PER_PIPELINE,
                record_filter: Optional[shard_writer.RecordFilter] = None) -> CacheReport:
    """Cache tasks/mixtures `names` in seqio's format under `output_cache_dir` (module doc).

    `pipeline_options`: Beam flags (default `beam_runners.default_pipeline_options()`);
    `min_shards`: output files per split (seqio's --min_shards; at least one per local
    worker, as seqio's max(input shards, min_shards)); `modules`: imported first
    (they register more tasks). `num_input_shards` is accepted for old scripts and unused: the
    work units are the output shards. `record_filter` is for tests only (a writer that loses
    records, see `shard_writer.write_shard`). Returns the per-task figures.
    """
    del num_input_shards
    start = time.perf_counter()
    for module in modules:
        importlib.import_module(module)
    if vocab_path is not None:
        registry.set_vocab_path(vocab_path)
    data_dir = sources.get_data_dir(data_dir)
    output_cache_dir = storage.absolute(output_cache_dir)
    choice = beam_runners.choose(pipeline_options)
    rows, pending = existing_outputs(caches.expand_tasks(caches.split_names(names)),
                                     output_cache_dir, progress)
    jobs = plan_jobs(pending, caches.split_names(splits), data_dir, output_cache_dir,
                     max(1, min_shards, choice.workers or 1), rows)
    tokenizer = _tokenizer()
    groups = _groups(jobs, tasks_per_pipeline)
    if groups:
        progress(f"runner: {choice.describe()}")
    failures = []
    for number, group in enumerate(groups, 1):
        progress(f"pipeline {number}/{len(groups)}: {len(group)} task(s), "
                 f"{sum(len(j) for j in group.values())} split(s), "
                 f"{sum(job.examples for js in group.values() for job in js):,} source examples")
        written, failed = _write_group(group, output_cache_dir, choice, tokenizer,
                                       record_filter, progress)
        rows += written
        failures += failed
    if failures:
        raise cache_counts.CacheCountError(" | ".join(failures))
    return CacheReport(output_cache_dir, rows, time.perf_counter() - start,
                       list(choice.options), choice.describe())


def _tokenizer() -> shard_writer.Tokenizer:
    vocab = registry.task_vocabulary().resolve()
    return shard_writer.Tokenizer(vocab.sp_model, vocab.eos_id, vocab.pad_id)


def plan_jobs(names: Sequence[str], splits: Sequence[str], data_dir, output_cache_dir: str,
              num_shards: int, rows: list) -> dict:
    """{task: [SplitJob]} for every available split; the source examples are counted here."""
    jobs = {}
    for name in names:
        _check_ours(name)
        info = registry.task_info(name)
        template = templates.get_template(info.dataset, info.subset, info.template_name)
        folder = _staging_folder(output_cache_dir, name)
        task_jobs = []
        for split in _available_splits(name, splits, data_dir, rows):
            reader = sources.open_split(info.dataset, info.subset, info.source_split(split),
                                        data_dir)
            task_jobs.append(shard_writer.SplitJob(
                task=name, split=split, source=reader.spec, template=template,
                score_eval=name == info.score_eval, with_choices=info.score_eval is not None,
                examples=len(reader), num_shards=num_shards, folder=folder,
                counts_path=storage.join(_work_folder(output_cache_dir, name),
                                         f"counts.{split}.json"),
                seqio_version=seqio.__version__))
        if task_jobs:
            jobs[name] = task_jobs
    return jobs


def _check_ours(name: str) -> None:
    task = seqio.get_mixture_or_task(name)
    if not isinstance(task.source, registry.PromptedSource):
        raise caches.CacheError(f"task '{name}' is not a prompted task of t0_jax.data.registry "
                                f"(its source is {type(task.source).__name__}); t0-cache writes "
                                "those only. Cache other seqio tasks with seqio's "
                                "cache_tasks_main.")


def _work_folder(output_cache_dir: str, name: str) -> str:
    return storage.join(output_cache_dir, WORK_DIR, name)


def _staging_folder(output_cache_dir: str, name: str) -> str:
    """Local: a hidden folder renamed into place; remote: the final folder (no rename there)."""
    if storage.is_remote(output_cache_dir):
        return caches.task_folder(output_cache_dir, name)
    return storage.join(_work_folder(output_cache_dir, name), "data")


def _groups(jobs: dict, size: int) -> list:
    names = list(jobs)
    size = max(1, size)
    return [{n: jobs[n] for n in names[i:i + size]} for i in range(0, len(names), size)]


def _available_splits(name: str, splits: Sequence[str], data_dir, rows: list) -> list:
    """The splits to cache: asked-for splits must exist; default splits that the data lacks are
    skipped (a table row says why)."""
    task_splits = list(seqio.get_mixture_or_task(name).splits)
    wanted = list(splits) if splits else task_splits
    out = []
    for split in wanted:
        if split not in task_splits:
            raise caches.CacheError(f"task '{name}' has no split '{split}' (its splits: "
                                    f"{', '.join(task_splits)}); pass --splits with those.")
        info = registry.task_info(name)
        try:
            sources.open_split(info.dataset, info.subset, info.source_split(split), data_dir)
        except sources.DataNotFoundError as error:
            if splits:
                raise caches.CacheError(f"task '{name}' split '{split}': {error}") from error
            rows.append(CachedSplit(name, split, "skipped", note="no data for this split"))
            continue
        out.append(split)
    return out


# ----------------------------------------------------------------------------- one pipeline


def _write_group(group: dict, output_cache_dir: str, choice, tokenizer, record_filter,
                 progress) -> tuple:
    """Run one pipeline over `group` ({task: [SplitJob]}), check and install each task.
    Returns (table rows, failure messages of tasks that were not installed)."""
    for name in group:  # a rerun starts clean: partial outputs of a killed run go
        storage.rmtree(_work_folder(output_cache_dir, name))
        if storage.is_remote(output_cache_dir):
            storage.rmtree(caches.task_folder(output_cache_dir, name))
    try:
        pipeline = beam_runners.make_pipeline(choice)
        add_shard_steps(pipeline, [job for jobs in group.values() for job in jobs], tokenizer,
                        record_filter)
        pipeline.run().wait_until_finish()
    except Exception as error:  # noqa: BLE001  Beam wraps worker errors in many types
        for name in group:
            _discard(output_cache_dir, name)
        raise caches.CacheBuildError(_failure_message(error, group, output_cache_dir)) from error
    rows, failures = [], []
    for name, jobs in group.items():
        try:
            counts = [check_split(job) for job in jobs]
        except cache_counts.CacheCountError as error:
            _discard(output_cache_dir, name)
            failures.append(str(error))
            progress(f"NOT installed {name}: {error}")
            continue
        final = install(output_cache_dir, name)
        for job, count in zip(jobs, counts):
            rows.append(CachedSplit(name, job.split, "written", **caches.stats_figures(
                final, job.split), dropped=count.dropped, source=count.source))
            progress(f"cached {name} {job.split}: {count.records} examples -> {final}")
    return rows, failures


def add_shard_steps(pipeline, jobs: Sequence[shard_writer.SplitJob], tokenizer,
                    record_filter=None) -> None:
    """(job, shard) units -> shard files -> per-split info/stats/counts files.

    Units are ordered largest split first and dealt round-robin by the runner, so workers get
    similar loads; Create's reshuffle spreads them over the workers."""
    import apache_beam as beam

    units = [(job, shard) for job in sorted(jobs, key=lambda j: -j.examples)
             for shard in range(job.num_shards)]
    for job in jobs:
        storage.makedirs(job.folder)
    _ = (pipeline
         | "shard_units" >> beam.Create(units)
         | "write_shards" >> beam.ParDo(shard_writer.WriteShards(tokenizer, record_filter))
         | "by_split" >> beam.GroupByKey()
         | "write_split_files" >> beam.ParDo(shard_writer.WriteSplitFiles()))


def check_split(job: shard_writer.SplitJob) -> cache_counts.SplitCount:
    """The count check of one written split (CacheCountError when it does not add up)."""
    counts = (json.loads(storage.read_text(job.counts_path))
              if storage.exists(job.counts_path) else {})
    records, files = cache_counts.count_shards(job.folder, job.split, job.num_shards)
    return cache_counts.check(cache_counts.SplitCount(
        task=job.task, split=job.split, source=job.examples,
        visited=counts.get("examples_visited"), dropped=counts.get("dropped"),
        kept=counts.get("kept"), rows=counts.get("rows"),
        stats_examples=cache_counts.stats_examples(job.folder, job.split), records=records,
        shard_files=files, num_shards=job.num_shards, one_row_per_example=not job.score_eval))


def install(output_cache_dir: str, name: str) -> str:
    """Move a checked task into place and write COMPLETED last; returns the final folder."""
    final = caches.task_folder(output_cache_dir, name)
    if not storage.is_remote(output_cache_dir):
        storage.rmtree(final)  # a partial folder of a killed run (never a COMPLETED one)
        os.rename(_staging_folder(output_cache_dir, name), final)
    # seqio's COMPLETED is an empty file; only its existence is read
    storage.write_bytes(storage.join(final, caches.COMPLETED), b"")
    _remove_work(output_cache_dir, name)
    return final


def _discard(output_cache_dir: str, name: str) -> None:
    """Remove what a failed or refused task wrote (it was never COMPLETED)."""
    if storage.is_remote(output_cache_dir):
        storage.rmtree(caches.task_folder(output_cache_dir, name))
    _remove_work(output_cache_dir, name)


def _remove_work(output_cache_dir: str, name: str) -> None:
    storage.rmtree(_work_folder(output_cache_dir, name))
    _remove_empty_work_dir(output_cache_dir)


def _remove_empty_work_dir(output_cache_dir: str) -> None:
    work = storage.join(output_cache_dir, WORK_DIR)
    if not storage.is_remote(work) and not storage.listdir(work):
        storage.rmtree(work)


def _failure_message(error: Exception, todo: dict, output_cache_dir: str) -> str:
    text = str(error)
    failed = [f"{name} ({split})" for name, task_splits in todo.items()
              for split in (j.split if isinstance(j, shard_writer.SplitJob) else j
                            for j in task_splits)
              if f"{name}_{split}_" in text or f"caching {name} ({split})" in text]
    where = ", ".join(failed) if failed else "one of " + ", ".join(todo)
    last = [line.strip() for line in text.strip().splitlines() if line.strip()]
    cause = next((line for line in reversed(last) if "ShardWriteError" in line),
                 last[-1] if last else type(error).__name__)
    return (f"the Beam pipeline failed while caching {where}: {cause[:500]}. Nothing under "
            f"{output_cache_dir} was marked complete; fix the cause (run the task uncached "
            "with `t0-tasks render` to see the example that fails) and rerun t0-cache.")


# ----------------------------------------------------------------------------- shared with p3


def existing_outputs(tasks: Sequence[str], output_cache_dir: str, progress) -> tuple:
    """(table rows of tasks already COMPLETED there, the tasks still to write). A task folder
    without COMPLETED is a partial output (a killed run): it is rewritten."""
    storage.makedirs(output_cache_dir)
    rows, pending = [], []
    for name in tasks:
        final = caches.task_folder(output_cache_dir, name)
        if caches.is_completed(final):
            rows += [CachedSplit(name, s, "cached", **caches.stats_figures(final, s))
                     for s in caches.cached_splits(final)]
            progress(f"skip {name}: already cached at {final}")
        else:
            if storage.exists(final):
                progress(f"{final} has no {caches.COMPLETED} (a killed run?): rewriting it")
            pending.append(name)
    return rows, pending


def run_and_install(build, todo: dict, output_cache_dir: str, options: Sequence[str],
                    progress) -> list:
    """Run the pipeline `build(pipeline, tmp_root)` makes (seqio's writers; `p3.import_p3`),
    writing under a temporary folder; check each split (records in the shards == stats
    examples), then move each task of `todo` ({task: splits}) into `output_cache_dir` with
    COMPLETED last. Returns rows."""
    if not todo:
        return []
    choice = beam_runners.choose(options)
    tmp_root = storage.join(output_cache_dir, WORK_DIR, f"p3-{uuid.uuid4().hex[:8]}")
    progress(f"caching {len(todo)} task(s), {sum(map(len, todo.values()))} split(s) on "
             f"{choice.describe()}")
    try:
        pipeline = beam_runners.make_pipeline(choice)
        build(pipeline, tmp_root)
        pipeline.run().wait_until_finish()
        for name, task_splits in todo.items():
            for split in task_splits:
                _check_written(caches.task_folder(tmp_root, name), name, split)
    except Exception as error:  # noqa: BLE001  Beam wraps worker errors in many types
        storage.rmtree(tmp_root)
        _remove_empty_work_dir(output_cache_dir)
        if isinstance(error, caches.CacheError | caches.CacheBuildError):
            raise
        raise caches.CacheBuildError(_failure_message(error, todo, output_cache_dir)) from error
    rows = []
    for name, task_splits in todo.items():
        final = caches.task_folder(output_cache_dir, name)
        _move_into_place(caches.task_folder(tmp_root, name), final)
        for split in task_splits:
            row = CachedSplit(name, split, "written", **caches.stats_figures(final, split))
            rows.append(row)
            progress(f"cached {name} {split}: {row.examples} examples -> {final}")
    storage.rmtree(tmp_root)
    _remove_empty_work_dir(output_cache_dir)
    return rows


def _check_written(folder: str, name: str, split: str) -> None:
    """The count check where the source is not counted outside the pipeline (P3 import):
    records in the shard files == stats examples."""
    info = json.loads(storage.read_text(storage.join(folder, f"info.{split}.json")))
    num_shards = int(info.get("num_shards", 0))
    records, files = cache_counts.count_shards(folder, split, num_shards)
    cache_counts.check(cache_counts.SplitCount(
        task=name, split=split, source=None, visited=None, dropped=None, kept=None, rows=None,
        stats_examples=cache_counts.stats_examples(folder, split), records=records,
        shard_files=files, num_shards=num_shards))


def add_write_steps(examples, label: str, out_dir: str, split: str, num_shards: int,
                    output_features) -> list:
    """Reshuffle, then seqio's TFRecord, info and stats writers for one split (P3 import);
    returns the PCollections COMPLETED waits for."""
    import apache_beam as beam
    from seqio import beam_utils

    examples = examples | f"{label}_global_example_shuffle" >> beam.Reshuffle()
    return [
        examples | f"{label}_write_tfrecord" >> beam_utils.WriteExampleTfRecord(
            seqio.get_cached_tfrecord_prefix(out_dir, split), num_shards=num_shards),
        examples | f"{label}_info" >> beam_utils.GetInfo(num_shards)
        | f"{label}_write_info" >> beam_utils.WriteJson(seqio.get_cached_info_path(out_dir, split)),
        examples | f"{label}_stats" >> beam_utils.GetStats(output_features)
        | f"{label}_write_stats" >> beam_utils.WriteJson(
            seqio.get_cached_stats_path(out_dir, split)),
    ]


def add_completed_step(completion: list, name: str, out_dir: str) -> None:
    """COMPLETED once every split of the task is written (as seqio does); in the temporary
    folder, moved last by `_move_into_place`."""
    import apache_beam as beam

    _ = (completion | f"{name}_flatten_completion" >> beam.Flatten()
         | f"{name}_discard" >> beam.Filter(lambda _: False)
         | f"{name}_write_completed" >> beam.io.textio.WriteToText(
             os.path.join(out_dir, caches.COMPLETED), append_trailing_newlines=False,
             num_shards=1, shard_name_template=""))


def _move_into_place(tmp_dir: str, final: str) -> None:
    """Move a finished task folder into the cache, COMPLETED last; a partial folder of a killed
    run is replaced."""
    storage.rmtree(final)
    if not storage.is_remote(final):
        os.rename(tmp_dir, final)
        return
    names = sorted(storage.listdir(tmp_dir), key=lambda n: n == caches.COMPLETED)
    for name in names:
        storage.copy(storage.join(tmp_dir, name), storage.join(final, name))
