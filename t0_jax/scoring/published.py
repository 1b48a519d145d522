"""Published per-dataset results of the T0 models, and a run's figures set beside them.

`tasks/published_results.yaml` holds the figures (percent accuracy, rank classification, mean
and median over prompts) with the source of each; `load()` reads and checks it. `compare()`
takes a run's per-dataset summary (`aggregate.dataset_summary`) and, for every published
dataset whose report labels were all scored, puts the measured figure beside the published
one — mean beside mean, median beside median — with the difference in percentage points.

A published dataset over several labels (ANLI = the mean of R1, R2 and R3, as the model cards
give "ANLI (avg)") is measured the same way: the mean over its labels of each label's mean over
prompts. Its median is compared only per label (the paper's medians are per round), so the
combined row carries no measured median.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from t0_jax import resources

PUBLISHED_FILE = "published_results.yaml"
AUTO = "auto"  # PUBLISHED_MODEL default: the model the checkpoint is named for, else all
NONE = "none"  # PUBLISHED_MODEL that turns the comparison off
STATS = ("mean", "median")


class PublishedResultsError(ValueError):
    """The published-results file is inconsistent (a figure without source, a bad ANLI mean)."""


@dataclasses.dataclass(frozen=True)
class Figure:
    """One model's published figures on one dataset (percent; None = not published/read)."""

    mean: Optional[float]
    median: Optional[float]
    source: str  # a key of the file's `sources`
    rounds: Mapping[str, Mapping[str, Optional[float]]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Published:
    sources: Mapping[str, dict]
    datasets: Mapping[str, dict]  # key -> {"name", "labels"}
    models: Mapping[str, dict]  # name -> {"hf_repo", "results": {dataset: Figure}, "missing"}

    def figures(self, model: str) -> dict[str, Figure]:
        return self.models[model]["results"]

    def source_url(self, key: str) -> str:
        return self.sources[key]["url"]


def published_path() -> pathlib.Path:
    return resources.tasks_dir() / PUBLISHED_FILE


def load(path=None) -> Published:
    """Read and check the published-results file (see `check`)."""
    import yaml  # noqa: PLC0415

    path = pathlib.Path(path) if path else published_path()
    raw = yaml.safe_load(path.read_text())
    models = {}
    for name, model in (raw.get("models") or {}).items():
        results = {key: Figure(mean=_number(f.get("mean")), median=_number(f.get("median")),
                               source=f.get("source"), rounds=f.get("rounds") or {})
                   for key, f in (model.get("results") or {}).items()}
        models[name] = {**model, "results": results}
    published = Published(sources=raw.get("sources") or {}, datasets=raw.get("datasets") or {},
                          models=models)
    check(published, path)
    return published


def _number(value) -> Optional[float]:
    return None if value is None else float(value)


def check(published: Published, path="published results") -> None:
    """Every figure names a known source and a known dataset; where ANLI's rounds are given,
    the published mean is their mean (to the 0.05 of one-decimal rounding)."""
    problems = []
    for model, info in published.models.items():
        for key, figure in info["results"].items():
            where = f"models.{model}.results.{key}"
            if key not in published.datasets:
                problems.append(f"{where}: unknown dataset (add it under `datasets`)")
            if figure.source not in published.sources:
                problems.append(f"{where}: source {figure.source!r} is not one of `sources`")
            problems += _round_problems(where, figure, published.datasets.get(key, {}))
    for key, source in published.sources.items():
        if not source.get("url"):
            problems.append(f"sources.{key}: no url")
    if problems:
        raise PublishedResultsError(f"{path}: " + "; ".join(problems))


def _round_problems(where: str, figure: Figure, dataset: dict) -> list[str]:
    if not figure.rounds:
        return []
    labels = dataset.get("labels", [])
    if sorted(figure.rounds) != sorted(labels):
        return [f"{where}.rounds: expected rounds {labels}, found {sorted(figure.rounds)}"]
    means = [figure.rounds[label].get("mean") for label in labels]
    if figure.mean is not None and None not in means and abs(np.mean(means) - figure.mean) > 0.05:
        return [f"{where}: mean {figure.mean} is not the mean of its rounds {means} "
                f"({np.mean(means):.2f})"]
    return []


# ----------------------------------------------------------------------------- comparison


def choose_models(published: Published, spec: Union[str, Sequence[str], None],
                  checkpoint_path: str = "") -> list[str]:
    """PUBLISHED_MODEL → model names. 'auto' (or None): the model a folder of the checkpoint
    path is named for (…/T0_3B/…, the Hub cache's models--bigscience--T0pp/…), else every model
    with figures; 'none': no comparison; else one name or a list/comma string of names."""
    if spec is None or spec == AUTO:
        parts = {p.lower() for p in re.split(r"[/\\]|--", str(checkpoint_path)) if p}
        named = [m for m, info in published.models.items()
                 if {m.lower(), str(info.get("hf_repo", "")).split("/")[-1].lower()} & parts]
        return named or [m for m, info in published.models.items() if info["results"]]
    names = [spec] if isinstance(spec, str) else list(spec)
    names = [n.strip() for part in names for n in str(part).split(",") if n.strip()]
    if names == [NONE]:
        return []
    unknown = [n for n in names if n not in published.models]
    if unknown:
        raise ValueError(f"PUBLISHED_MODEL {unknown} not in {published_path()}; choose from "
                         f"{sorted(published.models)}, '{AUTO}' or '{NONE}'.")
    return names


def compare(datasets: Mapping[str, dict], published: Published,
            models: Sequence[str]) -> dict:
    """{dataset key: measured figures, and per model the published ones with differences}.

    `datasets` is `results["datasets"]` (accuracies as fractions); everything returned is in
    percent. Only published datasets whose labels were all scored appear.
    """
    out = {}
    for key, spec in published.datasets.items():
        labels = list(spec["labels"])
        if not all(label in datasets for label in labels):
            continue
        measured = _measured(datasets, labels)
        rows = {}
        for model in models:
            figure = published.figures(model).get(key)
            if figure is not None:
                rows[model] = _beside(measured, figure, published)
        out[key] = {"name": spec.get("name", key), "labels": labels, "measured": measured,
                    "published": rows}
    return out


def _measured(datasets: Mapping[str, dict], labels: list[str]) -> dict:
    means = [datasets[label]["mean"] for label in labels]
    medians = [datasets[label]["median"] for label in labels]
    single = len(labels) == 1
    return {"mean": _percent(np.mean(means)) if None not in means else None,
            "median": _percent(medians[0]) if single and medians[0] is not None else None,
            "num_templates": sum(datasets[label]["num_templates"] for label in labels)}


def _percent(fraction) -> float:
    return round(100.0 * float(fraction), 4)


def _beside(measured: dict, figure: Figure, published: Published) -> dict:
    row = {"source": published.source_url(figure.source)}
    for stat in STATS:
        value = getattr(figure, stat)
        row[stat] = value
        mine = measured[stat]
        row[f"{stat}_difference"] = (round(mine - value, 4)
                                     if value is not None and mine is not None else None)
    return row


def report_block(datasets: Mapping[str, dict], published: Published, models: Sequence[str],
                 convention: str, max_examples: Optional[int]) -> Optional[dict]:
    """results.json's "published" entry, or None when no published dataset was scored."""
    rows = compare(datasets, published, models) if models else {}
    if not rows:
        return None
    caveats = []
    if convention != "t_zero":
        caveats.append(f"scored with the {convention} convention; the published figures used "
                       "t-zero's (inputs without EOS, targets with EOS)")
    if max_examples is not None:
        caveats.append(f"only the first {max_examples} examples of each prompt were scored")
    return {"models": list(models), "units": "percent accuracy; difference = yours - published",
            "datasets": rows, "caveats": caveats}


def format_table(block: dict) -> str:
    """The comparison as aligned text lines (logged and printed by t0-score)."""
    lines = [f"{'dataset':<28} {'model':<7} {'mean':>6} {'publ.':>6} {'diff':>6}   "
             f"{'median':>6} {'publ.':>6} {'diff':>6}"]
    for row in block["datasets"].values():
        measured = row["measured"]
        for model, figure in (row["published"] or {"-": {}}).items():
            lines.append(f"{row['name'][:28]:<28} {model:<7} {_cell(measured['mean'])} "
                         f"{_cell(figure.get('mean'))} {_cell(figure.get('mean_difference'))}   "
                         f"{_cell(measured['median'])} {_cell(figure.get('median'))} "
                         f"{_cell(figure.get('median_difference'))}")
    return "\n".join(lines + [f"({c})" for c in block.get("caveats", [])])


def _cell(value) -> str:
    return f"{value:>6.1f}" if value is not None else f"{'-':>6}"
