"""The T0 mixtures (training, ablations, evaluation) and the 500,000-example cap.

Importing this module registers, with seqio, over the tasks of `registry`:

  t0_train                      every template of the BASE training datasets (T0)
  t0+_train / t0++_train        ... plus GPT_EVAL / plus GPT_EVAL and SGLUE datasets
  t0_train_one_og_prompt        p=1: per BASE dataset, its first original-task template by name
  t0_train_all_og_prompts       p≈5.7: every original-task template of the BASE datasets
  (prompt_selection_rates builds these and any other prompt/dataset ablation, e.g. the demo's)
  t0_eval_score_eval            score_eval twins of the held-out datasets' original-task templates
  t0_train_score_eval           score_eval twins of original-task BASE training templates, minus
                                tasks/selection.yaml's exclusions (checkpoint selection)
  bias_fairness_eval_score_eval score_eval twins of every BIAS_FAIRNESS template

Training rates are the T0 cap, `500000 // num_templates if train_size > 500000 else train_size`,
with num_templates counting ALL templates of the dataset and train_size from the catalogue: a
sampling rate, not a truncation, known without reading data. Evaluation rates are the number of
examples of the evaluated split (at most 500,000); that needs the data, so those mixtures carry
an `ExampleCountRate` that seqio calls when the mixture is read, and `mixture_rates` reports
None for them unless asked to count (`resolve=True`).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import seqio

from t0_jax.data import catalogue, registry

MAX_EXAMPLES_PER_DATASET = 500_000

_MIXTURES: dict = {}  # name -> {task name: int rate or ExampleCountRate}


def capped_rate(train_size: int, num_templates: int) -> int:
    """T0's per-task rate: big datasets share 500,000 examples among their templates."""
    if train_size > MAX_EXAMPLES_PER_DATASET:
        return MAX_EXAMPLES_PER_DATASET // num_templates
    return train_size


@dataclasses.dataclass(frozen=True)
class ExampleCountRate:
    """seqio rate function: the task's number of examples in `split`, capped at `maximum`."""

    split: str = "validation"
    maximum: int = MAX_EXAMPLES_PER_DATASET

    def __call__(self, task: seqio.Task) -> float:
        return float(min(task.num_input_examples(self.split), self.maximum))


def _rate(info: registry.TaskInfo) -> int:
    if info.train_size is None:
        raise ValueError(f"task '{info.name}' has no train size, so its mixture cap is unknown; "
                         "register its dataset with register_dataset_tasks(..., train_size=N).")
    return capped_rate(info.train_size, info.num_templates)


# ----------------------------------------------------------------------------- selections


def _original(infos) -> list:
    return [info for info in infos if info.original_task]


def _first_original(infos) -> list:
    return _original(infos)[:1]  # infos are sorted by template name


# The prompt ablation (T0 paper Fig. 6): which templates of a dataset a training mixture keeps.
PROMPT_SELECTIONS = {
    "all": list,                  # every template (t0_train; p = 8.03 in the paper)
    "all_og": _original,          # every original-task template (p = 5.7)
    "one_og": _first_original,    # the first original-task template by name (p = 1)
}


def prompt_selection_rates(datasets, prompts: str = "all", exclude_tasks=()) -> dict:
    """{task: T0-capped rate} of the templates of `datasets` that `prompts` selects.

    `datasets`: (hf_name, subset) keys of registered datasets; `prompts`: a PROMPT_SELECTIONS key;
    `exclude_tasks`: task names never trained on (e.g. a demo's unseen templates), removed
    before the selection. The cap counts ALL templates of a dataset, as T0's does. The T0
    mixtures, their prompt ablations and the demo's ablations are all built here.
    """
    if prompts not in PROMPT_SELECTIONS:
        raise ValueError(f"unknown prompt selection {prompts!r}; "
                         f"known: {', '.join(PROMPT_SELECTIONS)}")
    keep, excluded = PROMPT_SELECTIONS[prompts], set(exclude_tasks)
    rates = {}
    for key in datasets:
        infos = [i for i in registry.dataset_tasks(*key) if i.name not in excluded]
        for info in keep(infos):
            rates[info.name] = _rate(info)
    return rates


def _train_rates(roles, prompts: str = "all") -> dict:
    return prompt_selection_rates([e.key for e in catalogue.train_datasets(*roles)], prompts)


def _rounds_of(entry) -> list:
    rounds = catalogue.load_selection().rounds.get(entry.hf_name) if not entry.subset else None
    return list(rounds) if rounds else [None]


def _held_out_rates() -> dict:
    selection = catalogue.load_selection()
    rate = ExampleCountRate(selection.held_out_split)
    rates = {}
    for key in selection.held_out:
        entry = catalogue.find_entry(*key)
        for round_name in _rounds_of(entry):
            for info in _original(registry.dataset_tasks(*key, round_name=round_name)):
                if info.score_eval:
                    rates[info.score_eval] = rate
    return rates


def _train_score_eval_rates() -> dict:
    selection = catalogue.load_selection()
    rate = ExampleCountRate(selection.train_score_eval_split)
    rates = {}
    for entry in catalogue.train_datasets("BASE"):
        if entry.key in selection.train_score_eval_exclude_datasets:
            continue
        for info in _original(registry.dataset_tasks(*entry.key)):
            if info.score_eval and info.score_eval not in selection.train_score_eval_exclude_tasks:
                rates[info.score_eval] = rate
    return rates


def _bias_fairness_rates() -> dict:
    rates = {}
    for entry in catalogue.eval_datasets("BIAS_FAIRNESS"):
        if entry.key in registry.missing_templates():
            continue  # listed by the T0 sheet, absent from promptsource 0.2.3
        for info in registry.dataset_tasks(*entry.key):
            if info.score_eval:
                rates[info.score_eval] = ExampleCountRate("validation")
    return rates


def t0_mixture_rates() -> dict:
    """{mixture name: {task: rate}} for every T0 mixture (module docstring)."""
    return {
        "t0_train": _train_rates(["BASE"]),
        "t0+_train": _train_rates(["BASE", "GPT_EVAL"]),
        "t0++_train": _train_rates(["BASE", "GPT_EVAL", "SGLUE"]),
        "t0_train_one_og_prompt": _train_rates(["BASE"], "one_og"),
        "t0_train_all_og_prompts": _train_rates(["BASE"], "all_og"),
        "t0_eval_score_eval": _held_out_rates(),
        "t0_train_score_eval": _train_score_eval_rates(),
        "bias_fairness_eval_score_eval": _bias_fairness_rates(),
    }


# ----------------------------------------------------------------------------- registration


def add_mixture(name: str, rates: dict) -> None:
    """Register {task: rate} as a seqio mixture (rates: numbers or seqio rate functions).

    The same definition again is a no-op, a different one under the same name an error.
    """
    if name in _MIXTURES:
        if _MIXTURES[name] == rates and name in seqio.MixtureRegistry.names():
            return
        if _MIXTURES[name] != rates:
            raise ValueError(f"mixture '{name}' is already registered with other tasks or rates;"
                             " pick another name.")
    elif name in seqio.MixtureRegistry.names():
        raise ValueError(f"a seqio mixture named '{name}' exists already; pick another name.")
    seqio.MixtureRegistry.add(name, sorted(rates.items()))
    _MIXTURES[name] = dict(rates)




def register_t0_mixtures() -> list:
    """Register every T0 mixture (idempotent). Returns their names."""
    registry.register_all()
    mixtures = t0_mixture_rates()
    for name, rates in mixtures.items():
        add_mixture(name, rates)
    return sorted(mixtures)


def _dataset_key(dataset) -> tuple:
    """(hf_name, subset) from a tuple or an `hf_name[/subset]` string naming registered tasks."""
    if not isinstance(dataset, str):
        hf_name, subset = dataset
        return hf_name, subset or None
    known = {catalogue.display_name(d, s): (d, s) for d, s, _ in registry.registered_datasets()}
    if dataset not in known:
        raise registry.UnknownNameError("dataset", dataset, known)
    return known[dataset]


def register_dataset_mixture(name: str, datasets, prompts: str = "all",
                             exclude_tasks=()) -> dict:
    """A training mixture of the templates of `datasets`, with T0's cap (d-ablations).

    `datasets`: (hf_name, subset) pairs or `hf_name[/subset]` strings whose tasks are
    registered (catalogue datasets are; others via registry.register_dataset_tasks);
    `prompts`, `exclude_tasks`: as prompt_selection_rates. Returns {task: rate}.
    """
    rates = prompt_selection_rates([_dataset_key(d) for d in datasets], prompts, exclude_tasks)
    if not rates:
        raise ValueError(f"mixture '{name}' would have no tasks; give at least one dataset.")
    add_mixture(name, rates)
    return dict(rates)


# ----------------------------------------------------------------------------- queries


def list_mixtures() -> list:
    """Names of the mixtures registered here, sorted."""
    return sorted(_MIXTURES)


def mixture_rates(name: str, resolve: bool = False) -> dict:
    """{task: rate} of a mixture, sorted by task. Count-based rates are None unless `resolve`
    (which reads each task's evaluated split through the data dir in effect)."""
    if name not in _MIXTURES:
        raise registry.UnknownNameError("mixture", name, _MIXTURES)
    out = {}
    for task, rate in sorted(_MIXTURES[name].items()):
        if callable(rate):
            rate = rate(seqio.TaskRegistry.get(task)) if resolve else None
        out[task] = rate
    return out


def rate_description(name: str) -> Optional[str]:
    """How a mixture's count-based rates are computed (None for fixed rates)."""
    rates = [r for r in _MIXTURES.get(name, {}).values() if callable(r)]
    if not rates:
        return None
    return (f"number of '{rates[0].split}' examples per task (at most {rates[0].maximum:,}), "
            "counted when the mixture is read")


register_t0_mixtures()
