"""What a scoring run leaves on disk, and the per-task records that make it resumable.

    OUTPUT_DIR/
      tasks/<task>.jsonl       rows of one finished task (choice scores, or generations)
      tasks/<task>.done.json   written last: the task's result + the run fingerprint
      scores.jsonl             every choice row: task, example, choice, choice_text,
                               log_likelihood, num_tokens, length_normalized, is_correct
      generations.jsonl        decoded outputs of tasks without answer choices (if any)
      results.json             per task/template, per dataset (spread over templates), overall
      results.csv              the same as a flat table (level = task | dataset)
      accuracy_boxplot.png     per-prompt accuracies per dataset

A task whose done marker carries the current fingerprint (checkpoint, split, example limit,
ranking) is not scored again. OUTPUT_DIR may be local or on object storage (`gs://`), where
nothing can be renamed, so completion is a marker, never a rename: a task's old marker is
removed first, its rows are written whole (`storage.write_bytes`: a temporary file and
`os.replace` locally, one object upload remotely), and its marker is written LAST
(`storage.mark_complete`). A run killed anywhere in between leaves no marker, and the rerun
scores that task again.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Iterable, Optional

from t0_jax import storage

TASKS_DIR = "tasks"
SCORES_FILE = "scores.jsonl"
GENERATIONS_FILE = "generations.jsonl"
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
DONE_SUFFIX = ".done.json"  # tasks/<task>.done.json: the completion marker of one task
CSV_COLUMNS = ("level", "dataset", "task", "template", "accuracy", "accuracy_sum_log_likelihood",
               "accuracy_length_normalized", "median", "mean", "min", "max", "q1", "q3",
               "num_templates", "num_examples", "num_unlabeled", "metrics", "convention",
               # level = published: a published T0 model beside your figures, in percent
               "published_model", "mean_pct", "published_mean_pct", "mean_difference_pct",
               "median_pct", "published_median_pct", "median_difference_pct", "source")


class ResultsWriteError(OSError):
    """A write failed (disk full, permissions); what finished before it stays on disk."""


def _write_failure(output_dir, what: str, error: OSError) -> ResultsWriteError:
    folder = storage.join(output_dir, TASKS_DIR)
    try:
        finished = len(storage.glob(storage.join(folder, "*" + DONE_SUFFIX)))
    except OSError:
        finished = 0
    return ResultsWriteError(
        f"could not write {what} ({error.filename or output_dir}: {error.strerror or error}); "
        f"the {finished} task(s) finished before it are intact in {folder} and are not scored "
        "again when you rerun the same command. Free disk space or fix the permissions first.")


def _atomic_write(path: str, text: str) -> None:
    """Readers see the old file or the new one, never half of it (see the module docstring)."""
    storage.write_text(path, text)


def _jsonl(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def task_paths(output_dir, task: str) -> tuple[str, str]:
    """(rows file, done marker) of `task` under OUTPUT_DIR."""
    folder = storage.join(output_dir, TASKS_DIR)
    return storage.join(folder, f"{task}.jsonl"), storage.join(folder, task + DONE_SUFFIX)


def write_task(output_dir, task: str, records: list[dict], marker: dict) -> None:
    """Old marker out, rows, marker last: the marker's presence means the rows are complete
    (and were written under the fingerprint it carries)."""
    rows_path, done_path = task_paths(output_dir, task)
    try:
        storage.remove(done_path)  # rows about to change: no marker may vouch for them
        _atomic_write(rows_path, _jsonl(records))
        storage.mark_complete(storage.dirname(done_path), storage.basename(done_path), marker)
    except OSError as error:
        raise _write_failure(output_dir, f"the results of task {task}", error) from error


def finished_task(output_dir, task: str, fingerprint: dict) -> Optional[tuple[dict, list[dict]]]:
    """(marker, rows) of a task finished under the same fingerprint, else None."""
    rows_path, done_path = task_paths(output_dir, task)
    marker = storage.read_marker(storage.dirname(done_path), storage.basename(done_path))
    if marker is None or marker.get("fingerprint") != fingerprint:
        return None
    if not storage.exists(rows_path):
        return None
    lines = storage.read_text(rows_path).splitlines()
    return marker, [json.loads(line) for line in lines if line.strip()]


def write_results(output_dir, results: dict, scores: list[dict], generations: list[dict]) -> None:
    try:
        _atomic_write(storage.join(output_dir, SCORES_FILE), _jsonl(scores))
        if generations:
            _atomic_write(storage.join(output_dir, GENERATIONS_FILE), _jsonl(generations))
        _atomic_write(storage.join(output_dir, RESULTS_JSON),
                      json.dumps(results, indent=1, sort_keys=True))
        _write_csv(storage.join(output_dir, RESULTS_CSV), results)
    except OSError as error:
        raise _write_failure(output_dir, "the combined results", error) from error


def _write_csv(path: str, results: dict) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in csv_rows(results):
        writer.writerow(row)
    _atomic_write(path, text.getvalue())


def csv_rows(results: dict) -> list[dict]:
    """results.csv's rows: one per task (template), one per dataset (spread over templates,
    fractions), and one per (published dataset, published model) with your figure, the
    published one and the difference in percent (results.json "published")."""
    convention = (results.get("convention") or {}).get("name", "")
    rows = []
    for task, r in sorted(results["tasks"].items()):
        metrics = r.get("metrics")
        rows.append({**r, "level": "task", "task": task, "convention": convention,
                     "metrics": json.dumps(metrics, sort_keys=True) if metrics else ""})
    for dataset, d in sorted(results["datasets"].items()):
        rows.append({**{k: v for k, v in d.items() if k != "tasks"}, "level": "dataset",
                     "dataset": dataset, "convention": convention})
    for key, p in ((results.get("published") or {}).get("datasets") or {}).items():
        for model, figure in p["published"].items():
            rows.append({
                "level": "published", "dataset": key, "convention": convention,
                "num_templates": p["measured"]["num_templates"], "published_model": model,
                "mean_pct": p["measured"]["mean"], "published_mean_pct": figure["mean"],
                "mean_difference_pct": figure["mean_difference"],
                "median_pct": p["measured"]["median"], "published_median_pct": figure["median"],
                "median_difference_pct": figure["median_difference"],
                "source": figure["source"]})
    return rows
