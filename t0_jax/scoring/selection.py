"""Checkpoint selection: score every step of a training run, keep the best one.

T0 trained for 25k steps and picked the checkpoint with the best accuracy on
`t0_train_score_eval` (REFERENCE.md §1). A CHECKPOINT_PATH whose sub-folders are checkpoints
named `<step>` (our trainer, Orbax) or `checkpoint_<step>` (T5X) — and that is not itself a
checkpoint — is scored step by step into `OUTPUT_DIR/step_<step>/`, and the steps are ranked by
one number of each step's `results.json["overall"]`:

  median_of_medians (default)  median over datasets of the per-dataset median over templates:
                               the paper's headline statistic, robust to odd prompts and to
                               datasets with many templates;
  mean_accuracy                mean over every task (template).

Ties go to the EARLIEST step (less training, same validation accuracy).
"""
from __future__ import annotations

import json
import os
import re
from typing import Mapping, Optional

from t0_jax import storage

STEP_DIR = re.compile(r"^(?:checkpoint_)?(\d+)$")
METRICS = ("median_of_medians", "mean_accuracy", "mean_of_medians")
SELECTION_FILE = "selection.json"


def looks_like_checkpoint(path: str) -> bool:
    """A single checkpoint of a format `convert.auto.load_checkpoint` reads (local or on
    object storage: one listing)."""
    if storage.isfile(path):
        return True
    return bool(set(storage.listdir(path)) & {
        "params", "model_config", "config.json", "checkpoint", "_METADATA", "manifest.ocdbt"})


def checkpoint_steps(path) -> Optional[list[tuple[int, str]]]:
    """[(step, folder)] sorted by step when `path` is a folder of step checkpoints, else None."""
    path = os.fspath(path)
    if not storage.isdir(path) or looks_like_checkpoint(path):
        return None
    steps = []
    for name in storage.listdir(path):
        match = STEP_DIR.match(name)
        child = storage.join(path, name)
        if match and looks_like_checkpoint(child):
            steps.append((int(match.group(1)), child))
    return sorted(steps) or None


def best_step(overall_by_step: Mapping[int, dict], metric: str = "median_of_medians") -> int:
    """The step with the highest `metric` (earliest on ties; steps without a value lose)."""
    if metric not in METRICS:
        raise ValueError(f"checkpoint selection metric {metric!r} is not one of {METRICS}.")
    if not overall_by_step:
        raise ValueError("no scored checkpoint to select from.")
    scored = [(s, o.get(metric)) for s, o in sorted(overall_by_step.items())]
    best = max((v for _, v in scored if v is not None), default=None)
    return next(s for s, v in scored if v == best) if best is not None else scored[0][0]


def selection_report(overall_by_step: Mapping[int, dict], metric: str) -> dict:
    best = best_step(overall_by_step, metric)
    return {"metric": metric, "best_step": best, "best_value": overall_by_step[best].get(metric),
            "steps": {str(s): o for s, o in sorted(overall_by_step.items())}}


def write_selection(output_dir, report: dict) -> str:
    path = storage.join(output_dir, SELECTION_FILE)
    storage.write_text(path, json.dumps(report, indent=1, sort_keys=True))
    return path
