"""A scoring run: checkpoint + tasks → per-task files (resumable) → results, CSV, plot.

`run(ScoreRun(...), source)` is what `t0-score` calls (tests call it in-process); `source`
(`TaskSource`, built by `t0_jax.bin.score_data`) turns MIXTURE_OR_TASK_NAME into tasks with
rows, so this module never imports the task layer. Steps:
  1. CHECKPOINT_PATH a folder of step checkpoints → `selection`: every step is scored into
     OUTPUT_DIR/step_<n>/ and the best one is reported in OUTPUT_DIR/selection.json.
  2. load the checkpoint (our Orbax format, trainer step dir, HF T5 dir, T5X) and place the
     parameters on the mesh (data × model, logical-axis rules of `t0_jax.model.axes`); the
     scoring and decoding programs trace inside `mesh_context(mesh, rules)` with the same rules,
     so activations are sharded by the model's annotations, not guessed;
  3. tasks from the source, rendered once per vocabulary (and kept across selection steps);
  4. per task, unless OUTPUT_DIR/tasks/<task>.done.json says it was finished with the same
     fingerprint: `_score_eval` / BIG-bench choice tasks are ranked by log-likelihood
     (encode once, score every choice), tasks without choices are greedily decoded;
  5. aggregate everything on disk into scores.jsonl, results.json, results.csv and the plot,
     with the published figures of the T0 models beside the held-out datasets that were
     scored (`published`) and the scoring convention that ran (`conventions`).
Every process runs the same steps in lockstep; process 0 alone writes files.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import time
from typing import Callable, Optional, Protocol, Sequence, Union

import jax
import numpy as np

from t0_jax import storage
from t0_jax.model.axes import DEFAULT_RULES
from t0_jax.parallel.mesh import mesh_context
from t0_jax.scoring import (aggregate, conventions, plots, published, report, selection,
                            text_metrics)
from t0_jax.scoring.batching import BatchingOptions
from t0_jax.scoring.generation import Generator, decode_length
from t0_jax.scoring.scorer import Scorer, to_global

log = logging.getLogger(__name__)
DEFAULT_CACHE_DIR = pathlib.Path("~/.cache/t0_jax/jax_compilation_cache")


@dataclasses.dataclass(frozen=True)
class ScoreRun:
    checkpoint_path: str
    mixture_or_task_name: Union[str, Sequence[str]]  # names, "a,b", globs (split_names)
    output_dir: str
    split: str = "validation"
    data_dir: Optional[str] = None
    vocab_path: Optional[str] = None  # default: the checkpoint's spiece.model, else $T0_VOCAB_PATH
    activation_dtype: Optional[str] = None  # None: bfloat16 on GPU/TPU, float32 on CPU
    param_dtype: Optional[str] = None  # None: as stored
    num_partitions: int = 1  # model-parallel size; the rest of the devices split the data
    length_normalized: bool = False  # rank by log-likelihood / tokens instead of the sum
    convention: str = conventions.T_ZERO  # which tokens are scored (scoring.conventions)
    published_model: Union[str, Sequence[str], None] = published.AUTO  # compared with (published)
    max_examples: Optional[int] = None  # per task, first N examples (smoke tests)
    batching: BatchingOptions = BatchingOptions()
    select_checkpoints: bool = True  # False: a folder of steps means its latest step
    selection_metric: str = "median_of_medians"
    compilation_cache_dir: Optional[str] = str(DEFAULT_CACHE_DIR)  # None: leave jax's setting
    progress: bool = True
    use_cached_tasks: bool = False  # read registry tasks from seqio caches (t0-cache, P3)
    cache_dirs: tuple[str, ...] = ()  # searched for cached tasks (besides seqio's own list)


@dataclasses.dataclass
class ScoreTask:
    """One task to score: its report labels and how to get its rows (made by the caller)."""

    name: str
    dataset_label: str
    template: str
    metrics: tuple
    load_rows: Callable[[], list]  # → rows as in t0_jax.data.score_rows (tokens + texts)
    _rows: Optional[list] = None

    def rows(self) -> list:
        """The task's rows, rendered and tokenised on first use and kept (checkpoint
        selection scores the same rows at every step)."""
        if self._rows is None:
            self._rows = self.load_rows()
        return self._rows


def split_names(spec) -> list[str]:
    """MIXTURE_OR_TASK_NAME as given → names: a list/tuple of names, or a string of
    comma-separated names; each may be a task, a mixture, a glob or a BIG-bench path."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [n.strip() for part in parts for n in str(part).split(",") if n.strip()]


class TaskSource(Protocol):
    """Where tasks come from (`t0_jax.bin.score_data` wires the registry and BIG-bench files):
    the runner only sees rows, never the task layer."""

    def tasks(self, vocab_path: Optional[str]) -> list[ScoreTask]:
        """The tasks of MIXTURE_OR_TASK_NAME, tokenised with `vocab_path`."""

    def detokenize(self, ids, vocab_path: Optional[str]) -> str:
        """Text of decoded token ids (tasks without answer choices)."""


def default_activation_dtype(backend: Optional[str] = None) -> str:
    """bfloat16 on accelerators (twice the matrix throughput, half the activation memory;
    softmax and log-probabilities stay fp32 in the model), float32 on CPU (no bf16 gain)."""
    backend = backend or jax.default_backend()
    return "float32" if backend == "cpu" else "bfloat16"


def run(cfg: ScoreRun, source: TaskSource) -> dict:
    """Score one checkpoint (results dict) or select among step checkpoints (selection dict)."""
    _enable_compilation_cache(cfg.compilation_cache_dir)
    steps = selection.checkpoint_steps(cfg.checkpoint_path) if cfg.select_checkpoints else None
    if steps:
        return _select(cfg, source, steps)
    return score_checkpoint(cfg, source)


def _enable_compilation_cache(path: Optional[str]) -> None:
    if path is None or jax.config.jax_compilation_cache_dir:
        return  # already configured (env var, conftest, caller): keep it
    path = pathlib.Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _select(cfg: ScoreRun, source: TaskSource, steps) -> dict:
    """Score every step with one task list: each task is rendered once (first step) and the
    compiled programs are shared (`scorer.scoring_program`), so a step after the first costs
    only its checkpoint load and the device work."""
    overall, tasks = {}, {}
    for step, folder in steps:
        log.info("checkpoint selection: scoring step %d (%s)", step, folder)
        results = score_checkpoint(dataclasses.replace(
            cfg, checkpoint_path=str(folder), output_dir=storage.join(cfg.output_dir,
                                                                      f"step_{step}")),
            source, tasks)
        overall[step] = results.get("overall", {})
    out = selection.selection_report(overall, cfg.selection_metric)
    if jax.process_index() == 0:
        selection.write_selection(cfg.output_dir, out)
    log.info("checkpoint selection: best step %s (%s = %s)", out["best_step"], out["metric"],
             out["best_value"])
    return out


# ----------------------------------------------------------------------------- model


def load_model(cfg: ScoreRun):
    """(model, params on the mesh, mesh, vocab path, step) for `cfg.checkpoint_path`.

    Our Orbax format is restored straight into its shards (no host copy of the whole model);
    Hugging Face and T5X checkpoints are converted on the host, then placed.
    """
    from t0_jax.convert import auto, t0_format  # noqa: PLC0415
    from t0_jax.model.config import T5Config  # noqa: PLC0415
    from t0_jax.parallel import mesh as mesh_lib  # noqa: PLC0415

    mesh = mesh_lib.make_mesh(cfg.num_partitions)
    fmt, concrete = auto.resolve(cfg.checkpoint_path)
    if fmt == "t0_jax":
        model = _model(T5Config.from_dict(t0_format.read_config(concrete)["config"]), cfg)
        abstract = model.abstract_params()
        loaded = auto.load_checkpoint(concrete, dtype=cfg.param_dtype,
                                      shardings=_param_shardings(model, mesh, abstract))
        params = loaded.params
    else:
        loaded = auto.load_checkpoint(concrete, dtype=cfg.param_dtype)
        model = _model(loaded.config, cfg)
        shardings = _param_shardings(model, mesh, loaded.params)
        params = jax.tree.map(lambda x, s: to_global(np.asarray(x), s), loaded.params, shardings)
    log.info("loaded %s", loaded.summary())
    return model, params, mesh, cfg.vocab_path or loaded.vocab_path, loaded.step


def _model(config, cfg: ScoreRun):
    from t0_jax.model.model import EncoderDecoderModel  # noqa: PLC0415

    config = config.replace(dropout_rate=0.0,
                            dtype=cfg.activation_dtype or default_activation_dtype())
    return EncoderDecoderModel(config)


def _param_shardings(model, mesh, abstract_params):
    """Logical axes → NamedShardings: model-parallel over `model`, replicated over `data`."""
    from t0_jax.parallel import sharding  # noqa: PLC0415

    return sharding.logical_to_sharding(model.params_axes(), mesh, DEFAULT_RULES,
                                        abstract_tree=abstract_params)


# ----------------------------------------------------------------------------- tasks


# ----------------------------------------------------------------------------- scoring


def score_checkpoint(cfg: ScoreRun, source: TaskSource,
                     task_lists: Optional[dict] = None) -> dict:
    """Score one checkpoint. `task_lists` {vocabulary: tasks} is kept by the caller to reuse
    rendered tasks across checkpoints (selection); tasks depend on the vocabulary only."""
    model, params, mesh, vocab, step = load_model(cfg)
    task_lists = {} if task_lists is None else task_lists
    key = _vocab_key(vocab)
    if key not in task_lists:
        task_lists[key] = source.tasks(vocab)
    tasks = task_lists[key]
    fingerprint = {"checkpoint": storage.absolute(cfg.checkpoint_path), "step": step,
                   "split": cfg.split, "max_examples": cfg.max_examples,
                   "length_normalized": cfg.length_normalized, "convention": cfg.convention,
                   "activation_dtype": model.config.dtype,
                   "max_input_length": cfg.batching.max_input_length,
                   "max_target_length": cfg.batching.max_target_length}
    done = _finished_tasks(cfg.output_dir, [t.name for t in tasks], fingerprint)
    scorer = Scorer(model, params, mesh, cfg.batching, rules=DEFAULT_RULES)
    generator = Generator(model, params, mesh, cfg.batching)
    for task in tasks:
        if task.name in done:
            log.info("task %s: finished earlier, skipped (%s)", task.name, cfg.output_dir)
            continue
        start = time.perf_counter()
        rows = task.rows()
        if any(r["choice"] >= 0 for r in rows) or not rows:
            records, result = _rank_task(task, rows, scorer, cfg)
        else:
            detokenize = functools.partial(source.detokenize, vocab_path=vocab)
            records, result = _generate_task(task, rows, generator, detokenize, cfg)
        seconds = time.perf_counter() - start
        result |= {"dataset": task.dataset_label, "template": task.template,
                   "seconds": round(seconds, 3),
                   "examples_per_second": round(result["num_examples"] / max(seconds, 1e-9), 2)}
        log.info("task %s: accuracy %s over %d examples (%.1f examples/s)", task.name,
                 result["accuracy"], result["num_examples"], result["examples_per_second"])
        if jax.process_index() == 0:
            report.write_task(cfg.output_dir, task.name, records,
                              {"task": task.name, "fingerprint": fingerprint, "result": result})
    return _write_outputs(cfg, tasks, fingerprint, step)


def _vocab_key(vocab_path) -> str:
    """The vocabulary's identity: its file content (each step checkpoint keeps its own copy of
    the same spiece.model), else the path as given (None, a gs:// default)."""
    import hashlib  # noqa: PLC0415

    if vocab_path and storage.isfile(vocab_path):
        return hashlib.sha256(storage.read_bytes(vocab_path)).hexdigest()
    return str(vocab_path)


def _finished_tasks(output_dir, names, fingerprint) -> set:
    """Tasks to skip; decided on process 0 and shared, so every process skips the same ones."""
    flags = np.array([report.finished_task(output_dir, n, fingerprint) is not None
                      for n in names], np.int32)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        flags = np.asarray(multihost_utils.broadcast_one_to_all(flags))
    return {n for n, f in zip(names, flags) if f}


def _progress(task_name: str, total: int, enabled: bool):
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=task_name[-48:], unit="ex", leave=False, dynamic_ncols=True,
                disable=not enabled or jax.process_index() != 0)


def _rank_task(task: ScoreTask, rows: list, scorer: Scorer, cfg: ScoreRun):
    rows = [r for r in rows if r["choice"] >= 0]
    n_examples = len({r["example"] for r in rows})
    start = time.perf_counter()
    with _progress(task.name, n_examples, cfg.progress) as bar:
        ll = scorer.score([r["example"] for r in rows], [r["inputs"] for r in rows],
                          [r["targets"] for r in rows], on_examples=bar.update)
    seconds = time.perf_counter() - start
    limit = scorer.options.max_target_length
    scores = [aggregate.ChoiceScore(
        task=task.name, example=r["example"], choice=r["choice"], choice_text=r["target_text"],
        log_likelihood=float(v), num_tokens=min(len(r["targets"]), limit or len(r["targets"])),
        is_correct=r["is_correct"]) for r, v in zip(rows, ll)]
    scores.sort(key=lambda s: (s.example, s.choice))
    result = aggregate.task_accuracy(aggregate.predict(scores), cfg.length_normalized).get(
        task.name, _empty_result())
    return [s.to_json() for s in scores], result | _truncation(task.name, rows, cfg.batching) | {
        "kind": "rank", "num_rows": len(scores), "scoring_seconds": round(seconds, 3)}


def _truncation(task_name: str, rows: list, options: BatchingOptions) -> dict:
    """Count (and warn about) rows cut to max_input_length / max_target_length, as t-zero does."""
    inputs = sum(options.max_input_length is not None and len(r["inputs"]) >
                 options.max_input_length for r in rows)
    targets = sum(options.max_target_length is not None and len(r["targets"]) >
                  options.max_target_length for r in rows)
    if inputs or targets:
        log.warning("task %s: %d rows' inputs cut to %s tokens, %d targets cut to %s tokens "
                    "(raise score_run.max_input_length / max_target_length to keep them whole)",
                    task_name, inputs, options.max_input_length, targets,
                    options.max_target_length)
    return {"num_truncated_inputs": int(inputs), "num_truncated_targets": int(targets)}


def _empty_result() -> dict:
    return {"accuracy": None, "accuracy_sum_log_likelihood": None,
            "accuracy_length_normalized": None, "num_examples": 0, "num_correct": 0,
            "num_unlabeled": 0}


def _generate_task(task: ScoreTask, rows: list, generator: Generator, detokenize,
                   cfg: ScoreRun):
    max_len = decode_length([r["targets"] for r in rows], generator.options)
    in_mesh = mesh_context(generator.mesh, DEFAULT_RULES)  # decode with activation constraints
    with _progress(task.name, len(rows), cfg.progress) as bar, in_mesh:
        decoded = generator.generate([r["inputs"] for r in rows], max_len, on_examples=bar.update)
    predictions = [detokenize(ids) for ids in decoded]
    targets = [r["target_text"] for r in rows]
    metrics, unsupported = text_metrics.compute(task.metrics, predictions, targets)
    records = [{"task": task.name, "example": r["example"], "prediction": p, "target": t}
               for r, p, t in zip(rows, predictions, targets)]
    return records, _truncation(task.name, rows, generator.options) | {
        "kind": "generation", "accuracy": metrics["exact_match"], "metrics": metrics,
        "unsupported_metrics": unsupported, "num_examples": len(rows),
        "max_decode_length": max_len}


# ----------------------------------------------------------------------------- outputs


def _write_outputs(cfg: ScoreRun, tasks: list[ScoreTask], fingerprint: dict, step) -> dict:
    """Aggregate every finished task from disk (this run's and earlier ones) into the reports.

    Only process 0 (which wrote the task files) does this; the others return {}.
    """
    if jax.process_index() != 0:
        return {}
    task_results, scores, generations = {}, [], []
    for task in tasks:
        finished = report.finished_task(cfg.output_dir, task.name, fingerprint)
        if finished is None:
            raise RuntimeError(f"task {task.name} has no finished record in {cfg.output_dir}/"
                               f"{report.TASKS_DIR} after scoring; is OUTPUT_DIR writable?")
        marker, records = finished
        task_results[task.name] = marker["result"]
        (scores if marker["result"].get("kind") == "rank" else generations).extend(records)
    datasets = aggregate.dataset_summary(task_results,
                                         {t: r["dataset"] for t, r in task_results.items()})
    results = {"checkpoint": fingerprint["checkpoint"], "step": step, "split": cfg.split,
               "mixture_or_task": ",".join(split_names(cfg.mixture_or_task_name)),
               "ranking": "length_normalized" if cfg.length_normalized else "sum_log_likelihood",
               "convention": conventions.describe(cfg.convention),
               "tasks": task_results, "datasets": datasets,
               "overall": aggregate.overall_summary(task_results, datasets)}
    comparison = _published_block(cfg, datasets)
    if comparison is not None:
        results["published"] = comparison
        log.info("published figures beside yours:\n%s", published.format_table(comparison))
    report.write_results(cfg.output_dir, results, scores, generations)
    plots.accuracy_boxplot(datasets, task_results,
                           storage.join(cfg.output_dir, plots.PLOT_FILE),
                           title=f"{_short_title(cfg.mixture_or_task_name)} ({cfg.split})",
                           published=comparison)
    return results


def _published_block(cfg: ScoreRun, datasets: dict) -> Optional[dict]:
    """The comparison with the published T0 figures (None: no published dataset scored, or
    PUBLISHED_MODEL='none')."""
    table = published.load()
    models = published.choose_models(table, cfg.published_model, cfg.checkpoint_path)
    return published.report_block(datasets, table, models, cfg.convention, cfg.max_examples)


def _short_title(spec) -> str:
    names = split_names(spec)
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"
