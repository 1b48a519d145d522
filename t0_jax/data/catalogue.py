"""The project's dataset catalogue: which datasets T0 trains and evaluates on, and their sizes.

Two files under `tasks/` (see tasks/README.md):
    datasets.csv     one row per (Hugging Face name, subset): cluster, `do_train` role
                     (BASE = T0, GPT_EVAL = T0+, SGLUE = T0++), `do_eval` role (BASE = held-out,
                     BIAS_FAIRNESS), `train_size` (the HF train split; sets the mixture cap),
                     `split_sizes` (optional, `split:n;...`: the example count of every split of
                     the held-out suite, from the dataset cards; `t0-data` checks the mirror
                     against them).
    selection.yaml   the choices the CSV cannot hold: datasets split into rounds (ANLI), the
                     held-out evaluation list and split, `t0_train_score_eval`'s exclusions.

Registration reads only these two small files, never data, so it works offline; the sizes
here are why mixing rates are known without reading a dataset.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import pathlib
from typing import Optional

import yaml

from t0_jax import resources

CATALOGUE_FILE = "datasets.csv"
SELECTION_FILE = "selection.yaml"
TRAIN_ROLES = ("BASE", "GPT_EVAL", "SGLUE")
EVAL_ROLES = ("BASE", "BIAS_FAIRNESS")
_COLUMNS = ("HF_name", "subset", "task_by_convention", "do_train", "do_eval", "train_size")


class CatalogueError(ValueError):
    """A catalogue or selection file that cannot be used (names the file and row)."""


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """One catalogue row."""

    hf_name: str
    subset: Optional[str]
    cluster: str
    do_train: Optional[str]
    do_eval: Optional[str]
    train_size: Optional[int]
    split_sizes: tuple = ()  # ((split, examples), ...): the dataset card's counts, when known

    @property
    def key(self) -> tuple:
        return (self.hf_name, self.subset)

    @property
    def display(self) -> str:
        """`hf_name` or `hf_name/subset`: how selection.yaml and messages name a dataset."""
        return display_name(self.hf_name, self.subset)

    def expected_size(self, split: str) -> Optional[int]:
        """How many examples `split` has according to the catalogue (None: not recorded)."""
        return dict(self.split_sizes).get(split)


@dataclasses.dataclass(frozen=True)
class Selection:
    """The parsed selection.yaml (dataset keys are (hf_name, subset) tuples)."""

    rounds: dict  # {hf_name: {round: {task split: dataset split}}}
    held_out_split: str
    held_out: tuple
    train_score_eval_split: str
    train_score_eval_exclude_datasets: frozenset
    train_score_eval_exclude_tasks: frozenset


def display_name(hf_name: str, subset: Optional[str]) -> str:
    return f"{hf_name}/{subset}" if subset else hf_name


def catalogue_path() -> pathlib.Path:
    return resources.tasks_dir() / CATALOGUE_FILE


def selection_path() -> pathlib.Path:
    return resources.tasks_dir() / SELECTION_FILE


@functools.lru_cache(maxsize=None)
def load_catalogue(path=None) -> tuple:
    """Every catalogue row, in file order (lines starting with `#` are comments)."""
    path = pathlib.Path(path) if path else catalogue_path()
    with open(path, encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise CatalogueError(f"{path} lacks the column(s) {', '.join(missing)}; its header must "
                             f"be: {','.join(_COLUMNS)}.")
    entries, seen = [], set()
    for row_number, row in enumerate(reader, start=2):
        entry = _entry_from_row(row, f"{path} data row {row_number - 1}")
        if entry.key in seen:
            raise CatalogueError(f"{path} lists dataset '{entry.display}' twice; keep one row.")
        seen.add(entry.key)
        entries.append(entry)
    return tuple(entries)


def _entry_from_row(row: dict, where: str) -> DatasetEntry:
    do_train, do_eval = row["do_train"].strip() or None, row["do_eval"].strip() or None
    if do_train and do_train not in TRAIN_ROLES:
        raise CatalogueError(f"{where}: do_train '{do_train}' is not one of {TRAIN_ROLES}.")
    if do_eval and do_eval not in EVAL_ROLES:
        raise CatalogueError(f"{where}: do_eval '{do_eval}' is not one of {EVAL_ROLES}.")
    size = row["train_size"].strip()
    if size and not size.isdigit():
        raise CatalogueError(f"{where}: train_size '{size}' is not a whole number.")
    if do_train and not size:
        raise CatalogueError(f"{where}: a training dataset needs a train_size (the mixture cap "
                             "is computed from it).")
    return DatasetEntry(hf_name=row["HF_name"].strip(), subset=row["subset"].strip() or None,
                        cluster=row["task_by_convention"].strip(), do_train=do_train,
                        do_eval=do_eval, train_size=int(size) if size else None,
                        split_sizes=_split_sizes(row.get("split_sizes") or "", where))


def _split_sizes(text: str, where: str) -> tuple:
    """`train:2490;validation:277` -> (("train", 2490), ("validation", 277))."""
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        split, _, count = item.partition(":")
        if not split.strip() or not count.strip().isdigit():
            raise CatalogueError(f"{where}: split_sizes item '{item}' is not `split:count`.")
        sizes.append((split.strip(), int(count)))
    return tuple(sizes)


def find_entry(hf_name: str, subset: Optional[str] = None) -> Optional[DatasetEntry]:
    for entry in load_catalogue():
        if entry.key == (hf_name, subset or None):
            return entry
    return None


def train_datasets(*roles: str) -> list:
    """Catalogue rows whose do_train is one of `roles`, in file order."""
    unknown = set(roles) - set(TRAIN_ROLES)
    if unknown:
        raise ValueError(f"unknown training role(s) {sorted(unknown)}; use {TRAIN_ROLES}.")
    return [entry for entry in load_catalogue() if entry.do_train in roles]


def eval_datasets(role: str) -> list:
    """Catalogue rows whose do_eval is `role`, in file order."""
    if role not in EVAL_ROLES:
        raise ValueError(f"unknown evaluation role '{role}'; use {EVAL_ROLES}.")
    return [entry for entry in load_catalogue() if entry.do_eval == role]


@functools.lru_cache(maxsize=None)
def load_selection(path=None) -> Selection:
    """selection.yaml, checked against the catalogue (every dataset named must be a row)."""
    path = pathlib.Path(path) if path else selection_path()
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    try:
        held, score = document["held_out_eval"], document["train_score_eval"]
        selection = Selection(
            rounds={name: {r: dict(m) for r, m in rounds.items()}
                    for name, rounds in (document.get("rounds") or {}).items()},
            held_out_split=held["split"],
            held_out=tuple(_dataset_key(n, path) for n in held["datasets"]),
            train_score_eval_split=score["split"],
            train_score_eval_exclude_datasets=frozenset(
                _dataset_key(n, path) for n in score.get("exclude_datasets") or ()),
            train_score_eval_exclude_tasks=frozenset(score.get("exclude_tasks") or ()))
    except (KeyError, TypeError, AttributeError) as error:
        raise CatalogueError(f"{path} is missing or misshapes {error}; see tasks/README.md for "
                             "the expected keys (rounds, held_out_eval, train_score_eval).")
    _check_held_out(selection, path)
    return selection


def _dataset_key(name: str, path) -> tuple:
    """'hf_name' or 'hf_name/subset' -> the catalogue key (error when not a catalogue row)."""
    for entry in load_catalogue():
        if entry.display == name:
            return entry.key
    raise CatalogueError(f"{path} names dataset '{name}', which is not in {catalogue_path()}; "
                         "write it as `hf_name` or `hf_name/subset` exactly as the catalogue.")


def _check_held_out(selection: Selection, path) -> None:
    expected = {entry.key for entry in eval_datasets("BASE")}
    if set(selection.held_out) != expected:
        extra = sorted(map(str, set(selection.held_out) - expected))
        lacking = sorted(map(str, expected - set(selection.held_out)))
        raise CatalogueError(f"{path}: held_out_eval.datasets must equal the do_eval=BASE rows of "
                             f"{catalogue_path()} (extra: {extra}; missing: {lacking}).")
