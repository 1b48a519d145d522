"""seqio caches: Beam write throughput by runner mode and workers, then reading from the cache.

    python -m bench.input_cache --out bench_out            # full: every template, 4 datasets
    python -m bench.input_cache --out bench_out --quick    # glue/mrpc validation templates only

Write: `t0_jax.data.cache_build.cache_tasks` (`t0-cache`: Beam work units that render,
tokenize and write whole shards, `shard_writer`) over every base template of the datasets below
with the bench SentencePiece model, into a fresh folder per run, on Beam's FnApiRunner:
`multi_threading` with 1 and 2 worker threads, `in_memory` (1 worker) and `multi_processing`
with 2 worker processes (the default on 2 cores). examples/s = examples written / wall time of
the whole run (pipeline start-up and worker imports included, as a user waits).

Read: the cache written last, as one mixture (rate 1 per task) through
`pipeline.train_batches(use_cached=True)` at 1024/256, batch 32, packed: packed rows/s and
examples/s after the first batch; and the same mixture rendered on the fly (`use_cached=False`)
with ONE render worker, for the ratio (issue 10's goal: the cached path >= 10x that). Also the
mixture's tokenized examples/s before the feature converter (packing costs the same for both).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Sequence

from bench import prompts, records

DATASETS = (("glue", "mrpc", "validation"), ("piqa", None, "validation"),
            ("social_i_qa", None, "validation"), ("ag_news", None, "test"))
QUICK_DATASETS = DATASETS[:1]
LENGTHS = {"inputs": 1024, "targets": 256}
BATCH = 32
MIXTURE = "bench_cache_mix"
RUNS = (("multi_threading", 1), ("multi_threading", 2), ("in_memory", 1), ("multi_processing", 2))
GOAL_CACHED_OVER_ON_THE_FLY = 10.0


def _tasks(datasets) -> dict:
    """{split: [base task names]} of every template of `datasets`."""
    from t0_jax.data import registry  # noqa: PLC0415 - imports TensorFlow

    out: dict = {}
    for name, subset, split in datasets:
        out.setdefault(split, []).extend(info.name for info in registry.dataset_tasks(name,
                                                                                     subset))
    return out


def write_throughput(tasks_by_split: dict, mode: str, workers: int, out_dir: str) -> dict:
    from t0_jax.data import cache_build  # noqa: PLC0415

    options = ["--runner=DirectRunner", f"--direct_num_workers={workers}",
               f"--direct_running_mode={mode}"]
    start = time.perf_counter()
    examples = 0
    for split, tasks in tasks_by_split.items():
        report = cache_build.cache_tasks(tasks, out_dir, splits=[split], data_dir=str(
            prompts.DATA_DIR), pipeline_options=options, min_shards=2 * workers,
            progress=lambda line: None)
        examples += report.written_examples
    seconds = time.perf_counter() - start
    return {"mode": mode, "workers": workers, "examples": examples, "seconds": seconds,
            "examples_per_s": examples / seconds}


def read_throughput(tasks_by_split: dict, use_cached: bool, batches: int) -> dict:
    import numpy as np  # noqa: PLC0415
    import seqio  # noqa: PLC0415

    from t0_jax.data import pipeline  # noqa: PLC0415

    (split, tasks), = tasks_by_split.items()
    name = f"{MIXTURE}_{split}"
    if name not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(name, [(task, 1.0) for task in tasks])
    it = pipeline.train_batches(name, split, LENGTHS, BATCH, pack=True, seed=0,
                                use_cached=use_cached)
    first = next(iter(it))
    start, rows, examples = time.perf_counter(), 0, 0
    for _, batch in zip(range(batches), it):
        seg = np.asarray(batch["encoder_segment_ids"])  # [b, Li], 1..k per row, 0 = pad
        rows += seg.shape[0]
        examples += int(sum(len(np.unique(r[r > 0])) for r in seg))
    seconds = time.perf_counter() - start
    del first
    return {"use_cached": use_cached, "batches": batches, "rows_per_s": rows / seconds,
            "examples_per_s": examples / seconds}


def raw_read_throughput(tasks_by_split: dict, use_cached: bool, limit: int) -> dict:
    """Examples/s of the mixture itself (tokenized, before packing)."""
    import seqio  # noqa: PLC0415

    (split, _), = tasks_by_split.items()
    ds = seqio.get_mixture_or_task(f"{MIXTURE}_{split}").get_dataset(
        sequence_length=LENGTHS, split=split, shuffle=True, seed=0, num_epochs=None,
        use_cached=use_cached)
    it = ds.take(limit + 100).as_numpy_iterator()
    for _ in zip(range(100), it):  # warm-up: pipeline start, file opens, first shuffle fill
        pass
    start = time.perf_counter()
    count = sum(1 for _ in it)
    return {"examples": count, "examples_per_s": count / (time.perf_counter() - start)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(records.OUT_DIR))
    parser.add_argument("--quick", action="store_true", help="glue/mrpc only, few batches")
    args = parser.parse_args(argv)
    datasets = QUICK_DATASETS if args.quick else DATASETS
    vocab_path, _ = prompts.build_vocab()
    from t0_jax.data import caches, registry, sources  # noqa: PLC0415

    registry.set_vocab_path(vocab_path)
    sources.set_data_dir(str(prompts.DATA_DIR))
    tasks = _tasks(datasets)
    root = tempfile.mkdtemp(prefix="bench_input_cache_")
    try:
        writes = []
        for mode, workers in RUNS:
            records.log(f"Beam cache: {mode}, {workers} worker(s)")
            out_dir = os.path.join(root, f"{mode}_{workers}")
            writes.append(write_throughput(tasks, mode, workers, out_dir))
        caches.use_cache_dirs([out_dir])
        batches = 10 if args.quick else 60
        first_split = dict([next(iter(tasks.items()))])
        records.log("reading packed batches from the cache, then on the fly")
        from t0_jax.data import render_pool  # noqa: PLC0415

        render_pool.set_render_workers(1)  # the goal compares with ONE on-the-fly worker
        cached = read_throughput(first_split, True, batches)
        on_the_fly = read_throughput(first_split, False, max(batches // 3, 3))
        cached["raw"] = raw_read_throughput(first_split, True, 2000 if args.quick else 20000)
        on_the_fly["raw"] = raw_read_throughput(first_split, False, 1000 if args.quick else 5000)
        render_pool.set_render_workers(None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio = cached["examples_per_s"] / on_the_fly["examples_per_s"]
    result = {"datasets": ["/".join(p for p in d[:2] if p) + f":{d[2]}" for d in datasets],
              "tasks": sum(map(len, tasks.values())), "lengths": LENGTHS, "batch": BATCH,
              "write": writes, "read": {"cached": cached, "on_the_fly": on_the_fly,
                                        "read_split": next(iter(first_split))},
              "cached_over_on_the_fly": ratio}
    for run in writes:
        print(f"Beam {run['mode']} x{run['workers']}: {run['examples']:,} examples in "
              f"{run['seconds']:.1f} s = {run['examples_per_s']:,.0f} examples/s")
    print(f"read from cache: {cached['rows_per_s']:,.1f} packed rows/s "
          f"({cached['examples_per_s']:,.0f} examples/s); on the fly (1 render worker) "
          f"{on_the_fly['examples_per_s']:,.0f} examples/s -> {ratio:.1f}x; before packing: "
          f"cache {cached['raw']['examples_per_s']:,.0f} vs on the fly "
          f"{on_the_fly['raw']['examples_per_s']:,.0f} examples/s")
    print(f"wrote {records.write_json('input_cache', result, args.out)}")
    return 0


def section(record: dict) -> list[str]:
    """Markdown for docs/benchmarks.md: Beam write throughput, then reading from the cache."""
    lines = ["## seqio caches: Beam write and cached read", "",
             f"`t0-cache` (whole-shard Beam work units, seqio's format) over {record['tasks']} tasks (every template "
             f"of {', '.join(f'`{d}`' for d in record['datasets'])}) on Beam's FnApiRunner; "
             "examples/s over the whole run, start-up included.", "",
             "| running mode | workers | examples | seconds | examples/s | × vs first row |",
             "|---|---|---|---|---|---|"]
    base = record["write"][0]["examples_per_s"]
    for run in record["write"]:
        lines.append(f"| {run['mode']} | {run['workers']} | {run['examples']:,} | "
                     f"{run['seconds']:.1f} | {run['examples_per_s']:,.0f} | "
                     f"{run['examples_per_s'] / base:.2f} |")
    read = record["read"]
    verdict = ("**pass**" if record["cached_over_on_the_fly"] >= GOAL_CACHED_OVER_ON_THE_FLY
               else "**FAIL**")
    lines += ["", f"Reading `{read['read_split']}` as one mixture, packed at "
              f"{record['lengths']['inputs']}/{record['lengths']['targets']}, batch "
              f"{record['batch']}; *tokenized* = the mixture's examples before the feature "
              "converter:", "",
              "| source | packed rows/s | packed examples/s | tokenized examples/s |",
              "|---|---|---|---|",
              f"| cache (`use_cached=True`) | {read['cached']['rows_per_s']:,.1f} | "
              f"{read['cached']['examples_per_s']:,.0f} | "
              f"{read['cached']['raw']['examples_per_s']:,.0f} |",
              f"| on the fly, 1 render worker | {read['on_the_fly']['rows_per_s']:,.1f} | "
              f"{read['on_the_fly']['examples_per_s']:,.0f} | "
              f"{read['on_the_fly']['raw']['examples_per_s']:,.0f} |", "",
              f"Cached / on the fly: {record['cached_over_on_the_fly']:.1f}× (goal ≥ "
              f"{GOAL_CACHED_OVER_ON_THE_FLY:.0f}× over one on-the-fly worker: {verdict})."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
