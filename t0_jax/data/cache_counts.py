"""The count check `t0-cache` makes before it marks a task's cache COMPLETED.

A cache that silently misses rows is training data lost without a word (t0-cache once wrote 2
of 87,740 examples too few, once 7 of 7,600). So every written split is checked with numbers
that come from three independent places:

    source      examples in the split, counted by the launcher OUTSIDE the pipeline;
    writers     what the shard writers report as data (examples visited, dropped renderings,
                kept examples, rows produced) and the `examples` of stats.<split>.json;
    files       records in the written shards, counted after the pipeline (every CRC read).

and installed only when   visited == source,   source - dropped == kept,
rows == stats examples == records   (base tasks: rows == kept; `_score_eval` twins have one row
per answer choice), and every shard file exists. Otherwise CacheCountError names the numbers.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Optional

from t0_jax import storage
from t0_jax.data import caches, example_records


class CacheCountError(caches.CacheBuildError):
    """A written split does not add up; it was not installed (no COMPLETED)."""


@dataclasses.dataclass(frozen=True)
class SplitCount:
    task: str
    split: str
    source: Optional[int]  # None: the source cannot be counted outside the pipeline (P3 import)
    visited: Optional[int]
    dropped: Optional[int]
    kept: Optional[int]
    rows: Optional[int]
    stats_examples: Optional[int]
    records: int
    shard_files: int
    num_shards: int
    one_row_per_example: bool = True

    def problems(self) -> list:
        """What does not add up, in words (empty: the split is whole)."""
        out = []
        if self.shard_files != self.num_shards:
            out.append(f"{self.shard_files} of {self.num_shards} shard files exist")
        if self.source is not None and self.visited != self.source:
            out.append(f"the writers visited {self.visited} of the source's {self.source} "
                       "examples")
        if self.source is not None and self.dropped is not None and \
                self.source - self.dropped != self.kept:
            out.append(f"source {self.source} - dropped {self.dropped} = "
                       f"{self.source - self.dropped}, but the writers kept {self.kept}")
        if self.one_row_per_example and self.kept is not None and self.rows != self.kept:
            out.append(f"{self.rows} rows for {self.kept} kept examples")
        written = {"rows produced": self.rows, "stats examples": self.stats_examples,
                   "records in the shards": self.records}
        if len({v for v in written.values() if v is not None}) > 1:
            out.append(", ".join(f"{k} {v}" for k, v in written.items() if v is not None)
                       + " disagree")
        return out

    def describe(self) -> str:
        return (f"source {self.source}, dropped {self.dropped}, kept {self.kept}, rows "
                f"{self.rows}, stats examples {self.stats_examples}, records "
                f"{self.records} in {self.shard_files}/{self.num_shards} shards")


def count_shards(folder: str, split: str, num_shards: int) -> tuple:
    """(records in the split's shard files, shard files found)."""
    paths = [storage.join(folder, f"{split}.tfrecord-{i:05d}-of-{num_shards:05d}")
             for i in range(num_shards)]
    found = [p for p in paths if storage.exists(p)]
    return sum(example_records.count_records(p) for p in found), len(found)


def stats_examples(folder: str, split: str) -> Optional[int]:
    path = storage.join(folder, f"stats.{split}.json")
    if not storage.exists(path):
        return None
    return json.loads(storage.read_text(path)).get("examples")


def check(count: SplitCount) -> SplitCount:
    """`count`, or CacheCountError naming every number when the split does not add up."""
    problems = count.problems()
    if problems:
        raise CacheCountError(
            f"refusing to install the cache of '{count.task}' split '{count.split}': "
            f"{'; '.join(problems)} ({count.describe()}). Nothing of this task was marked "
            f"{caches.COMPLETED}; rerun t0-cache (it rewrites the task), and report the numbers "
            "if it happens again.")
    return count
