"""What `t0-score` scores: MIXTURE_OR_TASK_NAME → tasks with rows, for `scoring.runner`.

This is the wiring of the task layer (the seqio registry through `t0_jax.data.score_rows`, the
only TensorFlow user; seqio caches when USE_CACHED_TASKS) and of local BIG-bench JSON files to
the scorer, which sees rows only (HOUSE.md: `bin/` wires one subpackage to another). Names are
tasks, mixtures (their tasks), globs over registered names, or BIG-bench paths; several may be
given as a list or a comma-separated string, and each task is scored once. Rows are put in the
run's scoring convention (`scoring.conventions`: t-zero's tokens as rendered, or
lm-evaluation-harness's, re-tokenized here from the rendered texts with the tasks' vocabulary).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from t0_jax.scoring import bigbench, conventions
from t0_jax.scoring.runner import ScoreRun, ScoreTask, split_names


@dataclasses.dataclass(frozen=True)
class ScoreData:
    """`runner.TaskSource` for a run's MIXTURE_OR_TASK_NAME, split, data and cache settings."""

    run: ScoreRun

    def tasks(self, vocab_path: Optional[str]) -> list[ScoreTask]:
        out: dict[str, ScoreTask] = {}
        registered: list[str] = []  # names from the task registry (the ones a cache can hold)
        for name in split_names(self.run.mixture_or_task_name):
            if bigbench.is_bigbench_path(name):
                tasks = [_bigbench_task(task, file, vocab_path, self.run)
                         for task, file in bigbench.tasks(name).items()]
            else:
                tasks = _registry_tasks(name, self.run, vocab_path)
                registered += [t.name for t in tasks]
            for task in tasks:
                out.setdefault(task.name, task)
        if self.run.use_cached_tasks and registered:
            from t0_jax.data import caches  # noqa: PLC0415 - TF boundary

            caches.use_caches(registered, self.run.split, self.run.cache_dirs)
        return list(out.values())

    def detokenize(self, ids, vocab_path: Optional[str]) -> str:
        from t0_jax.data import score_rows  # noqa: PLC0415

        return score_rows.detokenize(ids, vocab_path)


def _registry_tasks(name: str, cfg: ScoreRun, vocab_path) -> list[ScoreTask]:
    from t0_jax.data import score_rows  # noqa: PLC0415 - TensorFlow lives behind this import

    out = []
    for task in score_rows.expand_names([name], vocab_path):
        info = score_rows.task_info(task)
        load = (lambda n=task: in_convention(score_rows.task_rows(
            n, cfg.split, cfg.data_dir, vocab_path, cfg.max_examples, cfg.use_cached_tasks),
            cfg, vocab_path))
        out.append(ScoreTask(task, info.dataset_label, info.template, info.metrics, load))
    return out


def _bigbench_task(name, file, vocab_path, cfg: ScoreRun) -> ScoreTask:
    max_examples = cfg.max_examples

    def load():
        from t0_jax.data import score_rows  # noqa: PLC0415

        rows = [r for r in bigbench.text_rows(file)
                if max_examples is None or r["example"] < max_examples]
        inputs = score_rows.tokenize([r["inputs_text"] for r in rows], vocab_path)
        targets = score_rows.tokenize([r["target_text"] for r in rows], vocab_path, add_eos=True)
        return in_convention([r | {"inputs": i, "targets": t, "weight": 1.0}
                              for r, i, t in zip(rows, inputs, targets)], cfg, vocab_path)

    return ScoreTask(name, bigbench.dataset_label(name), name[len(bigbench.PREFIX):],
                     ("Accuracy",), load)


def in_convention(rows: list, cfg: ScoreRun, vocab_path) -> list:
    """`rows` as cfg.convention scores them (t-zero: unchanged)."""
    from t0_jax.data import score_rows  # noqa: PLC0415

    return conventions.apply(rows, cfg.convention,
                             lambda texts: score_rows.tokenize(list(texts), vocab_path),
                             cfg.batching.max_input_length)
