"""One seqio Task per (dataset, subset, template), plus a `<task>_score_eval` twin.

Importing this module registers every task of the catalogue (tasks/datasets.csv) with seqio:
offline and fast, because registration reads only the catalogue and the template YAML (C
loader, cached); examples are read when a dataset is requested, from the data dir in effect
then (`sources.set_data_dir` / `$T0_DATA_DIR`), and the vocabulary file is opened on first use.

Names     `task_name(dataset, subset, template)` as in the T0 release; datasets split into rounds
          (ANLI, tasks/selection.yaml) get `<task>_<round>` with train/validation/test mapped to
          the round's splits (train_r1/dev_r1/test_r1, ...).
Features  `inputs` (no EOS), `targets` (EOS appended before the cache placeholder, as T0:
          a target longer than its feature length loses its EOS when trimmed),
          `*_pretokenized` strings,
          `idx` (the example's index in the full split). Templates with answer choices also
          pass `answer_choices` through.
Score     `<task>_score_eval` turns each example into one row per answer choice: `inputs`,
eval      `targets` = the choice, `idx = [example index, choice index]` (unique across hosts:
          the example index is taken before sharding), `is_correct = (choice == stripped
          target)`, `weight = 1.0`, `answer_choices` (the full list, on every row).
Drops     examples whose rendering is not exactly (inputs, targets) are skipped, counted per
          task and split, logged after each full pass, and readable with `dropped_counts()`.
Order     shuffled tasks walk a permutation seeded by (run seed, task name): each template of
          a dataset has its own order. Rendering runs in `render_pool` worker processes
          (`set_render_workers` / $T0_RENDER_WORKERS, default = cores); 0 or 1 renders
          in-process, with identical output.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import logging
import re
import threading
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from t0_jax.data import catalogue, render_pool, sources, templates, vocabularies

DEFAULT_SPLITS = ("train", "validation", "test")
SCORE_EVAL_SUFFIX = "_score_eval"
log = logging.getLogger(__name__)


def task_name(dataset: str, subset: Optional[str], template_name: str) -> str:
    """The T0 task name: non-word runs of `dataset_subset_template` become one underscore."""
    return re.sub(r"[^\w\d\._]+", "_", dataset + ("_" + subset + "_" if subset else "_")
                  + template_name)


class UnknownNameError(KeyError):
    """An unknown task or mixture name; `suggestions` holds the closest known names."""

    def __init__(self, kind: str, name: str, known):
        self.suggestions = closest_names(name, known)
        hint = (f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else "")
        super().__init__(f"unknown {kind} '{name}'.{hint} Run `t0-tasks list` to see the "
                         f"mixtures and `t0-tasks list --mixture NAME` for their tasks.")

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0])


def closest_names(name: str, known, n: int = 5) -> list:
    """Up to `n` known names that look like `name` (difflib ratio, best first)."""
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)


# ----------------------------------------------------------------------------- vocabulary


class TaskVocabulary(seqio.Vocabulary):
    """The vocabulary every registered task tokenizes with, opened on first use.

    `vocabularies.get_vocabulary` checks the file exists, which for T5's gs:// default means a
    network call; registration must stay offline, so tasks hold this stand-in and the real
    (cached) SentencePiece vocabulary is looked up when text is encoded or decoded. The path
    is `set_vocab_path(...)` / `register_all(vocab_path=...)`, else $T0_VOCAB_PATH, else T5's.
    """

    def __init__(self):
        super().__init__(extra_ids=0)
        self.path = None

    def resolve(self) -> seqio.SentencePieceVocabulary:
        return vocabularies.get_vocabulary(self.path)

    eos_id = property(lambda self: self.resolve().eos_id)
    unk_id = property(lambda self: self.resolve().unk_id)
    pad_id = property(lambda self: self.resolve().pad_id)
    bos_id = property(lambda self: self.resolve().bos_id)
    extra_ids = property(lambda self: self.resolve().extra_ids)
    vocab_size = property(lambda self: self.resolve().vocab_size)
    _base_vocab_size = property(lambda self: self.resolve()._base_vocab_size)

    def encode(self, s):
        return self.resolve().encode(s)

    def decode(self, ids):
        return self.resolve().decode(ids)

    def encode_tf(self, s):
        return self.resolve().encode_tf(s)

    def decode_tf(self, ids):
        return self.resolve().decode_tf(ids)

    _encode = encode
    _decode = decode
    _encode_tf = encode_tf
    _decode_tf = decode_tf

    def __getattr__(self, name):  # e.g. `tokenizer`, `sentencepiece_model_file`
        if name.startswith("__") or name == "path":
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def __eq__(self, other):
        mine = vocabularies.vocabulary_path(self.path)
        if isinstance(other, TaskVocabulary):
            return mine == vocabularies.vocabulary_path(other.path)
        return getattr(other, "sentencepiece_model_file", None) == mine

    def __hash__(self):
        return id(self)

    def __str__(self):
        return f"TaskVocabulary({vocabularies.vocabulary_path(self.path)})"


_VOCABULARY = TaskVocabulary()


def set_vocab_path(path) -> None:
    """Tokenize every registered task with the SentencePiece model at `path` (None: default)."""
    _VOCABULARY.path = None if path is None else str(path)


def task_vocabulary() -> TaskVocabulary:
    return _VOCABULARY


def output_features() -> dict:
    return {"inputs": seqio.Feature(_VOCABULARY, add_eos=False, dtype=tf.int32),
            "targets": seqio.Feature(_VOCABULARY, add_eos=True, dtype=tf.int32)}


# ----------------------------------------------------------------------------- task records


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What registration knows about a task without reading data (mixtures use it)."""

    name: str
    dataset: str
    subset: Optional[str]
    template_name: str
    splits: tuple  # ((task split, dataset split), ...)
    train_size: Optional[int]
    num_templates: int  # ALL templates of the dataset: the mixture cap's denominator
    original_task: bool
    score_eval: Optional[str]  # the twin's name; None when the template has no answer choices
    round_name: Optional[str] = None

    def source_split(self, split: str) -> str:
        mapping = dict(self.splits)
        if split not in mapping:
            raise ValueError(f"task '{self.name}' has no split '{split}'; its splits are "
                             f"{', '.join(mapping)}.")
        return mapping[split]


_TASKS: dict = {}  # base task name -> TaskInfo
_TWINS: dict = {}  # score_eval name -> base task name
_TEMPLATES: dict = {}  # base task name -> templates.Template
_BY_DATASET: dict = {}  # (dataset, subset, round) -> [base task names sorted by template]
_DROPPED: dict = {}  # (base task name, split) -> examples dropped in the last full pass
_NO_TEMPLATES: dict = {}  # catalogue (dataset, subset) without templates -> reason


def task_info(name: str) -> TaskInfo:
    """The record of a task or of its `_score_eval` twin; UnknownNameError suggests names."""
    base = _TWINS.get(name, name)
    if base not in _TASKS:
        raise UnknownNameError("task", name, list(_TASKS) + list(_TWINS))
    return _TASKS[base]


def list_tasks(score_eval: bool = False) -> list:
    """Registered task names, sorted (with the `_score_eval` twins when asked)."""
    return sorted(list(_TASKS) + (list(_TWINS) if score_eval else []))


def dataset_tasks(dataset: str, subset: Optional[str] = None,
                  round_name: Optional[str] = None) -> list:
    """The TaskInfos of one dataset (round), sorted by template name."""
    names = _BY_DATASET.get((dataset, subset or None, round_name))
    if names is None:
        raise KeyError(f"no tasks registered for dataset "
                       f"'{catalogue.display_name(dataset, subset)}'"
                       + (f" round '{round_name}'" if round_name else "")
                       + "; call register_dataset_tasks(dataset, subset, splits, train_size) "
                         "first (templates in tasks/templates/<dataset>[/<subset>]/).")
    return [_TASKS[name] for name in names]


def registered_datasets() -> list:
    """(dataset, subset, round) of every registered dataset, sorted."""
    return sorted(_BY_DATASET, key=lambda key: (key[0], key[1] or "", key[2] or ""))


def missing_templates() -> dict:
    """Catalogue datasets that have no templates (skipped at registration) -> why."""
    return dict(_NO_TEMPLATES)


def dropped_counts() -> dict:
    """{task: {split: examples dropped in the last full pass}} for every pass finished so far."""
    out: dict = {}
    for (name, split), count in sorted(_DROPPED.items()):
        out.setdefault(name, {})[split] = count
    return out


# ----------------------------------------------------------------------------- reading examples


@dataclasses.dataclass(frozen=True)
class RenderedRow:
    index: int  # position in the full split
    example: dict
    rendered: Optional[templates.RenderedExample]  # None: dropped


def load_split(name: str, split: str, data_dir=None) -> sources.SplitReader:
    """A random-access reader over the task's split (data dir resolved now, at read time)."""
    info = task_info(name)
    return sources.open_split(info.dataset, info.subset, info.source_split(split),
                              data_dir=data_dir)


def iter_rendered(name: str, split: str, data_dir=None, indices=None) -> Iterator[RenderedRow]:
    """Raw example -> rendered example for `indices` (default all) of the task's split."""
    reader = load_split(name, split, data_dir)
    template = _TEMPLATES[task_info(name).name]
    for index, example in reader.read(range(len(reader)) if indices is None else indices):
        yield RenderedRow(index, example, templates.render_example(template, example))


def task_seed(seed: int, name: str) -> np.ndarray:
    """The shuffle seed of one task: a stable hash of (run seed, task name), int64 [2].

    Every template of a dataset walks its own permutation, so the prompts of one example do
    not arrive together in a mixture; the same (seed, task) always gives the same order.
    """
    digest = hashlib.sha256(f"{int(seed)}\x00{name}".encode("utf-8")).digest()
    return np.frombuffer(digest[:8], np.uint32).astype(np.int64)


class PromptedSource(seqio.DataSource):
    """Examples of one (dataset, split) rendered with one template, read when asked for.

    The pipeline is checkpointable tf.data (no Python generator), so `tf.train.Checkpoint(
    iterator=...)` saves exactly where a run is:
        range(examples in this shard) -> batch(_CHUNK) -> stateless seeded permutation
        (`task_seed`) -> global indices -> enumerate -> map(submit the chunk to the render
        workers) -> prefetch(workers: that many chunks in flight) -> map(collect it) -> unbatch.
    Order is fixed by the chunk sequence, whatever the worker count; a restored iterator
    renders the chunks its prefetch buffer held again (`render_pool.collect_chunk`).
    Sharding is by example position (example i goes to shard i % num_shards) and reads only
    this shard's examples; `idx` stays the index in the full split on every host.
    """

    def __init__(self, info: TaskInfo):
        super().__init__(splits=[split for split, _ in info.splits], caching_permitted=True)
        self.info = info

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> Sequence[str]:
        return [split]

    def num_input_examples(self, split: str) -> Optional[int]:
        """The catalogue's train size for `train` (no read), else the split's example count."""
        if split == "train" and self.info.train_size is not None:
            return self.info.train_size
        return len(load_split(self.info.name, split))

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                    shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                    use_cached=False, num_epochs=1) -> tf.data.Dataset:
        del sequence_length, use_cached, num_epochs  # seqio handles these after the source
        reader = load_split(self.info.name, split)
        shard = reader.shard(*((shard_info.index, shard_info.num_shards) if shard_info
                               else (0, 1)))
        template = _TEMPLATES[self.info.name]
        if len(shard):  # a template/data mismatch fails here, with its message, not in tf.data
            templates.render_example(template, reader[shard.indices[0]])
        if shuffle and seed is None:
            seed = int(np.random.SeedSequence().entropy % (1 << 63))
        job = render_pool.RenderJob(reader.spec, template, bool(self.info.score_eval))
        tally = _DropTally(self.info.name, split, shard_info, len(shard))
        workers = render_pool.render_workers()
        chunks = _index_chunks(shard.indices, task_seed(seed, self.info.name) if shuffle else None)
        submitted = chunks.enumerate().map(functools.partial(_submit_chunk, job, workers))
        dataset = submitted.prefetch(max(workers, 1)).map(  # `workers` chunks in flight
            functools.partial(_collect_chunk, job, tally, workers)).unbatch()
        dataset = dataset.with_options(_external_state_options())
        return dataset.map(_unpad_choices) if job.with_choices else dataset


# Rows are rendered and cross into tf.data in chunks: one Python call per example costs several
# times the rendering itself, and a worker round trip (~1 ms) is small next to 128 renderings.
_CHUNK = 128


def _index_chunks(indices: range, seed: Optional[np.ndarray]) -> tf.data.Dataset:
    """Chunks of this shard's global example indices (int64 [<= _CHUNK]), permuted when seeded.

    The permutation is stateless (`index_shuffle` of the position), so nothing the size of the
    split is held in memory or in the graph, and an iterator checkpoint is just a position.
    """
    count = len(indices)
    chunks = tf.data.Dataset.range(count).batch(_CHUNK)
    start, step = indices.start, indices.step

    def to_global(positions):  # int64 [chunk]
        if seed is not None and count > 1:
            positions = tf.random.experimental.index_shuffle(
                positions, tf.constant(seed, tf.int64), tf.constant(count - 1, tf.int64))
        return positions * step + start

    return chunks.map(to_global)


def _submit_chunk(job, workers, chunk_number, indices) -> tuple:
    """tf.data map: hand one chunk to the render workers; (ticket, chunk number, indices)."""
    ticket = tf.numpy_function(
        lambda positions: np.int64(render_pool.submit_chunk(job, positions, workers)),
        [indices], tf.int64)
    ticket.set_shape([])
    return ticket, chunk_number, indices


def _collect_chunk(job, tally, workers, ticket, chunk_number, indices) -> dict:
    """tf.data map: the rendered chunk as tensors (rendered here when in-process or restored)."""
    signature = _chunk_signature(job.with_choices)

    def collect(ticket, number, positions):
        arrays, dropped = render_pool.collect_chunk(ticket, job, positions, workers)
        tally.add(int(number), dropped)
        return [arrays[key] for key in signature]

    tensors = tf.numpy_function(collect, [ticket, chunk_number, indices],
                                [spec.dtype for spec in signature.values()])
    out = {}
    for (key, spec), tensor in zip(signature.items(), tensors):
        tensor.set_shape(spec.shape)
        out[key] = tensor
    return out


def _external_state_options() -> tf.data.Options:
    """Let iterator checkpoints skip the render function's Python state (it has none that
    matters: output depends only on the chunk's indices)."""
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return options


class _DropTally:
    """Dropped renderings per chunk of one pipeline; a full pass is published to `_DROPPED`.

    Chunks finish out of order in parallel; the pass is complete when every chunk number has
    reported (after a restore mid-pass, from the next full pass on).
    """

    def __init__(self, name: str, split: str, shard_info, examples: int):
        self.name, self.split, self.examples = name, split, examples
        self.chunks = -(-examples // _CHUNK)
        self.where = (f"shard {shard_info.index + 1}/{shard_info.num_shards}"
                      if shard_info and shard_info.num_shards > 1 else "all shards")
        self.seen: dict = {}
        self.lock = threading.Lock()
        if not self.chunks:
            _DROPPED[(name, split)] = 0

    def add(self, chunk_number: int, dropped: int) -> None:
        with self.lock:
            self.seen[chunk_number] = dropped
            if len(self.seen) < self.chunks:
                return
            total = sum(self.seen.values())
            self.seen.clear()
        _DROPPED[(self.name, self.split)] = total
        if total:
            log.info("task %s split %s (%s): dropped %d of %d examples whose rendering is not "
                     "exactly (inputs, targets)", self.name, self.split, self.where, total,
                     self.examples)


def _chunk_signature(with_choices: bool) -> dict:
    signature = {"inputs": tf.TensorSpec([None], tf.string),
                 "targets": tf.TensorSpec([None], tf.string),
                 "idx": tf.TensorSpec([None], tf.int32)}
    if with_choices:  # [rows, most choices] padded with "", and the true count per row
        signature["answer_choices"] = tf.TensorSpec([None, None], tf.string)
        signature["num_choices"] = tf.TensorSpec([None], tf.int32)
    return signature


def _unpad_choices(example: dict) -> dict:
    example = dict(example)
    count = example.pop("num_choices")
    example["answer_choices"] = example["answer_choices"][:count]
    return example


def expand_answer_choices(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Rank-classification rows: one per answer choice (see the module docstring)."""

    def rows(example):
        choices = example["answer_choices"]
        count = tf.shape(choices)[0]
        return tf.data.Dataset.from_tensor_slices({
            "inputs": tf.fill([count], example["inputs"]),
            "targets": choices,
            "idx": tf.stack([tf.fill([count], example["idx"]),
                             tf.range(count, dtype=tf.int32)], axis=1),
            "is_correct": tf.equal(choices, tf.strings.strip(example["targets"])),
            "weight": tf.ones([count], tf.float32),
            "answer_choices": tf.tile(choices[tf.newaxis], [count, 1]),
        })

    return dataset.flat_map(rows)


# T0's order (t-zero seqio_tasks): the cache (t0-cache, P3) holds tokenized ids with EOS already
# appended; a target longer than its feature length loses that EOS when it is trimmed.
_PREPROCESSORS = (seqio.preprocessors.tokenize, seqio.preprocessors.append_eos,
                  seqio.CacheDatasetPlaceholder(required=False))


# ----------------------------------------------------------------------------- registration


def _add_task(name: str, source: PromptedSource, score_eval: bool) -> None:
    if name in seqio.TaskRegistry.names():
        existing = seqio.TaskRegistry.get(name)
        if getattr(existing.source, "info", None) == source.info:
            return  # idempotent: the same task is already there
        raise ValueError(f"a different seqio task named '{name}' is already registered; "
                         "remove it (seqio.TaskRegistry.remove) or pick another template name.")
    preprocessors = ((expand_answer_choices,) if score_eval else ()) + _PREPROCESSORS
    seqio.TaskRegistry.add_provider(
        name, seqio.Task(name, source, output_features(), preprocessors=list(preprocessors)))


def register_dataset_tasks(dataset: str, subset: Optional[str] = None, splits=DEFAULT_SPLITS,
                           train_size: Optional[int] = None,
                           round_name: Optional[str] = None) -> list:
    """Register a task (and score_eval twin) for every template of (dataset, subset).

    `splits`: task split names, or {task split: dataset split}. `train_size` sets the mixture
    cap; `round_name` appends `_<round>` to every name. Works for datasets outside the
    catalogue whose templates live in tasks/templates/. Returns the TaskInfos, sorted by name.
    """
    subset = subset or None
    split_map = tuple(splits.items() if isinstance(splits, Mapping) else ((s, s) for s in splits))
    collection = templates.load_templates(dataset, subset)
    infos = []
    for template in collection:
        name = task_name(dataset, subset, template.name) + (f"_{round_name}" if round_name else "")
        info = TaskInfo(
            name=name, dataset=dataset, subset=subset, template_name=template.name,
            splits=split_map, train_size=train_size, num_templates=len(collection),
            original_task=bool(template.original_task), round_name=round_name,
            score_eval=name + SCORE_EVAL_SUFFIX if template.answer_choices else None)
        if _TASKS.get(name, info) != info:
            raise ValueError(f"task '{name}' is already registered with other settings "
                             f"({_TASKS[name]}); register each dataset once.")
        source = PromptedSource(info)
        _add_task(name, source, score_eval=False)
        if info.score_eval:
            _add_task(info.score_eval, source, score_eval=True)
            _TWINS[info.score_eval] = name
        _TASKS[name], _TEMPLATES[name] = info, template
        infos.append(info)
    _BY_DATASET[(dataset, subset, round_name)] = [info.name for info in infos]
    return infos


def register_all(vocab_path=None) -> list:
    """Register every catalogue dataset's tasks (idempotent; offline; no data read).

    `vocab_path` (optional) switches the vocabulary of all tasks; None keeps the current one.
    Catalogue rows without templates (promptsource 0.2.3 lacks `jigsaw_toxicity_pred`) are
    skipped and reported by `missing_templates()`. Returns the base task names, sorted.
    """
    if vocab_path is not None:
        set_vocab_path(vocab_path)
    selection = catalogue.load_selection()
    for entry in catalogue.load_catalogue():
        rounds = selection.rounds.get(entry.hf_name) if entry.subset is None else None
        try:
            if rounds:
                for round_name, split_map in rounds.items():
                    register_dataset_tasks(entry.hf_name, None, split_map, None, round_name)
            else:
                register_dataset_tasks(entry.hf_name, entry.subset, DEFAULT_SPLITS,
                                       entry.train_size)
        except templates.TemplateNotFoundError as error:
            if entry.key not in _NO_TEMPLATES:
                log.debug("catalogue dataset %s has no templates; skipped: %s", entry.display,
                          error)  # `t0-tasks list` names them
            _NO_TEMPLATES[entry.key] = str(error)
    return list_tasks()


register_all()
