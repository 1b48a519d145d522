"""`t0-data`: build the JSONL mirror the templates read, from the Hugging Face Hub as it is now.

    t0-data --held_out --data_dir DIR [--story_cloze_dir CSV_DIR]       T0's held-out suite
    t0-data --mixture t0_eval_score_eval --data_dir DIR                 every dataset of a mixture
    t0-data --datasets super_glue/rte,anli --data_dir DIR               a list of datasets
      [--splits validation,train]  task splits (default: validation; `train` for *_train mixtures)
      [--force]                    fetch again even what is marked complete
      [--check]                    fetch nothing: count what the mirror holds against the catalogue
      [--no_progress]              no progress bars

Writes DATA_DIR/<hf_name>[/<subset>]/<split>.jsonl (DATA_DIR may be gs://...) with the 2021 field
names and types the templates expect, through tasks/hub_sources.yaml (current repository,
revision, files, renames per dataset, each row citing its source; `verified: false` rows were
not confirmed). ANLI's task split `validation` is its three files dev_r1, dev_r2, dev_r3.
Each finished split gets a marker `<split>.jsonl.complete` written last; a rerun skips marked
splits and redoes the rest, so an interrupted run resumes. Example counts of the held-out suite
are checked against tasks/datasets.csv (`split_sizes`).

StoryCloze 2016 is not on the Hub: request it at https://cs.rochester.edu/nlp/rocstories/ and
pass the folder holding its two CSV files with --story_cloze_dir. P3 (the prompted, tokenized
T0 training data) is a seqio cache, not a mirror: use `t0-cache --import_p3` for it.

Needs network (or a filled Hugging Face cache with HF_HUB_OFFLINE=1). Ends with a table, one row
per dataset and split. Exit codes: 0 everything landed and every count matched; 1 a dataset
could not be fetched or its count differs (named in the table with the reason; the others
landed); 2 bad arguments or an unknown dataset/mixture (one line).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from t0_jax.bin import cli


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t0-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--held_out", action="store_true", help="T0's held-out evaluation suite")
    which.add_argument("--mixture", help="every dataset of a mixture (`t0-tasks list`)")
    which.add_argument("--datasets", help="hf_name or hf_name/subset, comma-separated")
    parser.add_argument("--data_dir", help="mirror root (default: $T0_DATA_DIR); may be gs://")
    parser.add_argument("--splits", help="task splits, comma-separated (default: validation, "
                                         "or train for a *_train mixture)")
    parser.add_argument("--story_cloze_dir", help="folder with the StoryCloze 2016 CSV files")
    parser.add_argument("--force", action="store_true", help="refetch splits marked complete")
    parser.add_argument("--check", action="store_true", help="only count what the mirror holds")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def _plan(args) -> dict:
    from t0_jax.data import mirror_build  # noqa: PLC0415

    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    if args.held_out:
        return mirror_build.held_out_plan(splits)
    if args.datasets:
        names = [n.strip() for n in args.datasets.split(",") if n.strip()]
        return mirror_build.dataset_plan(names, splits or ["validation"])
    return mirror_build.dataset_plan(_mixture_datasets(args.mixture),
                                     splits or [_mixture_split(args.mixture)])


def _mixture_split(name: str) -> str:
    return "train" if name.endswith("_train") else "validation"


def _mixture_datasets(name: str) -> list:
    """The catalogue names (`hf_name[/subset]`) of a mixture's tasks, in first-seen order."""
    from t0_jax.data import catalogue, registry, score_rows  # noqa: PLC0415

    seen = {}
    for task in score_rows.resolve_task_names(name):
        info = registry.task_info(task)
        seen[catalogue.display_name(info.dataset, info.subset)] = None
    return list(seen)


def _main(argv: Optional[Sequence[str]]) -> int:
    args = _parser().parse_args(argv)
    from t0_jax.data import mirror_build, sources  # noqa: PLC0415

    data_dir = sources.get_data_dir(args.data_dir)
    if not data_dir:
        raise cli.UserError(f"no mirror root: pass --data_dir or set ${sources.DATA_DIR_ENV}")
    plan = _plan(args)
    if args.no_progress:
        import datasets  # noqa: PLC0415 - its own "Generating split" bars

        datasets.disable_progress_bars()
    if args.check:
        results = mirror_build.check(plan, data_dir)
    else:
        results = mirror_build.build(plan, data_dir, story_cloze_dir=args.story_cloze_dir,
                                     force=args.force, progress=not args.no_progress,
                                     report=_progress_line(args.no_progress))
    print(mirror_build.summary_table(results))
    failed = [r for r in results if not r.ok]
    if failed:
        names = sorted({r.dataset for r in failed})
        print(f"t0-data: {len(failed)} of {len(results)} splits did not land or differ in "
              f"size ({', '.join(names)}); the others are in {data_dir}", file=sys.stderr)
        return cli.EXIT_BUG
    print(f"t0-data: {len(results)} splits in {data_dir}")
    return cli.EXIT_OK


def _progress_line(quiet: bool):
    def report(result) -> None:
        if not quiet:
            print(f"  {result.status:8s} {result.dataset} {result.split}"
                  + (f": {result.reason}" if result.reason else ""), file=sys.stderr, flush=True)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run("t0-data", _main, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
