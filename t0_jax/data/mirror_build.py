"""Build the JSONL mirror (`DATA_DIR/<hf_name>[/<subset>]/<split>.jsonl`) from the Hub as it is now.

What `t0-data` runs. For each (dataset, split) of a plan:
    * skipped when its completion marker `<split>.jsonl.complete` exists (`storage.is_complete`):
      a finished split is never fetched again, so an interrupted run resumes where it stopped;
    * otherwise fetched through the table (`hub.load_split`; StoryCloze from the user's CSV
      files), written row by row to `<split>.jsonl` through `t0_jax.storage` (so DATA_DIR may be
      `gs://...`), counted, checked against the catalogue's `split_sizes`, and only then marked
      complete: the marker is written LAST and records the count and the exact provenance
      (repository, revision, resolved commit, files). A split without its marker is redone.
A dataset that fails is reported with the reason and the others still land.

Splits: a plan names task splits (`validation`, `train`, ...); datasets split into rounds
(ANLI, `tasks/selection.yaml`) map each task split to their own (`validation` -> `dev_r1`,
`dev_r2`, `dev_r3`), which are the mirror's file names.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Callable, Iterable, Iterator, Optional

from t0_jax import storage
from t0_jax.data import catalogue, hub

MARKER_SUFFIX = ".jsonl.complete"


@dataclasses.dataclass(frozen=True)
class SplitResult:
    """What happened to one (dataset, split)."""

    dataset: str  # `hf_name` or `hf_name/subset`
    split: str  # the mirror's split name
    status: str  # written | skipped (already complete) | failed | present | missing
    examples: Optional[int] = None
    expected: Optional[int] = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("written", "skipped", "present")


def dataset_folder(data_dir: str, hf_name: str, subset: Optional[str]) -> str:
    return storage.join(data_dir, *hf_name.split("/"), *([subset] if subset else []))


def marker_name(split: str) -> str:
    return f"{split}{MARKER_SUFFIX}"


def resolve_dataset(name: str) -> catalogue.DatasetEntry:
    """A catalogue row from `hf_name` or `hf_name/subset` (CatalogueError naming close rows)."""
    for entry in catalogue.load_catalogue():
        if entry.display == name:
            return entry
    close = [e.display for e in catalogue.load_catalogue() if name.split("/")[0] in e.display]
    raise catalogue.CatalogueError(
        f"dataset '{name}' is not in {catalogue.catalogue_path()}" +
        (f"; did you mean {', '.join(close[:6])}?" if close else
         "; write it as `hf_name` or `hf_name/subset` exactly as the catalogue does."))


def mirror_splits(entry: catalogue.DatasetEntry, task_splits: Iterable[str]) -> list:
    """The mirror's split names that `task_splits` read for this dataset (rounds expanded)."""
    rounds = catalogue.load_selection().rounds.get(entry.hf_name)
    out = []
    for split in task_splits:
        names = [mapping[split] for mapping in rounds.values() if split in mapping] \
            if rounds else [split]
        out += [name for name in names if name not in out]
    return out


def held_out_plan(task_splits: Optional[Iterable[str]] = None) -> dict:
    """{entry: [mirror splits]} for T0's held-out suite (default: the split it is scored on)."""
    selection = catalogue.load_selection()
    splits = list(task_splits or [selection.held_out_split])
    entries = [e for key in selection.held_out for e in catalogue.load_catalogue() if e.key == key]
    return {entry: mirror_splits(entry, splits) for entry in entries}


def dataset_plan(names: Iterable[str], task_splits: Iterable[str]) -> dict:
    splits = list(task_splits)
    return {entry: mirror_splits(entry, splits) for entry in map(resolve_dataset, names)}


# ----------------------------------------------------------------------------- building


def build(plan: dict, data_dir: str, story_cloze_dir: Optional[str] = None,
          force: bool = False, progress: bool = True,
          report: Callable[[SplitResult], None] = lambda result: None) -> list:
    """Fetch and write every (dataset, split) of `plan`; one SplitResult each, in plan order."""
    results = []
    for entry, splits in plan.items():
        for split in splits:
            result = _build_split(entry, split, data_dir, story_cloze_dir, force, progress)
            report(result)
            results.append(result)
    return results


def _build_split(entry, split, data_dir, story_cloze_dir, force, progress) -> SplitResult:
    folder = dataset_folder(data_dir, entry.hf_name, entry.subset)
    expected = entry.expected_size(split)
    if not force and storage.is_complete(folder, marker_name(split)):
        marker = storage.read_marker(folder, marker_name(split)) or {}
        return SplitResult(entry.display, split, "skipped", marker.get("examples"), expected)
    try:
        rows, provenance = _rows(entry, split, story_cloze_dir)
        path = storage.join(folder, f"{split}.jsonl")
        count = write_jsonl(path, rows, desc=f"{entry.display} {split}", progress=progress)
    except Exception as error:  # noqa: BLE001 - one dataset's failure must not stop the rest
        return SplitResult(entry.display, split, "failed", None, expected,
                           f"{type(error).__name__}: {error}")
    if expected is not None and count != expected:
        return SplitResult(entry.display, split, "failed", count, expected,
                           f"{count} examples written, the catalogue expects {expected} "
                           f"(tasks/datasets.csv split_sizes): the source changed; {path} is "
                           "left unmarked, so the next run fetches it again")
    storage.mark_complete(folder, marker_name(split), {"examples": count, **provenance})
    return SplitResult(entry.display, split, "written", count, expected)


def _rows(entry, split, story_cloze_dir) -> tuple:
    """(iterator of 2021-field rows, provenance dict) for one split."""
    source = hub.source_for(entry.hf_name, entry.subset)
    if source is None:
        raise hub.HubFetchError(f"no row for {entry.display} in {hub.table_path()}")
    if source.manual == "csv":
        if not story_cloze_dir:
            raise hub.HubFetchError(
                f"{entry.display} is distributed by manual download only: pass "
                f"--story_cloze_dir with the folder holding {dict(source.csv_files).get(split)!r}")
        path = hub.csv_file(source, split, story_cloze_dir)
        return hub.csv_rows(source, split, story_cloze_dir), {"csv": path}
    if source.manual:
        raise hub.HubFetchError(f"{entry.display} is a {source.manual} download; t0-data cannot "
                                "fetch it (see tasks/hub_sources.yaml)")
    fetched = hub.load_split(source, split)
    return hub.iter_rows(fetched), fetched.provenance


def write_jsonl(path: str, rows: Iterator[dict], desc: str = "", progress: bool = True) -> int:
    """Write one JSON object per line (UTF-8) through the storage layer; returns the count."""
    from tqdm import tqdm  # noqa: PLC0415

    count = 0
    with storage.open(path, "wb") as handle:
        for row in tqdm(rows, desc=desc, unit=" ex", disable=not progress, leave=False):
            handle.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
            count += 1
    return count


# ----------------------------------------------------------------------------- checking


def check(plan: dict, data_dir: str) -> list:
    """Count the lines of every planned split already in the mirror, against the catalogue."""
    results = []
    for entry, splits in plan.items():
        for split in splits:
            path = storage.join(dataset_folder(data_dir, entry.hf_name, entry.subset),
                                f"{split}.jsonl")
            expected = entry.expected_size(split)
            if not storage.exists(path):
                results.append(SplitResult(entry.display, split, "missing", None, expected,
                                           f"{path} not found"))
                continue
            with storage.open(path, "rb") as handle:
                count = sum(1 for line in handle if line.strip())
            bad = expected is not None and count != expected
            results.append(SplitResult(entry.display, split, "failed" if bad else "present",
                                       count, expected,
                                       f"{count} examples, expected {expected}" if bad else ""))
    return results


def summary_table(results: list) -> str:
    """A fixed-width table: dataset, split, status, examples, expected, reason."""
    header = ("dataset", "split", "status", "examples", "expected")
    rows = [(r.dataset, r.split, r.status, _num(r.examples), _num(r.expected)) for r in results]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)).rstrip()]
    for result, row in zip(results, rows):
        line = "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()
        lines.append(line + (f"  {result.reason}" if result.reason else ""))
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:,}"
