"""`t0-cache`'s engine: seqio caches of our tasks written by ONE Apache Beam pipeline.

The pipeline is seqio's own (`seqio/scripts/cache_tasks_main.py`, `seqio.beam_utils`):
PreprocessTask → Reshuffle → WriteExampleTfRecord, GetInfo/GetStats → WriteJson, then COMPLETED
once every split of the task is written. So the folders are exactly seqio's (and P3's) format;
`caches` reads them. What we add around it:

- tasks and mixtures by our names; tasks whose folder is already COMPLETED are skipped;
- every task is written under `<dir>/.t0-cache-tmp-*/` and renamed into place only after the
  whole pipeline succeeded: a failed run never touches an existing cache;
- our source shards arbitrarily, so each split is cut into `num_input_shards` slices that Beam
  workers render in parallel (seqio would see one shard and use one worker);
- the DirectRunner default uses the host's cores (`default_pipeline_options`: one worker
  process per core above 2 cores); every worker gets the data dir and vocabulary in effect here;
- a `dropped` counter per split (renderings that are not exactly (inputs, targets)).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import uuid
from typing import Callable, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from t0_jax.data import caches, registry, sources

log = logging.getLogger(__name__)
DEFAULT_MIN_SHARDS = 64  # seqio's default: enough files for per-host sharding and shuffling



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


@dataclasses.dataclass
class CacheReport:
    output_cache_dir: str
    rows: list
    seconds: float
    pipeline_options: list

    @property
    def written_examples(self) -> int:
        return sum(r.examples or 0 for r in self.rows if r.status == "written")


def default_pipeline_options(num_workers: Optional[int] = None) -> list:
    """Beam's DirectRunner using the host's cores: one worker thread per core up to 4 cores,
    one worker PROCESS per core above that.

    Measured on the shared 2-core machine (2 ag_news templates, 15,200 examples, start-up
    included): multi_threading x2 390 examples/s, in_memory (1 worker, rendering in the render
    pool) 225, multi_processing x2 100 (each worker process imports TensorFlow and seqio, and
    every element crosses the gRPC data plane); the threads render in-process (`cache_tasks`). Threads share one GIL, so many-core hosts get
    processes (not measured here); cluster runs belong on Dataflow/Flink/Spark anyway.
    """
    cores = num_workers or os.cpu_count() or 1
    mode = "multi_threading" if cores <= 4 else "multi_processing"
    return ["--runner=DirectRunner", f"--direct_num_workers={cores}",
            f"--direct_running_mode={mode}"]


def _in_process_threads(options: Sequence[str]) -> bool:
    return any(o == "--direct_running_mode=multi_threading" for o in options)


class _WorkerSetup:
    """Runs in every Beam worker before a task is loaded: the same data dir and vocabulary
    as the launching process, and the user's modules that register extra tasks. A worker
    process renders in-process: Beam's workers are the parallelism (a render pool in each of
    them would oversubscribe the cores)."""

    def __init__(self, data_dir, vocab_path, modules: Sequence[str] = ()):
        self.data_dir, self.vocab_path, self.modules = data_dir, vocab_path, tuple(modules)
        self.launcher_pid = os.getpid()

    def __call__(self):
        import importlib

        from t0_jax.data import registry as task_registry, sources as task_sources

        if self.data_dir:
            task_sources.set_data_dir(self.data_dir)
        task_registry.set_vocab_path(self.vocab_path)
        if os.getpid() != self.launcher_pid:
            from t0_jax.data import render_pool

            render_pool.set_render_workers(1)
        for module in self.modules:
            importlib.import_module(module)


def _preprocess_transform():
    """seqio's PreprocessTask, with our source split into `num_input_shards` slices (it shards
    arbitrarily, so Beam workers render in parallel) and a `dropped` counter per split."""
    from apache_beam import metrics
    from seqio import beam_utils

    class PreprocessPrompted(beam_utils.PreprocessTask):
        def __init__(self, task, split, num_input_shards: int, **kwargs):
            super().__init__(task, split, **kwargs)
            if task.source.supports_arbitrary_sharding and num_input_shards > 1:
                n = num_input_shards
                self.shards = [(i, f"{split}[{i}::{n}]") for i in range(n)]

        def _emit_examples(self, shard):
            # numpy, not EagerTensors: Beam pickles every element at each Reshuffle, and
            # pickling tensors costs more than rendering (seqio's writers accept both)
            kept = set()  # example indices (a score-eval row's idx is [example, choice])
            for example in super()._emit_examples(shard):
                example = {key: value.numpy() for key, value in example.items()}
                if "idx" in example:
                    kept.add(int(np.ravel(example["idx"])[0]))
                yield example
            dropped = _slice_size(self._task_name, self._split, shard[0], len(self.shards))
            if dropped is not None:
                metrics.Metrics.counter(f"{self._task_name}_{self._split}", "dropped").inc(
                    dropped - len(kept))

    return PreprocessPrompted


def _slice_size(name: str, split: str, index: int, count: int) -> Optional[int]:
    """Examples of slice `index::count` of the task's split (None: not one of our tasks).

    Dropped renderings = this minus the example indices that came out: exact per slice, where
    the registry's per-(task, split) tally would be shared by concurrent slices."""
    try:
        info = registry.task_info(name)
    except KeyError:
        return None
    size = len(sources.open_split(info.dataset, info.subset, info.source_split(split)))
    return len(range(index, size, count))


def _available_splits(name: str, splits: Optional[Sequence[str]], data_dir, rows: list) -> list:
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


def cache_tasks(names: Sequence[str], output_cache_dir: str, *, splits=None, data_dir=None,
                vocab_path=None, pipeline_options: Optional[Sequence[str]] = None,
                min_shards: int = DEFAULT_MIN_SHARDS, num_input_shards: Optional[int] = None,
                modules: Sequence[str] = (),
                progress: Callable[[str], None] = log.info) -> CacheReport:
    """Cache tasks/mixtures `names` in seqio's format under `output_cache_dir` (see module doc).

    `pipeline_options`: Beam flags (default `default_pipeline_options()`); `min_shards`: output
    files per split (seqio's --min_shards); `num_input_shards`: slices of each split rendered in
    parallel (default: the worker count, else 1). Returns the per-task figures.
    """
    start = time.perf_counter()
    if vocab_path is not None:
        registry.set_vocab_path(vocab_path)
    data_dir = sources.get_data_dir(data_dir)
    options = list(pipeline_options) if pipeline_options else default_pipeline_options()
    num_input_shards = num_input_shards or max(1, _num_workers(options))
    rows, pending = existing_outputs(caches.expand_tasks(caches.split_names(names)),
                                     output_cache_dir, progress)
    todo = {}  # task -> splits
    for name in pending:
        task_splits = _available_splits(name, caches.split_names(splits), data_dir, rows)
        if task_splits:
            todo[name] = task_splits
    setup = _WorkerSetup(data_dir, registry.task_vocabulary().path, modules)
    transform = _preprocess_transform()

    def build(pipeline, tmp_root):
        for name, task_splits in todo.items():
            _add_task_steps(pipeline, transform, seqio.get_mixture_or_task(name), task_splits,
                            caches.task_folder(tmp_root, name), setup, min_shards,
                            num_input_shards)

    from t0_jax.data import render_pool

    previous = getattr(sources, "_data_dir", None)  # in-process runners run _WorkerSetup here
    previous_workers = getattr(render_pool, "_configured", None)
    if _in_process_threads(options):
        # Beam's threads are the parallelism. With the render pool under Beam's threads one
        # run here wrote 7 of 7,600 examples too few (not reproduced outside Beam); rendering
        # in each thread wrote them all
        render_pool.set_render_workers(1)
    try:
        rows += run_and_install(build, todo, output_cache_dir, options, progress)
    finally:
        sources.set_data_dir(previous)
        render_pool.set_render_workers(previous_workers)
    return CacheReport(output_cache_dir, rows, time.perf_counter() - start, options)


def existing_outputs(tasks: Sequence[str], output_cache_dir: str, progress) -> tuple:
    """(table rows of tasks already COMPLETED there, the tasks still to write). A task folder
    without COMPLETED is not ours to overwrite: an error says to delete it."""
    tf.io.gfile.makedirs(output_cache_dir)
    rows, pending = [], []
    for name in tasks:
        final = caches.task_folder(output_cache_dir, name)
        if caches.is_completed(final):
            rows += [CachedSplit(name, s, "cached", **caches.stats_figures(final, s))
                     for s in caches.cached_splits(final)]
            progress(f"skip {name}: already cached at {final}")
        elif tf.io.gfile.exists(final):
            raise caches.CacheError(f"{final} exists but has no {caches.COMPLETED} file (an "
                                    "interrupted seqio run?); t0-cache never overwrites it: "
                                    "delete that folder and rerun.")
        else:
            pending.append(name)
    return rows, pending


def run_and_install(build, todo: dict, output_cache_dir: str, options: Sequence[str],
                    progress) -> list:
    """Run the pipeline `build(pipeline, tmp_root)` makes, writing under a temporary folder,
    then rename each task of `todo` ({task: splits}) into `output_cache_dir`. Returns rows."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    if not todo:
        return []
    tmp_root = os.path.join(output_cache_dir, f"{caches.TMP_PREFIX}{uuid.uuid4().hex[:8]}")
    progress(f"caching {len(todo)} task(s), {sum(map(len, todo.values()))} split(s) with "
             f"{' '.join(options)}")
    try:
        pipeline = beam.Pipeline(options=PipelineOptions(list(options)))
        build(pipeline, tmp_root)
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as error:  # noqa: BLE001  Beam wraps worker errors in many types
        _remove(tmp_root)
        if isinstance(error, caches.CacheError):
            raise
        raise caches.CacheBuildError(_failure_message(error, todo, output_cache_dir)) from error
    dropped = _dropped_counters(result)
    rows = []
    for name, task_splits in todo.items():
        final = caches.task_folder(output_cache_dir, name)
        _move_into_place(caches.task_folder(tmp_root, name), final)
        for split in task_splits:
            row = CachedSplit(name, split, "written", **caches.stats_figures(final, split),
                              dropped=dropped.get(f"{name}_{split}"))
            rows.append(row)
            progress(f"cached {name} {split}: {row.examples} examples -> {final}")
    _remove(tmp_root)
    return rows


def _add_task_steps(pipeline, transform, task, task_splits, out_dir, setup, min_shards,
                    num_input_shards) -> None:
    """cache_tasks_main.run_pipeline's steps for one task (seqio's transforms, our labels)."""
    completion = []
    for split in task_splits:
        label = f"{task.name}_{split}"
        pat = transform(task, split, num_input_shards, setup_fn=setup)
        examples = pipeline | f"{label}_pat" >> pat
        completion += add_write_steps(examples, label, out_dir, split,
                                      max(len(pat.shards), min_shards), task.output_features)
    add_completed_step(completion, task.name, out_dir)


def add_write_steps(examples, label: str, out_dir: str, split: str, num_shards: int,
                    output_features) -> list:
    """Reshuffle (templates of one dataset must not share an order), then seqio's TFRecord,
    info and stats writers for one split; returns the PCollections COMPLETED waits for."""
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
    """COMPLETED is written once every split of the task is written (as seqio does)."""
    import apache_beam as beam

    _ = (completion | f"{name}_flatten_completion" >> beam.Flatten()
         | f"{name}_discard" >> beam.Filter(lambda _: False)
         | f"{name}_write_completed" >> beam.io.textio.WriteToText(
             os.path.join(out_dir, caches.COMPLETED), append_trailing_newlines=False,
             num_shards=1, shard_name_template=""))


def _num_workers(options: Sequence[str]) -> int:
    for option in options:
        if option.startswith("--direct_num_workers="):
            return int(option.split("=", 1)[1]) or (os.cpu_count() or 1)
    return 1


def _failure_message(error: Exception, todo: dict, output_cache_dir: str) -> str:
    text = str(error)
    failed = [f"{name} ({split})" for name, task_splits in todo.items() for split in task_splits
              if f"{name}_{split}_" in text]
    where = ", ".join(failed) if failed else "one of " + ", ".join(todo)
    last = [line.strip() for line in text.strip().splitlines() if line.strip()]
    cause = last[-1] if last else type(error).__name__
    return (f"the Beam pipeline failed while caching {where}: {cause[:500]}. Nothing under "
            f"{output_cache_dir} was changed; fix the cause (run the task uncached with "
            "`t0-tasks show` to see the example that fails) and rerun t0-cache.")


def _dropped_counters(result) -> dict:
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001  some runners do not report metrics
        return {}
    out: dict = {}
    for counter in counters:
        if counter.key.metric.name == "dropped":
            out[counter.key.metric.namespace] = (out.get(counter.key.metric.namespace, 0)
                                                 + int(counter.committed or counter.attempted))
    return out


def _move_into_place(tmp_dir: str, final: str) -> None:
    """Rename a finished task folder into the cache; COMPLETED arrives last on remote stores."""
    if "://" not in final:
        os.rename(tmp_dir, final)
        return
    tf.io.gfile.makedirs(final)
    names = sorted(tf.io.gfile.listdir(tmp_dir), key=lambda n: n == caches.COMPLETED)
    for name in names:
        tf.io.gfile.rename(os.path.join(tmp_dir, name), os.path.join(final, name))


def _remove(path: str) -> None:
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
    elif tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


