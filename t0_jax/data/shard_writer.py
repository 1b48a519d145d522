"""The Beam side of `t0-cache`: one DoFn call renders, tokenizes and writes one whole cache shard.

Why whole shards: seqio's own pipeline sends every example through Beam (a tf.data graph per
task, one pickled element per example, a global Reshuffle that the local runner holds in memory),
which made `t0-cache` run at ~1 % of the cost of rendering + tokenizing and grow by ~170 MiB per
task. Here the elements are work units, `(SplitJob, shard number)`; each call reads its examples
from the source, renders them with the task's template (`templates.render_example`, as the
registry's tasks do), tokenizes with SentencePiece in Python (the same model proto seqio's
vocabulary uses) and streams the records into `<split>.tfrecord-NNNNN-of-NNNNN`. Memory is one
chunk of examples; nothing here imports TensorFlow, so a worker process starts in seconds.

Glossary
    SplitJob     one (task, split): its source (`sources.SplitSpec`), template, row layout,
                 source example count (counted by the launcher, outside the pipeline), shard
                 count, the folder the shards go to, and where the counts go.
    shard k      the examples at positions k, k + n, k + 2n, ... of the task's permutation
                 (seeded by the task name: templates of one dataset do not share an order;
                 seqio gets the same effect from a global Reshuffle).
    rows         base task: one per kept example; `_score_eval` twin: one per answer choice,
                 as `registry.expand_answer_choices` makes them.
    ShardSummary what one call did: examples visited, dropped (rendering not exactly (inputs,
                 targets)), kept, rows produced, token sums/maxima (seqio's stats), one row's
                 feature layout (seqio's info). Returned as DATA, never as Beam counters
                 (counters from threads a DoFn starts are lost, apache/beam#21217).
Row layout (seqio's after tokenize -> append_eos, registry's module docstring):
    inputs int32 [n] (no EOS), inputs_pretokenized, targets int32 [n] ending in EOS,
    targets_pretokenized, idx int32 (twin: int32 [2] = [example, choice]), answer_choices
    (templates that have them), twin also is_correct bool, weight float32 (1.0).
Side effects happen in `process` only (never `teardown`): a retried call rewrites the same file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Callable, Iterator, Optional

import apache_beam as beam
import numpy as np

from t0_jax import storage
from t0_jax.data import example_records, sources, templates

CHUNK = 256  # examples rendered and tokenized together (one SentencePiece batch call)
_ASCII_SPACE = " \t\n\v\f\r"  # tf.strings.strip's whitespace: the twin's is_correct rule


@dataclasses.dataclass(frozen=True)
class SplitJob:
    task: str
    split: str
    source: sources.SplitSpec
    template: templates.Template
    score_eval: bool  # rows per answer choice
    with_choices: bool  # rows carry answer_choices
    examples: int  # source examples, counted by the launcher
    num_shards: int
    folder: str  # the task's folder the shards, info and stats go to
    counts_path: str  # where the split's summary (for the launcher's check) goes
    seqio_version: str

    def shard_path(self, shard: int) -> str:
        return storage.join(self.folder, f"{self.split}.tfrecord-{shard:05d}-of-"
                                         f"{self.num_shards:05d}")

    def info_path(self) -> str:
        return storage.join(self.folder, f"info.{self.split}.json")

    def stats_path(self) -> str:
        return storage.join(self.folder, f"stats.{self.split}.json")


def permutation(task: str, examples: int) -> np.ndarray:
    """int64 [examples]: the task's example order, the same on every worker and run."""
    seed = int.from_bytes(hashlib.sha256(task.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).permutation(examples)


@dataclasses.dataclass
class ShardSummary:
    shard: int
    examples: int = 0
    dropped: int = 0
    kept: int = 0
    rows: int = 0
    tokens: dict = dataclasses.field(default_factory=dict)  # {feature: valid tokens}
    max_tokens: dict = dataclasses.field(default_factory=dict)
    features: Optional[dict] = None  # seqio's info "features" of one row


class Tokenizer:
    """SentencePiece from the model proto of the task vocabulary (built where it is used: the
    processor itself does not pickle)."""

    def __init__(self, model_proto: bytes, eos_id: Optional[int], pad_id: Optional[int]):
        self.model_proto, self.eos_id, self.pad_id = model_proto, eos_id, pad_id
        self._processor = None

    def encode(self, texts: list) -> list:
        if self._processor is None:
            import sentencepiece

            self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model_proto)
        return self._processor.encode(texts, num_threads=1)

    def valid(self, ids: np.ndarray) -> int:
        """Tokens seqio's stats count: all but EOS and padding."""
        return len(ids) - sum(int(np.count_nonzero(ids == i))
                              for i in {self.eos_id, self.pad_id} if i is not None)

    def __getstate__(self):
        return {**self.__dict__, "_processor": None}


def shard_rows(job: SplitJob, kept: list, tokenizer: Tokenizer) -> list:
    """Rows (dicts in the cache's layout) of (index, RenderedExample) pairs."""
    inputs = tokenizer.encode([r.inputs for _, r in kept])
    if job.score_eval:
        targets = tokenizer.encode([c for _, r in kept for c in r.answer_choices])
    else:
        targets = tokenizer.encode([r.targets for _, r in kept])
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    rows, target_ids = [], iter(targets)
    for (index, rendered), input_ids in zip(kept, inputs):
        ids = np.asarray(input_ids, np.int32)
        common = {"inputs": ids, "inputs_pretokenized": rendered.inputs}
        if not job.score_eval:
            row = dict(common, targets=np.asarray(next(target_ids) + eos, np.int32),
                       targets_pretokenized=rendered.targets, idx=np.int32(index))
            if job.with_choices:
                row["answer_choices"] = list(rendered.answer_choices)
            rows.append(row)
            continue
        correct = rendered.targets.strip(_ASCII_SPACE)
        for number, choice in enumerate(rendered.answer_choices):
            rows.append(dict(common, targets=np.asarray(next(target_ids) + eos, np.int32),
                             targets_pretokenized=choice,
                             idx=np.asarray([index, number], np.int32),
                             is_correct=np.bool_(choice == correct), weight=np.float32(1.0),
                             answer_choices=list(rendered.answer_choices)))
    return rows


def feature_info(row: dict) -> dict:
    """seqio's GetInfo of one row: {feature: {"shape": [...], "dtype": name}}."""
    out = {}
    for key, value in row.items():
        if isinstance(value, str):
            out[key] = {"shape": [], "dtype": "string"}
        elif isinstance(value, list):
            out[key] = {"shape": [None], "dtype": "string"}
        else:
            value = np.asarray(value)
            out[key] = {"shape": [None] + list(value.shape[1:]) if value.ndim else [],
                        "dtype": value.dtype.name}
    return out


RecordFilter = Callable[[str, str, int, int], bool]


def write_shard(job: SplitJob, shard: int, tokenizer: Tokenizer,
                record_filter: Optional[RecordFilter] = None) -> ShardSummary:
    """Render, tokenize and write shard `shard` of `job`; returns what it did.

    `record_filter(task, split, shard, row)` (tests only) decides whether a produced row reaches
    the file: it makes a writer that silently loses records, for the launcher's count check.
    """
    reader = sources.reopen(job.source)
    positions = permutation(job.task, job.examples)[shard::job.num_shards]
    summary = ShardSummary(shard)
    with storage.open(job.shard_path(shard), "wb") as file:
        writer = example_records.RecordWriter(file)
        for start in range(0, len(positions), CHUNK):
            chunk = np.sort(positions[start:start + CHUNK])  # sorted: sequential reads
            kept = []
            for index, example in reader.read(chunk):
                rendered = templates.render_example(job.template, example)
                if rendered is None:
                    summary.dropped += 1
                else:
                    kept.append((index, rendered))
            summary.examples += len(chunk)
            summary.kept += len(kept)
            for row in shard_rows(job, kept, tokenizer):
                _tally(summary, row, tokenizer)
                if record_filter is None or record_filter(job.task, job.split, shard,
                                                          summary.rows - 1):
                    writer.write(example_records.serialize_example(row))
    return summary


def _tally(summary: ShardSummary, row: dict, tokenizer: Tokenizer) -> None:
    summary.rows += 1
    if summary.features is None:
        summary.features = feature_info(row)
    for key in ("inputs", "targets"):
        valid = tokenizer.valid(row[key])
        summary.tokens[key] = summary.tokens.get(key, 0) + valid
        summary.max_tokens[key] = max(summary.max_tokens.get(key, 0), valid)


class WriteShards(beam.DoFn):
    """(SplitJob, shard) -> ((task, split), (SplitJob, ShardSummary)); errors name the task."""

    def __init__(self, tokenizer: Tokenizer, record_filter: Optional[RecordFilter] = None):
        self.tokenizer, self.record_filter = tokenizer, record_filter

    def process(self, unit) -> Iterator[tuple]:
        job, shard = unit
        try:
            summary = write_shard(job, shard, self.tokenizer, self.record_filter)
        except Exception as error:  # noqa: BLE001  re-raised with the task named
            raise ShardWriteError(f"caching {job.task} ({job.split}) shard {shard + 1}/"
                                  f"{job.num_shards}: {type(error).__name__}: {error}") from error
        yield (job.task, job.split), (job, summary)


class ShardWriteError(RuntimeError):
    """Writing a shard failed; the message names the task, split and shard."""


class WriteSplitFiles(beam.DoFn):
    """All shard summaries of one split -> seqio's info and stats JSON, and the split's counts
    for the launcher's check (written in `process`: Beam retries rewrite the same files)."""

    def process(self, keyed) -> Iterator[str]:
        _, items = keyed
        items = list(items)
        job = items[0][0]
        summaries = sorted((s for _, s in items), key=lambda s: s.shard)
        counts = split_counts(job, summaries)
        features = next((s.features for s in summaries if s.features), None)
        info = {} if features is None else {"num_shards": job.num_shards, "features": features,
                                            "seqio_version": job.seqio_version}
        storage.write_text(job.info_path(), seqio_json(info))
        storage.write_text(job.stats_path(), seqio_json(split_stats(summaries)))
        storage.write_text(job.counts_path, json.dumps(counts, sort_keys=True))
        yield job.counts_path


def split_counts(job: SplitJob, summaries: list) -> dict:
    return {"task": job.task, "split": job.split, "shards_reported": len(summaries),
            "examples_visited": sum(s.examples for s in summaries),
            "dropped": sum(s.dropped for s in summaries),
            "kept": sum(s.kept for s in summaries), "rows": sum(s.rows for s in summaries)}


def split_stats(summaries: list) -> dict:
    """seqio's GetStats: examples, <feature>_tokens, <feature>_max_tokens (when rows exist)."""
    stats = {"examples": sum(s.rows for s in summaries)}
    for key in ("inputs", "targets"):
        found = [s for s in summaries if key in s.tokens]
        if found:
            stats[f"{key}_tokens"] = sum(s.tokens[key] for s in found)
            stats[f"{key}_max_tokens"] = max(s.max_tokens[key] for s in found)
    return stats


def seqio_json(value: dict) -> str:
    """seqio's WriteJson: sorted keys, indent 2, one trailing newline (Beam's WriteToText)."""
    return json.dumps(value, sort_keys=True, indent=2) + "\n"
