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
ranking) is not scored again; files are written to a temporary name and renamed, so a killed
run never leaves a marker beside a half-written task file.
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
from typing import Iterable, Optional

TASKS_DIR = "tasks"
SCORES_FILE = "scores.jsonl"
GENERATIONS_FILE = "generations.jsonl"
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
CSV_COLUMNS = ("level", "dataset", "task", "template", "accuracy", "accuracy_sum_log_likelihood",
               "accuracy_length_normalized", "median", "mean", "min", "max", "q1", "q3",
               "num_templates", "num_examples", "num_unlabeled", "metrics")


class ResultsWriteError(OSError):
    """A write failed (disk full, permissions); what finished before it stays on disk."""


def _write_failure(output_dir, what: str, error: OSError) -> ResultsWriteError:
    folder = pathlib.Path(output_dir) / TASKS_DIR
    finished = len(list(folder.glob("*.done.json"))) if folder.is_dir() else 0
    return ResultsWriteError(
        f"could not write {what} ({error.filename or output_dir}: {error.strerror or error}); "
        f"the {finished} task(s) finished before it are intact in {folder} and are not scored "
        "again when you rerun the same command. Free disk space or fix the permissions first.")


def _atomic_write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonl(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def task_paths(output_dir, task: str) -> tuple[pathlib.Path, pathlib.Path]:
    folder = pathlib.Path(output_dir) / TASKS_DIR
    return folder / f"{task}.jsonl", folder / f"{task}.done.json"


def write_task(output_dir, task: str, records: list[dict], marker: dict) -> None:
    """Rows first, marker last: the marker's presence means the rows are complete."""
    rows_path, done_path = task_paths(output_dir, task)
    try:
        _atomic_write(rows_path, _jsonl(records))
        _atomic_write(done_path, json.dumps(marker, indent=1, sort_keys=True))
    except OSError as error:
        raise _write_failure(output_dir, f"the results of task {task}", error) from error


def finished_task(output_dir, task: str, fingerprint: dict) -> Optional[tuple[dict, list[dict]]]:
    """(marker, rows) of a task finished under the same fingerprint, else None."""
    rows_path, done_path = task_paths(output_dir, task)
    if not done_path.is_file() or not rows_path.is_file():
        return None
    marker = json.loads(done_path.read_text())
    if marker.get("fingerprint") != fingerprint:
        return None
    with rows_path.open() as f:
        return marker, [json.loads(line) for line in f if line.strip()]


def write_results(output_dir, results: dict, scores: list[dict], generations: list[dict]) -> None:
    out = pathlib.Path(output_dir)
    try:
        _atomic_write(out / SCORES_FILE, _jsonl(scores))
        if generations:
            _atomic_write(out / GENERATIONS_FILE, _jsonl(generations))
        _atomic_write(out / RESULTS_JSON, json.dumps(results, indent=1, sort_keys=True))
        _write_csv(out / RESULTS_CSV, results)
    except OSError as error:
        raise _write_failure(output_dir, "the combined results", error) from error


def _write_csv(path: pathlib.Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for task, r in sorted(results["tasks"].items()):
            metrics = r.get("metrics")
            writer.writerow({**r, "level": "task", "task": task,
                             "metrics": json.dumps(metrics, sort_keys=True) if metrics else ""})
        for dataset, d in sorted(results["datasets"].items()):
            writer.writerow({**{k: v for k, v in d.items() if k != "tasks"},
                             "level": "dataset", "dataset": dataset})
    os.replace(tmp, path)
