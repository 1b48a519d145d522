"""Where each catalogue dataset lives on the Hugging Face Hub today (`tasks/hub_sources.yaml`).

The templates were written in 2021 against names such as `super_glue`/`rte` or `anli` and the
loading scripts behind them. `datasets` 4+ no longer runs loading scripts, and the held-out
datasets moved (`aps/super_glue`, `facebook/anli`, `allenai/winogrande`, `Rowan/hellaswag`), so
a 2021 name no longer loads. The table maps each catalogue row to a repository, a revision
(`main`, or `refs/convert/parquet`: the Hub's automatic parquet conversion of a script-only
repository), the parquet files of each split, and the renames/casts that give back the 2021
fields. Every row cites where it was read; rows not confirmed are `verified: false`.

How a split is fetched (`load_split`), online and offline alike:
    1. `huggingface_hub.snapshot_download(repo, repo_type="dataset", revision=...,
       allow_patterns=<the split's files>)`: online it resolves the revision to a commit and
       downloads only those files into the Hub cache (`$HF_HUB_CACHE`, default
       `~/.cache/huggingface/hub`); with `HF_HUB_OFFLINE=1` it reads `refs/<revision>` and
       returns `snapshots/<commit>/` from that cache, so a pre-filled cache works offline.
    2. `datasets.load_dataset("parquet", data_files={split: files})`: the pinned `datasets`
       reads the parquet files (and their embedded features, e.g. ClassLabel labels as ints).
`load_dataset(repo, config, revision=...)` is not used because, offline, it consults only the
prepared-Arrow cache, never the Hub cache (datasets 5.2 `load.dataset_module_factory`).

Manual datasets (StoryCloze) have `manual: csv` and `csv_files`: `csv_rows` converts the
user's files with the row's renames and casts.
"""
from __future__ import annotations

import csv
import dataclasses
import fnmatch
import functools
import io
import os
import pathlib
from typing import Iterator, Optional

import yaml

from t0_jax import resources, storage
from t0_jax.data import catalogue

TABLE_FILE = "hub_sources.yaml"
CASTS = {"int": int, "str": str, "float": float, "bool": bool}
MANUAL_KINDS = ("csv", "kaggle")
_REQUIRED = ("repo", "splits", "cite", "verified")


class HubTableError(catalogue.CatalogueError):
    """tasks/hub_sources.yaml cannot be used (names the file and the row)."""


class HubFetchError(RuntimeError):
    """A split could not be fetched; the message names the repository, revision and files."""


@dataclasses.dataclass(frozen=True)
class HubSource:
    """One table row: where catalogue dataset `key` = (hf_name, subset) lives today."""

    key: tuple
    repo: str
    revision: Optional[str]
    files: Optional[str]  # glob of one split's parquet files; `{split}` is the Hub split name
    splits: tuple  # the mirror's split names
    hub_splits: tuple  # ((mirror split, Hub split), ...) where they differ
    rename: tuple  # ((Hub field, 2021 field), ...)
    cast: tuple  # ((2021 field, type name), ...)
    manual: Optional[str]
    csv_files: tuple  # ((mirror split, file name), ...) for manual: csv
    citations: tuple  # the cited sources, in full
    verified: bool

    @property
    def display(self) -> str:
        return catalogue.display_name(*self.key)

    @property
    def where(self) -> str:
        """`repo@revision` for messages."""
        return f"{self.repo}@{self.revision}" if self.revision else self.repo

    def hub_split(self, split: str) -> str:
        return dict(self.hub_splits).get(split, split)

    def pattern(self, split: str) -> str:
        """The repository-relative glob of `split`'s parquet files."""
        if not self.files:
            raise HubFetchError(f"{self.display} is not fetched from the Hub ({self.manual} "
                                "download); see tasks/hub_sources.yaml")
        return self.files.format(split=self.hub_split(split))

    def convert(self, row: dict) -> dict:
        """A Hub row as the 2021 dataset gave it: fields renamed, then cast."""
        renames = dict(self.rename)
        out = {renames.get(name, name): value for name, value in row.items()}
        for field, type_name in self.cast:
            if field in out and out[field] is not None:
                out[field] = CASTS[type_name](out[field])
        return out


def table_path() -> pathlib.Path:
    return resources.tasks_dir() / TABLE_FILE


@functools.lru_cache(maxsize=None)
def load_table(path=None) -> dict:
    """{(hf_name, subset): HubSource} for every row of the table (checked as it is read)."""
    path = pathlib.Path(path) if path else table_path()
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    citations = document.get("citations") or {}
    rows = document.get("datasets")
    if not isinstance(rows, dict):
        raise HubTableError(f"{path} has no `datasets:` mapping; see the comment at its top.")
    table = {}
    for name, row in rows.items():
        source = _source_from_row(str(name), row, citations, f"{path} row '{name}'")
        table[source.key] = source
    return table


def _source_from_row(name: str, row, citations: dict, where: str) -> HubSource:
    if not isinstance(row, dict):
        raise HubTableError(f"{where} is not a mapping.")
    missing = [key for key in _REQUIRED if key not in row]
    manual = row.get("manual")
    if manual is None:
        missing += [key for key in ("revision", "files") if key not in row]
    elif manual not in MANUAL_KINDS:
        raise HubTableError(f"{where}: manual '{manual}' is not one of {MANUAL_KINDS}.")
    if missing:
        raise HubTableError(f"{where} lacks {', '.join(missing)}.")
    if manual is None and "{split}" not in str(row["files"]):
        raise HubTableError(f"{where}: files '{row['files']}' must contain {{split}}.")
    unknown_cites = [c for c in row["cite"] if c not in citations]
    if unknown_cites:
        raise HubTableError(f"{where} cites {unknown_cites}, not under `citations:`.")
    bad_casts = {f: t for f, t in (row.get("cast") or {}).items() if t not in CASTS}
    if bad_casts:
        raise HubTableError(f"{where}: cast {bad_casts}: use one of {sorted(CASTS)}.")
    hf_name, _, subset = name.partition("/")
    return HubSource(
        key=(hf_name, subset or None), repo=str(row["repo"]), revision=row.get("revision"),
        files=row.get("files"), splits=tuple(str(s) for s in row["splits"]),
        hub_splits=tuple((row.get("hub_splits") or {}).items()),
        rename=tuple((row.get("rename") or {}).items()),
        cast=tuple((row.get("cast") or {}).items()), manual=manual,
        csv_files=tuple((row.get("csv_files") or {}).items()),
        citations=tuple(citations[c] for c in row["cite"]), verified=bool(row["verified"]))


def source_for(hf_name: str, subset: Optional[str] = None) -> Optional[HubSource]:
    """The table row of a catalogue dataset, None when the table has none."""
    return load_table().get((hf_name, subset or None))


def missing_rows() -> list:
    """Catalogue datasets without a table row (a test keeps this empty)."""
    table = load_table()
    return [entry.display for entry in catalogue.load_catalogue() if entry.key not in table]


# ----------------------------------------------------------------------------- fetching


@dataclasses.dataclass(frozen=True)
class FetchedSplit:
    """A split read from the Hub: the `datasets.Dataset` and where exactly it came from."""

    dataset: object  # datasets.Dataset (memory-mapped Arrow)
    source: HubSource
    split: str
    commit: str  # the commit `revision` resolved to
    files: tuple  # repository-relative paths of the parquet files read

    @property
    def provenance(self) -> dict:
        return {"repo": self.source.repo, "revision": self.source.revision,
                "commit": self.commit, "files": list(self.files),
                "verified_row": self.source.verified}


def load_split(source: HubSource, split: str) -> FetchedSplit:
    """Fetch (or, offline, find in the Hub cache) one split and open it with `datasets`."""
    if split not in source.splits:
        raise HubFetchError(f"{source.display} has no split '{split}' in tasks/hub_sources.yaml "
                            f"(it lists {', '.join(source.splits)}).")
    pattern = source.pattern(split)
    from huggingface_hub import snapshot_download  # noqa: PLC0415 - heavy, and optional at import

    try:
        folder = snapshot_download(source.repo, repo_type="dataset", revision=source.revision,
                                   allow_patterns=[pattern])
    except Exception as error:  # offline and not cached, unknown repo/revision, network...
        raise HubFetchError(f"{source.where} files {pattern}: {type(error).__name__}: "
                            f"{_first_line(error)}") from error
    files = sorted(_matching(folder, pattern))
    if not files:
        from huggingface_hub import constants  # noqa: PLC0415

        why = ("not in the local Hub cache and HF_HUB_OFFLINE is set: run once with network"
               if constants.is_offline_mode() else
               f"the repository layout changed: fix the row '{source.display}' in "
               "tasks/hub_sources.yaml")
        raise HubFetchError(f"{source.where} has no files matching {pattern} (snapshot "
                            f"{folder}): {why}")
    import datasets  # noqa: PLC0415

    dataset = datasets.load_dataset(
        "parquet", data_files={_split_key(split): [os.path.join(folder, f) for f in files]},
        split=_split_key(split))
    return FetchedSplit(dataset, source, split, os.path.basename(folder), tuple(files))


def _matching(folder: str, pattern: str) -> list:
    """Repository-relative paths under `folder` that match `pattern` (fnmatch, like the Hub's
    allow_patterns: `*` also crosses `/`)."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if fnmatch.fnmatch(rel, pattern):
                found.append(rel)
    return found


def _split_key(split: str) -> str:
    """`datasets` wants split names of word characters; ours already are (dev_r1, validation)."""
    return split.replace("-", "_")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def iter_rows(fetched: FetchedSplit, batch_size: int = 1000) -> Iterator[dict]:
    """Every example of a fetched split, converted to the 2021 fields, in order (read in
    batches: `datasets` formats a batch as {column: [values]}, the same values per row)."""
    convert = fetched.source.convert
    for batch in fetched.dataset.iter(batch_size=batch_size):
        names = list(batch)
        for values in zip(*(batch[name] for name in names)):
            yield convert(dict(zip(names, values)))


# ----------------------------------------------------------------------------- manual CSV


def csv_file(source: HubSource, split: str, folder: str) -> str:
    """The user's CSV file of `split` under `folder` (the exact name in the table)."""
    names = dict(source.csv_files)
    if split not in names:
        raise HubFetchError(f"{source.display} has no CSV file for split '{split}' in "
                            f"tasks/hub_sources.yaml (it has {', '.join(names) or 'none'}).")
    path = storage.join(folder, names[split])
    if not storage.exists(path):
        raise HubFetchError(f"{source.display} split '{split}': {path} not found; it is "
                            f"distributed by manual download ({source.citations[-1].split()[0]})"
                            f", put '{names[split]}' in that folder")
    return path


def csv_rows(source: HubSource, split: str, folder: str) -> Iterator[dict]:
    """The rows of the user's CSV file, converted like Hub rows (renames, then casts)."""
    text = storage.read_text(csv_file(source, split, folder), encoding="utf-8-sig")
    for row in csv.DictReader(io.StringIO(text, newline="")):
        yield source.convert(dict(row))
