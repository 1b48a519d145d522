"""`t0-cache`: cache tasks or mixtures in seqio's format with Apache Beam (what P3 is).

    t0-cache --tasks A,B | --mixture M --output_cache_dir DIR [--data_dir DIR]
             [--vocab_path P] [--splits train,validation] [--min_shards N]
             [--pipeline_options=--direct_running_mode=multi_processing,--direct_num_workers=2]
    t0-cache --import_p3 P3/data --output_cache_dir DIR [--tasks A,B] [--splits ...]
    t0-cache --verify --tasks A,B | --mixture M --cache_dirs DIR[,DIR] [--splits validation]

The output is seqio's cache format; DIR may be local or gs:// (any fsspec scheme). Each Beam
work unit renders, tokenizes and writes one whole shard (`t0_jax.data.shard_writer`); tasks
already COMPLETED in DIR are skipped; tasks are written in pipelines of at most
--tasks_per_pipeline tasks. Before a task is marked COMPLETED (last, after every other file),
every split is COUNT-CHECKED: source examples (counted outside Beam) - dropped renderings =
records in the shards = stats examples; a split that disagrees is not installed and t0-cache
fails naming the numbers. It ends with the runner and a table: examples, input/target tokens,
dropped renderings and source examples per task and split. Train from it with
`t0-train ... --gin.USE_CACHED_TASKS=True --seqio_additional_cache_dirs=DIR`.

Runner (`t0_jax.data.beam_runners`): by default Beam's FnApiRunner, chosen explicitly (no Prism
download, no silent fall back to the BundleBasedDirectRunner), `multi_processing` with one
worker process per core; `--runner=DirectRunner` means the same FnApiRunner with the
`--direct_running_mode`/`--direct_num_workers` given. Other runners (install Beam's extra for
them) get the options as they are:

    Dataflow  --pipeline_options=--runner=DataflowRunner,--project=P,--region=us-central1,\
--temp_location=gs://B/tmp,--setup_file=./setup.py,--max_num_workers=64
              (--output_cache_dir gs://B/p3_cache; workers install t0-jax from --setup_file)
    Flink     --pipeline_options=--runner=FlinkRunner,--flink_master=host:8081,\
--environment_type=LOOPBACK,--parallelism=32
    Spark     --pipeline_options=--runner=SparkRunner,--spark_master_url=spark://host:7077,\
--environment_type=LOOPBACK

`--import_p3`: converts a bigscience/P3 download in the parquet layout into the cache layout
(a P3 download in the TFRecord layout needs no conversion: pass its data/ folder as a cache
dir); its splits are checked records == stats examples. `--verify`: reads every record of the
cached tasks (a CRC check of every shard).
Exit codes: 0 done, 2 a user error (one line, no traceback; `--verbose` shows it).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from t0_jax.bin import cli


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t0-cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", help="task names, comma-separated (`t0-tasks list`)")
    parser.add_argument("--mixture", help="a mixture: all of its tasks")
    parser.add_argument("--output_cache_dir", help="where the task folders go")
    parser.add_argument("--data_dir", help="local mirror root (default: $T0_DATA_DIR)")
    parser.add_argument("--vocab_path", help="SentencePiece model (default: $T0_VOCAB_PATH or T5's)")
    parser.add_argument("--splits", help="comma-separated (default: every split the data has)")
    parser.add_argument("--pipeline_options", help="Beam options, comma-separated")
    parser.add_argument("--min_shards", type=int, default=None,
                        help="TFRecord files per split (default 64, as seqio; P3 import: 1)")
    parser.add_argument("--num_input_shards", type=int, default=None,
                        help="unused (kept for old scripts): the work units are the shards")
    parser.add_argument("--tasks_per_pipeline", type=int, default=None,
                        help="tasks per Beam pipeline (default 64): bounds memory and the "
                             "work a failure loses")
    parser.add_argument("--module_import", action="append", default=[],
                        help="a module that registers more tasks (repeatable)")
    parser.add_argument("--import_p3", metavar="SRC_DIR", help="convert a P3 parquet download")
    parser.add_argument("--verify", action="store_true", help="CRC-check cached tasks")
    parser.add_argument("--cache_dirs", help="with --verify: the cache dirs, comma-separated")
    return parser


def _names(args) -> list:
    if bool(args.tasks) == bool(args.mixture) and not args.import_p3:
        raise cli.UserError("give exactly one of --tasks NAME[,NAME...] or --mixture NAME.")
    return [args.mixture] if args.mixture else args.tasks.split(",") if args.tasks else []


def _build(args, progress):
    from t0_jax.data import cache_build, caches, p3

    options = caches.split_names(args.pipeline_options) or None
    splits = caches.split_names(args.splits) or None
    if args.import_p3:
        if args.vocab_path:
            from t0_jax.data import registry

            registry.set_vocab_path(args.vocab_path)
        return p3.import_p3(args.import_p3, args.output_cache_dir, tasks=_names(args) or None,
                            splits=splits, pipeline_options=options,
                            min_shards=args.min_shards or 1, progress=progress)
    return cache_build.cache_tasks(
        _names(args), args.output_cache_dir, splits=splits, data_dir=args.data_dir,
        vocab_path=args.vocab_path, pipeline_options=options,
        min_shards=cache_build.DEFAULT_MIN_SHARDS if args.min_shards is None else args.min_shards,
        num_input_shards=args.num_input_shards, modules=args.module_import, progress=progress,
        tasks_per_pipeline=args.tasks_per_pipeline or cache_build.DEFAULT_TASKS_PER_PIPELINE)


def _verify(args, progress) -> None:
    from t0_jax.data import caches, registry

    if not args.cache_dirs:
        raise cli.UserError("--verify needs --cache_dirs DIR[,DIR].")
    if args.vocab_path:
        registry.set_vocab_path(args.vocab_path)
    caches.use_cache_dirs(args.cache_dirs)
    for split in caches.split_names(args.splits) or ["train"]:
        for name, count in caches.verify_shards(_names(args), split).items():
            progress(f"ok {name} {split}: {count} examples")


def table(report) -> list:
    """The per-task lines t0-cache ends with."""
    header = (f"{'task':48s} {'split':10s} {'status':8s} {'examples':>9s} {'inputs tok':>11s} "
              f"{'targets tok':>11s} {'dropped':>7s} {'source':>9s}")
    lines = ([f"runner: {report.runner}"] if getattr(report, "runner", "") else []) + [
        header, "-" * len(header)]

    def number(value):
        return "-" if value is None else f"{value:,}"

    for row in report.rows:
        lines.append(f"{row.task:48s} {row.split:10s} {row.status:8s} {number(row.examples):>9s} "
                     f"{number(row.inputs_tokens):>11s} {number(row.targets_tokens):>11s} "
                     f"{number(row.dropped):>7s} {number(getattr(row, 'source', None)):>9s}"
                     + (f"  {row.note}" if row.note else ""))
    written = sum(r.examples or 0 for r in report.rows if r.status == "written")
    lines.append(f"{written:,} examples written in {report.seconds:.1f} s "
                 f"({written / max(report.seconds, 1e-9):,.0f} examples/s) to "
                 f"{report.output_cache_dir}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code (tests call it in-process with `argv`)."""
    return cli.run("t0-cache", _main, argv)


def _main(argv: list) -> int:
    args = _parser().parse_args(argv)

    def progress(line: str) -> None:
        print(f"t0-cache: {line}", flush=True)

    from t0_jax.data import caches

    try:
        if args.verify:
            _verify(args, progress)
            return 0
        if not args.output_cache_dir:
            raise cli.UserError("give --output_cache_dir DIR (where the task folders go).")
        report = _build(args, progress)
    except (caches.CacheError, caches.CacheBuildError) as error:
        raise cli.UserError(str(error)) from error
    print("\n".join(table(report)))
    if report.rows and all(row.status == "skipped" for row in report.rows):
        raise cli.UserError("nothing was cached: no split of these tasks has data (see the "
                            "table); pass --data_dir with the mirror, or --splits that exist.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
