"""Rows of registered tasks as plain numpy records, for the scorer (which imports no TensorFlow).

`task_rows(name, split)` runs a task's seqio pipeline (rendering + tokenisation, no packing, no
shuffling, no length cap), or reads its seqio cache (`use_cached`), and returns one dict per
row:

    inputs          int32 [Li]  tokenised prompt, no EOS
    targets         int32 [Lt]  tokenised target/choice, EOS appended
    inputs_text     str         the rendered prompt
    target_text     str         the choice text (`_score_eval` rows) or the reference target
    example, choice int         idx = [example, choice] of `_score_eval` rows (choice -1 else)
    is_correct      bool        whether this choice is a correct answer (False for plain tasks)
    weight          float

Rows come in dataset order (a cache's in its shards' order: `_score_eval` rows carry their
example index, so scores do not depend on it), and `max_examples` stops reading early. Also
here: the tasks that names, mixtures and globs stand for (`expand_names`), each task's
(dataset, subset, template) and metrics from its template metadata, and SentencePiece
tokenisation for sources that are not seqio tasks (BIG-bench JSON).

`rows_reused()`: inside it, each task split is rendered once and later calls get copies, for a
process that scores many checkpoints on the same prompts (t0-experiments: 22 models).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional

import numpy as np

from t0_jax.data import sources, vocabularies

@dataclasses.dataclass(frozen=True)
class ReportLabels:
    """What a task name stands for; `dataset_label` groups its templates in reports."""

    name: str
    dataset_label: str  # "hf_name[/subset][_round]", e.g. "super_glue/rte", "anli_r1"
    template: str
    metrics: tuple[str, ...] = ()
    has_choices: bool = True


def ensure_registered(vocab_path=None) -> None:
    """Register every task and T0 mixture (idempotent), tokenizing with `vocab_path`."""
    from t0_jax.data import mixtures, registry  # noqa: PLC0415 - seqio import costs seconds

    registry.register_all(vocab_path=vocab_path)
    mixtures.register_t0_mixtures()


def resolve_task_names(name: str, vocab_path=None) -> list[str]:
    """Sub-task names of a mixture (sorted), or [name] for a task; unknown names explained."""
    return expand_names([name], vocab_path)


GLOB_CHARS = frozenset("*?[")


def expand_names(names, vocab_path=None) -> list[str]:
    """Task names (order of first appearance, no repeats) for task names, mixture names and
    globs such as 'super_glue_rte_*_score_eval' (matched against registered task and mixture
    names; a mixture stands for its sorted tasks). A name or glob that matches nothing raises
    `UnknownNameError` with the closest registered names."""
    import fnmatch  # noqa: PLC0415

    import seqio  # noqa: PLC0415

    from t0_jax.data import registry  # noqa: PLC0415

    ensure_registered(vocab_path)
    tasks, mixtures = set(seqio.TaskRegistry.names()), set(seqio.MixtureRegistry.names())
    out: dict[str, None] = {}
    for name in names:
        if GLOB_CHARS & set(name):
            matched = sorted(fnmatch.filter(tasks | mixtures, name))
            if not matched:
                raise registry.UnknownNameError("task or mixture pattern", name,
                                                tasks | mixtures)
        else:
            matched = [name]
        for match in matched:
            if match in mixtures:
                out.update(dict.fromkeys(sorted(
                    t.name for t in seqio.get_mixture_or_task(match).tasks)))
            elif match in tasks:
                out[match] = None
            else:
                raise registry.UnknownNameError("task or mixture", match, tasks | mixtures)
    return list(out)


def task_info(name: str) -> ReportLabels:
    """Dataset label, template name and template metrics of a registered task."""
    from t0_jax.data import catalogue, registry, templates  # noqa: PLC0415

    info = registry.task_info(name)
    label = catalogue.display_name(info.dataset, info.subset)
    if info.round_name:
        label += f"_{info.round_name}"
    template = templates.get_template(info.dataset, info.subset, info.template_name)
    return ReportLabels(name=name, dataset_label=label, template=info.template_name,
                    metrics=tuple(template.metrics or ()),
                    has_choices=name.endswith(registry.SCORE_EVAL_SUFFIX))


_reused: Optional[dict] = None  # {task_rows arguments: rows} inside rows_reused()


@contextlib.contextmanager
def rows_reused():
    """Inside: `task_rows` renders each (task, split, DATA_DIR, vocabulary, max_examples,
    use_cached) once and returns fresh lists of row copies after that. Rows are a pure function
    of those, and rendering the demo's 10 held-out prompts (~5 CPU-s) cost as much as scoring
    a model on them."""
    global _reused
    outer, _reused = _reused, {}
    try:
        yield
    finally:
        _reused = outer


def task_rows(name: str, split: str, data_dir=None, vocab_path=None,
              max_examples: Optional[int] = None, use_cached: bool = False) -> list[dict]:
    """Every row of one task split as numpy records (see the module docstring); with
    `use_cached`, read through seqio's cached reader (after `caches.use_caches`)."""
    if _reused is None:
        return _render_rows(name, split, data_dir, vocab_path, max_examples, use_cached)
    key = (name, split, data_dir or sources.get_data_dir(), vocab_path, max_examples, use_cached)
    if key not in _reused:
        _reused[key] = _render_rows(name, split, data_dir, vocab_path, max_examples, use_cached)
    return [dict(row) for row in _reused[key]]


def _render_rows(name: str, split: str, data_dir, vocab_path, max_examples: Optional[int],
                 use_cached: bool) -> list[dict]:
    import seqio  # noqa: PLC0415

    ensure_registered(vocab_path)
    if data_dir is not None:
        sources.set_data_dir(data_dir)
    task = seqio.get_mixture_or_task(name)
    dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False,
                               use_cached=use_cached, num_epochs=1)
    rows = []
    for i, ex in enumerate(dataset.as_numpy_iterator()):
        row = _row(ex, i)
        if max_examples is not None and row["example"] >= max_examples:
            if use_cached:
                continue  # a cache's shards are shuffled: the first N are anywhere
            break
        rows.append(row)
    return rows


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _row(ex: dict, position: int) -> dict:
    idx = ex.get("idx")
    scored = idx is not None and np.ndim(idx) == 1 and len(idx) == 2
    return {
        "inputs": np.asarray(ex["inputs"], np.int32),
        "targets": np.asarray(ex["targets"], np.int32),
        "inputs_text": _text(ex.get("inputs_pretokenized", b"")),
        "target_text": _text(ex.get("targets_pretokenized", b"")),
        "example": int(idx[0]) if scored else position,
        "choice": int(idx[1]) if scored else -1,
        "is_correct": bool(ex.get("is_correct", False)),
        "weight": float(ex.get("weight", 1.0)),
    }


def tokenize(texts, vocab_path=None, add_eos: bool = False) -> list[np.ndarray]:
    """Ids of each text exactly as the tasks' seqio vocabulary encodes them (+ EOS if asked)."""
    vocab = vocabularies.get_vocabulary(vocab_path)
    eos = [vocabularies.EOS_ID] if add_eos else []
    return [np.asarray(list(vocab.encode(t)) + eos, np.int32) for t in texts]


def detokenize(ids, vocab_path=None) -> str:
    """Text of token ids (the vocabulary stops at EOS and skips padding)."""
    return vocabularies.get_vocabulary(vocab_path).decode([int(i) for i in ids])
